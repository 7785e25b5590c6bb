"""Which engine lkbuild talks to: resolution from env and $DOCKER_CONFIG, without an engine."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from recipes import engine
from recipes.engine import DEFAULT_HOST, Endpoint, resolve
from recipes.errors import InfraError, UserError

pytestmark = pytest.mark.unit


def add_context(config: Path, name: str, host: str, skip_verify: bool = False) -> Path:
    """A context stored the way the docker CLI stores it."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest / "meta.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {
        "docker": {"Host": host, "SkipTLSVerify": skip_verify}}}))
    return config / "contexts" / "tls" / digest / "docker"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG and no DOCKER_HOST/DOCKER_CONTEXT from the outside."""
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    for var in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_nothing_set_means_the_default_socket(config: Path) -> None:
    ep = resolve()
    assert (ep.context, ep.host) == ("default", DEFAULT_HOST)


def test_context_dirs_are_the_sha256_of_the_name() -> None:
    assert engine.context_id("desktop-linux") == hashlib.sha256(b"desktop-linux").hexdigest()


def test_current_context_in_config_json_is_followed(config: Path) -> None:
    add_context(config, "desktop-linux", "unix:///Users/me/.docker/run/docker.sock")
    (config / "config.json").write_text(json.dumps({"currentContext": "desktop-linux"}))
    ep = resolve()
    assert ep.context == "desktop-linux"
    assert ep.host == "unix:///Users/me/.docker/run/docker.sock"
    assert "currentContext" in ep.source


def test_docker_context_env_beats_current_context(config: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    add_context(config, "desktop-linux", "unix:///a.sock")
    add_context(config, "colima", "unix:///b.sock")
    (config / "config.json").write_text(json.dumps({"currentContext": "desktop-linux"}))
    monkeypatch.setenv("DOCKER_CONTEXT", "colima")
    assert resolve().host == "unix:///b.sock"


def test_docker_host_beats_docker_context_and_current_context(
        config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_context(config, "colima", "unix:///b.sock")
    (config / "config.json").write_text(json.dumps({"currentContext": "colima"}))
    monkeypatch.setenv("DOCKER_CONTEXT", "colima")
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")
    ep = resolve()
    assert (ep.context, ep.host, ep.source) == ("default", "tcp://10.0.0.5:2375", "DOCKER_HOST")


def test_an_explicit_context_beats_docker_host(config: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    add_context(config, "desktop-linux", "unix:///a.sock")
    monkeypatch.setenv("DOCKER_HOST", "unix:///stale.sock")
    assert resolve("desktop-linux").host == "unix:///a.sock"


def test_explicit_default_is_the_standard_socket_even_with_docker_host(
        config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///stale.sock")
    assert resolve("default").host == DEFAULT_HOST


def test_a_missing_context_is_a_user_error_listing_the_existing_ones(config: Path) -> None:
    add_context(config, "desktop-linux", "unix:///a.sock")
    with pytest.raises(UserError) as err:
        resolve("nosuch")
    line = err.value.line()
    assert "'nosuch'" in line and "default" in line and "desktop-linux" in line
    assert "\n" not in line


def test_a_current_context_that_is_gone_names_where_it_came_from(config: Path) -> None:
    (config / "config.json").write_text(json.dumps({"currentContext": "removed"}))
    with pytest.raises(UserError) as err:
        resolve()
    assert "config.json" in err.value.message and "existing contexts: default" in err.value.hint


def test_broken_config_json_names_the_file(config: Path) -> None:
    (config / "config.json").write_text("{not json")
    with pytest.raises(UserError) as err:
        resolve()
    assert str(config / "config.json") in err.value.message


def test_broken_context_meta_is_ignored_when_listing(config: Path) -> None:
    bad = config / "contexts" / "meta" / "x" / "meta.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("garbage")
    add_context(config, "ok", "unix:///ok.sock")
    assert sorted(engine.list_contexts()) == ["default", "ok"]


def test_context_tls_material_is_picked_up(config: Path) -> None:
    tls = add_context(config, "remote", "tcp://host:2376", skip_verify=True)
    tls.mkdir(parents=True)
    for name in ("ca", "cert", "key"):
        (tls / f"{name}.pem").write_text("x")
    ep = resolve("remote")
    assert ep.tls is not None and ep.tls.cert == tls / "cert.pem" and ep.tls.verify is False


def test_docker_host_tls_follows_docker_tls_verify(config: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_text("x")
    monkeypatch.setenv("DOCKER_HOST", "tcp://host:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    ep = resolve()
    assert ep.tls is not None and ep.tls.ca == certs / "ca.pem" and ep.tls.verify


def test_missing_default_socket_hint_names_the_live_context(config: Path, tmp_path: Path) -> None:
    """The macOS case: `default` points at a socket that is not there, desktop-linux is alive."""
    live = tmp_path / "run" / "docker.sock"
    live.parent.mkdir()
    live.write_text("")
    add_context(config, "desktop-linux", f"unix://{live}")
    dead = Endpoint("default", f"unix://{tmp_path}/var/run/docker.sock", "built-in default")
    hint = engine.unreachable_hint(dead)
    assert "use --context desktop-linux or `docker context use desktop-linux`" in hint


def test_docker_host_hint_says_to_unset_it(config: Path, tmp_path: Path) -> None:
    ep = Endpoint("default", f"unix://{tmp_path}/no.sock", "DOCKER_HOST")
    assert "unset" in engine.unreachable_hint(ep)


def test_connecting_to_a_missing_socket_is_one_infra_error(config: Path, tmp_path: Path) -> None:
    ep = Endpoint("default", f"unix://{tmp_path}/no.sock", "built-in default")
    with pytest.raises(InfraError) as err:
        engine.connect_endpoint(ep)
    assert err.value.message == (
        f"cannot connect to the Docker engine at unix://{tmp_path}/no.sock (context default)")
    assert err.value.hint


def engine_at(endpoint: Endpoint) -> engine.Engine:
    """An Engine with no client: enough for the CLI selection, which never talks to it."""
    return engine.Engine(endpoint, None)  # type: ignore[arg-type]


def test_cli_selection_matches_the_endpoint() -> None:
    named = engine_at(Endpoint("desktop-linux", "unix:///a.sock", "--context"))
    env = named.cli_env({"DOCKER_HOST": "unix:///stale", "DOCKER_CONTEXT": "x", "PATH": "/bin"})
    assert named.cli_args() == ["--context", "desktop-linux"]
    assert "DOCKER_HOST" not in env and "DOCKER_CONTEXT" not in env and env["PATH"] == "/bin"
    default = engine_at(Endpoint("default", DEFAULT_HOST, "--context"))
    env = default.cli_env({"DOCKER_HOST": "unix:///stale", "DOCKER_TLS_VERIFY": "1"})
    assert default.cli_args() == [] and env["DOCKER_HOST"] == DEFAULT_HOST
    assert "DOCKER_TLS_VERIFY" not in env


def test_buildx_inspect_output_is_parsed() -> None:
    text = ("Name:   default\nDriver: docker\n\nNodes:\nName:             default\n"
            "Endpoint:         default\nStatus:           running\n"
            "BuildKit version: v0.8+unknown\nPlatforms:        linux/amd64, linux/386\n")
    facts = engine.parse_buildx_inspect(text)
    assert facts == {"name": "default", "driver": "docker", "endpoint": "default",
                     "status": "running", "buildkit": "v0.8+unknown",
                     "platforms": "linux/amd64, linux/386"}


def test_a_skipped_build_moves_the_plain_tags_that_name_another_build() -> None:
    groups = [["o/kernel:6.12.54-0123-arm64", "o/kernel:6.12.54-arm64"],
              ["o/kernel:6.12.54-builder-0123-arm64", "o/kernel:6.12.54-builder-arm64"]]
    ids = {"o/kernel:6.12.54-0123-arm64": "sha256:small",
           "o/kernel:6.12.54-arm64": "sha256:shipped",  # another config's build, built later
           "o/kernel:6.12.54-builder-0123-arm64": "sha256:small-builder"}  # plain tag gone
    assert engine.aliases_to_move(ids, groups) == [
        ("sha256:small", "o/kernel:6.12.54-arm64"),
        ("sha256:small-builder", "o/kernel:6.12.54-builder-arm64")]
    ids["o/kernel:6.12.54-arm64"] = "sha256:small"
    ids["o/kernel:6.12.54-builder-arm64"] = "sha256:small-builder"
    assert engine.aliases_to_move(ids, groups) == []
    assert engine.aliases_to_move({}, groups) == []  # nothing built: nothing to point at
