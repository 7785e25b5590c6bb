"""Registry formats and the push plan's pure parts: hosts, challenges, manifests, indexes."""
from __future__ import annotations

import base64
import json

import pytest

from recipes import push, registry
from recipes.errors import UserError
from recipes.registry import Entry, Platform

pytestmark = pytest.mark.unit

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


@pytest.mark.parametrize("host,expected", [
    ("127.0.0.1:5000", "127.0.0.1:5000"), ("ghcr.io", "ghcr.io"),
    ("registry.example.com:443/", "registry.example.com:443"),
    ("index.docker.io", "docker.io"), ("[::1]:5000", "[::1]:5000"),
])
def test_registry_hosts_are_accepted_as_docker_spells_them(host: str, expected: str) -> None:
    assert registry.check_host(host) == expected


@pytest.mark.parametrize("host", ["", "http://x", "host/path", "a b", "host:port"])
def test_a_url_or_path_as_registry_is_refused_with_the_form_to_use(host: str) -> None:
    with pytest.raises(UserError) as err:
        registry.check_host(host)
    assert "--registry 127.0.0.1:5000" in err.value.line()


@pytest.mark.parametrize("host,url", [
    ("127.0.0.1:5000", "http://127.0.0.1:5000"), ("localhost:5000", "http://localhost:5000"),
    ("[::1]:5000", "http://[::1]:5000"), ("ghcr.io", "https://ghcr.io"),
    ("10.0.0.1:5000", "https://10.0.0.1:5000"), ("docker.io", "https://registry-1.docker.io"),
])
def test_only_loopback_registries_are_spoken_to_in_plain_http(host: str, url: str) -> None:
    assert registry.base_url(host) == url


def test_a_bearer_challenge_gives_realm_service_and_scope() -> None:
    scheme, params = registry.parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg",
                      "scope": "repository:a/b:pull"}
    assert registry.parse_challenge('Basic realm="Registry Realm"')[0] == "basic"


def test_credentials_come_from_either_spelling_the_docker_sdk_returns() -> None:
    encoded = base64.b64encode(b"lk:s3:cret").decode()
    assert registry.credentials({"auth": encoded}) == ("lk", "s3:cret")
    assert registry.credentials({"Username": "u", "Password": "p"}) == ("u", "p")
    assert registry.credentials({"username": "u", "password": "p"}) == ("u", "p")
    header = registry.auth_header({"Username": "u", "Password": "p"})
    assert header == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert registry.auth_header(None) == {}


def test_a_manifest_is_oci_and_its_bytes_and_digest_are_stable() -> None:
    doc = registry.manifest("sha256:" + "c" * 64, 123, [("sha256:" + "a" * 64, 10)])
    assert doc["mediaType"] == registry.OCI_MANIFEST
    assert doc["config"]["mediaType"] == registry.OCI_CONFIG
    assert doc["layers"][0]["mediaType"] == registry.OCI_LAYER_GZIP
    body = registry.canonical(doc)
    assert body == registry.canonical(json.loads(body))
    assert registry.sha256(body).startswith("sha256:") and b" " not in body


