from dataclasses import dataclass

import pytest

from recipes import arch, kernel
from recipes.errors import UserError
from recipes.settings import Settings

pytestmark = pytest.mark.unit

ARM = arch.resolve("arm64")


def test_tags_follow_linuxkit_with_the_kind_after_the_version():
    assert kernel.tag("6.12.54", "abc", ARM) == "6.12.54-abc-arm64"
    assert kernel.tag("6.12.54", None, ARM) == "6.12.54-arm64"
    assert kernel.tag("6.12.54", "abc", ARM, debug=True) == "6.12.54-dbg-abc-arm64"
    assert kernel.tag("6.12.54", "abc", ARM, builder=True) == "6.12.54-builder-abc-arm64"
    assert kernel.tag("6.12.54", None, None) == "6.12.54"


def test_references_carry_the_registry_only_when_one_is_set():
    s = Settings(env={"LKBUILD_ORG": "me"}, files=[])
    assert kernel.ref(s, "6.12.54", None, ARM) == "me/kernel:6.12.54-arm64"
    s = Settings(env={"LKBUILD_ORG": "me", "LKBUILD_REGISTRY": "127.0.0.1:5000/"}, files=[])
    assert kernel.ref(s, "6.12.54", None, ARM) == "127.0.0.1:5000/me/kernel:6.12.54-arm64"


def test_cache_scope_keeps_user_names_safe_for_paths():
    assert kernel.cache_scope("alice") == "alice"
    assert kernel.cache_scope("DOMAIN\\bob smith") == "DOMAIN_bob_smith"
    assert kernel.cache_scope("") == "lkbuild"


@dataclass
class FakeEngine:
    cpus: int
    memory: int

    def describe(self) -> str:
        return "context test"


GiB = 2 ** 30


def test_jobs_default_to_what_the_engine_affords():
    assert kernel.choose_jobs(FakeEngine(8, int(7.75 * GiB)), 0) <= 3
    assert kernel.choose_jobs(FakeEngine(2, 24 * GiB), 0) == 2


def test_too_many_jobs_for_the_memory_are_refused_with_the_numbers():
    with pytest.raises(UserError) as info:
        kernel.choose_jobs(FakeEngine(8, int(7.75 * GiB)), 8)
    line = info.value.line()
    assert "-j8 needs about 14.0 GiB" in line and "7.8 GiB" in line and "--jobs 3" in line
    assert kernel.choose_jobs(FakeEngine(8, int(7.75 * GiB)), 3) == 3


class _Steps:
    """Records the BuildKit steps make_images asks for, writing what each one outputs."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def run(self, what: str, **kw) -> None:
        self.calls.append({"what": what, **kw})
        out = kw.get("local_output")
        if kw["target"] == "config":
            out.mkdir(parents=True)
            for name in ("requested", "base", "config"):
                (out / name).write_text("CONFIG_X=y\n")
        elif kw["target"] == "facts":
            out.mkdir(parents=True)
            (out / "release").write_text("6.12.54-linuxkit\n")


@pytest.mark.parametrize("force", [False, True])
def test_force_reruns_the_compile_once_for_the_facts_and_both_images(force):
    """The images are built from the compile step too: with a nonce of their own (or none)
    they would take another compile from the layer cache than the one the facts came from."""
    from types import SimpleNamespace as NS

    request = NS(force=force, profile=None, builder_image=True, native=False, version="6.12.54",
                 strict_config=False)
    p = NS(request=request, arch=ARM, source=NS(sha256="s"), build_image="b", digest="d",
           refs=["o/kernel:6.12.54-arm64"], builder_refs=["o/kernel:6.12.54-builder-arm64"],
           inputs=NS(config=None, series=NS(name="6.12.x")))
    steps = _Steps()
    facts, finality = kernel.make_images(steps, p, "linux/amd64")
    assert finality is not None and finality.final
    assert facts["release"] == "6.12.54-linuxkit"
    assert [c["target"] for c in steps.calls] == ["config", "facts", "kernel", "builder"]
    nonces = {c.get("rerun", "") for c in steps.calls[1:]}
    assert len(nonces) == 1 and (nonces.pop() != "") == force
    assert steps.calls[0].get("rerun", "") == "", "the config step is never forced"


def _key_plan(version="6.12.54", variant="", debug=False):
    from types import SimpleNamespace as NS

    return NS(request=NS(arch=ARM, variant=variant, debug=debug, native=False, version=version),
              inputs=NS(series=NS(name="6.12.x")))


def test_the_progress_record_is_kept_per_series_arch_flavour_and_staged_config(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "config" / "fragments").mkdir(parents=True)
    (ctx / "config" / "config").write_text("CONFIG_X=y\n")
    key = kernel.progress_key(_key_plan(), ctx)
    assert key.startswith("6.12.x-arm64-")
    assert kernel.progress_key(_key_plan(version="6.12.60"), ctx) == key  # a point release
    assert kernel.progress_key(_key_plan(debug=True), ctx).startswith("6.12.x-arm64-dbg-")
    (ctx / "config" / "fragments" / "01-a.config").write_text("CONFIG_Y=y\n")
    assert kernel.progress_key(_key_plan(), ctx) != key


def test_a_built_kernels_json_carries_its_summary():
    from recipes import progress

    summary = progress.Summary(100.0, {"compile": 90.0, "images": 10.0}, 5, 7, 80, False)
    r = kernel.Result([], "id", "r", "v", "d", "arm64", "6.12.54", 100.0, 2, False,
                      summary=summary)
    assert r.as_json()["summary"]["steps"][0] == {"step": "compile", "seconds": 90.0,
                                                  "share": 90}
    skipped = kernel.Result([], "id", "r", "v", "d", "arm64", "6.12.54", 0.1, 0, True)
    assert skipped.as_json()["summary"] is None