def test_an_index_is_ordered_by_platform_so_equal_sets_give_equal_bytes() -> None:
    a, b = Entry("sha256:" + "1" * 64, 10, AMD64), Entry("sha256:" + "2" * 64, 20, ARM64)
    one, two = registry.index([a, b]), registry.index([b, a])
    assert registry.canonical(one) == registry.canonical(two)
    assert one["mediaType"] == registry.OCI_INDEX
    assert [m["platform"] for m in one["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    assert registry.index_entries(one) == [a, b]


def test_merging_replaces_our_platforms_and_keeps_the_others() -> None:
    old_amd = Entry("sha256:" + "1" * 64, 10, AMD64)
    old_arm = Entry("sha256:" + "2" * 64, 20, Platform("linux", "arm64"))
    new_arm = Entry("sha256:" + "3" * 64, 30, ARM64)
    assert registry.merged([old_amd, old_arm], [new_arm]) == [old_amd, new_arm]


def test_arm64_with_and_without_variant_is_one_platform() -> None:
    assert Platform("linux", "arm64").same(ARM64)
    assert not ARM64.same(Platform("linux", "arm64", "v7"))
    assert not AMD64.same(ARM64)
    assert str(ARM64) == "linux/arm64/v8"
    assert Platform.of({"Os": "linux", "Architecture": "arm64", "Variant": "v8"}) == ARM64


def _image(arch: str, platform: Platform, group: str = "6.12.54", digest: str = "h1") -> push.Image:
    return push.Image(f"org/kernel:6.12.54-{arch}", f"sha256:{arch}", platform, "org/kernel",
                      [f"6.12.54-{digest}-{arch}", f"6.12.54-{arch}"], group, digest, arch, [])


def test_the_index_hash_names_exactly_the_set_of_builds() -> None:
    a, b = _image("amd64", AMD64), _image("arm64", ARM64, digest="h2")
    assert push.index_hash([a, b]) == push.index_hash([b, a])
    assert push.index_hash([a]) != push.index_hash([a, b])
    tags = push.index_tags("6.12.54", [a, b])
    assert tags[0] == "6.12.54" and tags[1].startswith("6.12.54-")
    long = push.index_tags("x" * 130, [a])[1]
    assert len(long) == 128 and long.endswith(push.index_hash([a]))


def test_an_index_holds_one_image_per_platform() -> None:
    a, twin = _image("amd64", AMD64), _image("arm64", AMD64)
    with pytest.raises(UserError) as err:
        push.groups([a, twin])
    assert "both linux/amd64 images" in err.value.line()
    cross = _image("arm64", AMD64, group="6.12.54-builder")
    cross.in_index = False
    assert list(push.groups([a, cross])) == [("org/kernel", "6.12.54")]


@pytest.mark.parametrize("release,version,ok", [
    ("6.12.54-linuxkit", "6.12.54", True), ("6.12.54-linuxkit", "6.12.54-linuxkit", True),
    ("6.12.54+", "6.12.54", True), ("6.12.540-linuxkit", "6.12.54", False),
    ("6.12.5-linuxkit", "6.12.54", False),
])
def test_a_kernel_version_names_its_releases_only(release: str, version: str, ok: bool) -> None:
    assert push.release_matches(release, version) is ok


def test_the_layer_cache_gives_a_manifest_only_when_it_knows_every_layer(tmp_path) -> None:
    config = b'{"architecture":"amd64"}'
    image = _image("amd64", AMD64)
    image.image_id, image.diff_ids = registry.sha256(config), ["sha256:d1", "sha256:d2"]
    cache = push.LayerCache(tmp_path)
    assert cache.known(image) is None
    cache.remember(image.image_id, config, {"sha256:d1": ("sha256:c1", 5)})
    assert cache.known(image) is None
    cache.remember(image.image_id, config, {"sha256:d2": ("sha256:c2", 7)})
    again = push.LayerCache(tmp_path)
    assert again.known(image) == (config, [("sha256:c1", 5), ("sha256:c2", 7)])
    (tmp_path / "configs" / image.image_id.replace(":", "-")).write_text("{}")
    assert again.known(image) is None  # a config that does not hash to the ID is not trusted


class FakeClient:
    """A registry's answers held in a dict: for the push plan's decisions only."""

    host = "127.0.0.1:5000"

    def __init__(self, held: dict[str, tuple[str, dict]]) -> None:
        self.held = {ref: registry.Remote(media, registry.canonical(doc),
                                          registry.sha256(registry.canonical(doc)))
                     for ref, (media, doc) in held.items()}
        for remote in list(self.held.values()):
            self.held[remote.digest] = remote

    def get_manifest(self, repo: str, reference: str, push: bool = False):
        return self.held.get(reference)


def _manifest_of(config: str) -> dict:
    return registry.manifest(config, 10, [("sha256:" + "a" * 64, 5)])


def _pusher(held: dict) -> push.Pusher:
    pusher = push.Pusher.__new__(push.Pusher)
    pusher.client = FakeClient(held)
    pusher.config_of = {}
    return pusher


def _prepared(arch: str, platform: Platform, config: bytes = b'{"c":1}') -> push.Prepared:
    image = _image(arch, platform)
    image.image_id = registry.sha256(config)
    return push.Prepared(image, config, [("sha256:" + "b" * 64, 7)])


def test_a_tag_with_the_same_image_compressed_otherwise_is_unchanged_and_kept():
    p = _prepared("amd64", AMD64)
    theirs = registry.manifest(p.image.image_id, len(p.config), [("sha256:" + "c" * 64, 9)])
    pusher = _pusher({"6.12.54-amd64": (registry.OCI_MANIFEST, theirs)})
    statuses = {o.ref.rsplit(":", 1)[1]: o.status for o in pusher.image_outcomes(p)}
    assert statuses == {"6.12.54-h1-amd64": "new", "6.12.54-amd64": "unchanged"}
    assert p.entry().digest == registry.sha256(registry.canonical(theirs))  # the index uses theirs


def test_a_tag_with_another_image_is_a_conflict():
    p = _prepared("amd64", AMD64)
    pusher = _pusher({"6.12.54-amd64": (registry.OCI_MANIFEST, _manifest_of("sha256:" + "9" * 64))})
    outcome = next(o for o in pusher.image_outcomes(p) if o.ref.endswith(":6.12.54-amd64"))
    assert outcome.status == "conflict" and outcome.current.startswith("sha256:")


def test_an_index_keeps_other_arches_refuses_another_image_of_ours_and_knows_no_change():
    arm = _prepared("arm64", ARM64)
    arm_theirs = _manifest_of("sha256:" + "8" * 64)
    amd_theirs = _manifest_of("sha256:" + "7" * 64)
    amd_entry = Entry(registry.sha256(registry.canonical(amd_theirs)), 100, AMD64)
    held = {"x-amd": (registry.OCI_MANIFEST, amd_theirs),
            "6.12.54": (registry.OCI_INDEX, registry.index([amd_entry]))}
    pusher = _pusher(held)
    ours = [arm.entry()]
    by_platform = {str(ARM64): arm.image.image_id}
    outcome, body = pusher.index_outcome("org/kernel", "6.12.54", ours, True, by_platform)
    assert outcome.status == "update"
    assert sorted(outcome.platforms) == ["linux/amd64", "linux/arm64/v8"]
    # The same push again: the index already says exactly that.
    pusher = _pusher({**held, "6.12.54": (registry.OCI_INDEX, json.loads(body))})
    again, _ = pusher.index_outcome("org/kernel", "6.12.54", ours, True, by_platform)
    assert again.status == "unchanged"
    # Another arm64 image already in the index: refused.
    arm_entry = Entry(registry.sha256(registry.canonical(arm_theirs)), 100, ARM64)
    pusher = _pusher({"y-arm": (registry.OCI_MANIFEST, arm_theirs),
                      "6.12.54": (registry.OCI_INDEX, registry.index([amd_entry, arm_entry]))})
    clash, _ = pusher.index_outcome("org/kernel", "6.12.54", ours, True, by_platform)
    assert clash.status == "conflict"
    # A plain image where the index should be: refused too.
    pusher = _pusher({"6.12.54": (registry.OCI_MANIFEST, arm_theirs)})
    assert pusher.index_outcome("org/kernel", "6.12.54", ours, True, by_platform)[0].status \
        == "conflict"


def _entry(image_id: str, tags: list[str], digest: str, created: int,
           kernel_image: str = "") -> dict:
    labels = {"org.lkbuild.kernel.hash": digest}
    if kernel_image:
        labels["org.lkbuild.module.kernel.image"] = kernel_image
    return {"Id": image_id, "RepoTags": tags, "Labels": labels, "Created": created}


def _found(entries: list[dict], tag: str = "6.12.118-amd64") -> list[push.Found]:
    return push.tagged_anywhere(entries, "kernel", tag)


def test_images_are_found_by_name_and_tag_under_any_org_and_registry() -> None:
    entries = [_entry("sha256:a", ["lkbuild/kernel:6.12.118-amd64", "b/kernel:other"], "h1", 1),
               _entry("sha256:b", ["localhost:5000/me/kernel:6.12.118-amd64"], "h2", 2),
               _entry("sha256:c", ["lkbuild/kernel:6.12.118-builder-amd64"], "h1", 3),
               _entry("sha256:d", ["lkbuild/notkernel:6.12.118-amd64"], "h3", 4)]
    found = _found(entries)
    assert [(f.ref, f.org) for f in found] == [("lkbuild/kernel:6.12.118-amd64", "lkbuild"),
                                                ("localhost:5000/me/kernel:6.12.118-amd64", "me")]


def test_one_hash_under_other_orgs_is_pushed_and_of_its_builds_the_newest() -> None:
    entries = [_entry("sha256:old", ["a/kernel:6.12.118-amd64"], "h1", 10),
               _entry("sha256:new", ["b/kernel:6.12.118-amd64"], "h1", 20)]
    picked = push.choose(_found(entries), "org.lkbuild.kernel.hash", "kernel:6.12.118-amd64",
                         "myorg")
    assert picked is not None and picked.entry["Id"] == "sha256:new"
    assert push.choose([], "org.lkbuild.kernel.hash", "x", "myorg") is None


def test_builds_of_several_hashes_go_by_the_current_inputs_or_are_refused_listed() -> None:
    entries = [_entry("sha256:x", ["a/kernel:6.12.118-amd64"], "h1", 10),
               _entry("sha256:y", ["b/kernel:6.12.118-amd64"], "h2", 20)]
    label = "org.lkbuild.kernel.hash"
    picked = push.choose(_found(entries), label, "kernel:6.12.118-amd64", "myorg",
                         lambda f: f.labels.get(label) == "h1")
    assert picked is not None and picked.entry["Id"] == "sha256:x"
    with pytest.raises(UserError) as refused:
        push.choose(_found(entries), label, "kernel:6.12.118-amd64", "myorg")
    message = refused.value.message
    assert "2 local builds of kernel:6.12.118-amd64 could go under myorg" in message
    assert "a/kernel:6.12.118-amd64 (h1, built " in message
    assert "b/kernel:6.12.118-amd64 (h2, built " in message
    assert "--from-org" in refused.value.hint


def test_a_module_is_preferred_when_built_against_the_current_kernel() -> None:
    found = push.Found("a/hello:1-6.12.118-linuxkit-amd64", _entry(
        "sha256:m", [], "m1", 1, kernel_image="lkbuild/kernel:6.12.118-0123456789abcdef-amd64"))
    assert push.built_against("0123456789abcdef", found)
    assert not push.built_against("fedcba9876543210", found)
    assert not push.built_against(None, found)


def test_local_candidates_take_the_registry_prefix_first_and_any_org() -> None:
    from recipes.settings import Settings

    s = Settings(flags={"org": "myorg", "registry": "localhost:5000"})
    assert push.local_candidates(s, "kernel") == ["localhost:5000/myorg/kernel", "myorg/kernel"]
    assert push.local_candidates(s, "kernel", "lkbuild") == ["localhost:5000/lkbuild/kernel",
                                                             "lkbuild/kernel"]
