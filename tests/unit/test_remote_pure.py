"""Pure parts of remote builds: host specs, host key texts, remote facts, context sync, jobs."""
from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import paramiko
import pytest

from recipes import fanout, remote, ssh
from recipes.arch import resolve
from recipes.errors import InfraError, UserError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,user,host,port", [
    ("server", "", "server", None), ("me@server", "me", "server", None),
    ("me@server:2222", "me", "server", 2222), ("10.0.0.5:22", "", "10.0.0.5", 22),
    ("root@[::1]:2200", "root", "::1", 2200), ("[fe80::1]", "", "fe80::1", None),
])
def test_host_specs_parse_like_ssh_destinations(text, user, host, port):
    spec = ssh.parse_host(text)
    assert (spec.user, spec.host, spec.port) == (user, host, port)
    assert ssh.parse_host(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "a b", "me@", "host:0", "host:70000", "host:port",
                                  "ssh://host", "a@b@c"])
def test_bad_host_specs_are_refused_with_the_form(text):
    with pytest.raises(UserError) as err:
        ssh.parse_host(text)
    assert "HOST" in err.value.line() or "port" in err.value.line()


@pytest.fixture
def key(tmp_path: Path) -> paramiko.PKey:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    return paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "k"))


def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path, key):
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], check=True,
                             capture_output=True, text=True).stdout.split()[1]
    assert ssh.fingerprint(key) == printed


def test_known_hosts_names_follow_openssh(key):
    assert ssh.known_hosts_name("h", 22) == "h"
    assert ssh.known_hosts_name("h", 2222) == "[h]:2222"
    line = ssh.known_hosts_line("127.0.0.1", 2222, key)
    assert line.startswith("[127.0.0.1]:2222 ssh-ed25519 AAAA") and line.endswith("\n")


def test_an_unknown_key_is_refused_naming_type_fingerprint_and_both_fixes(tmp_path, key):
    exc = ssh.UnknownHostKey("[h]:2222", key)
    line = ssh.unknown_key_error(ssh.HostSpec("me", "h", 2222), 2222, exc,
                                 tmp_path / "known_hosts").line()
    assert "host key of [h]:2222 is not known: ssh-ed25519 SHA256:" in line
    assert "--accept-new-host-key" in line and "ssh-keyscan -p 2222 h >>" in line


def test_accepting_a_new_key_appends_it_in_openssh_form(tmp_path, key):
    client = paramiko.SSHClient()
    policy = ssh.StrictPolicy(tmp_path / "sub" / "known_hosts", accept_new=True)
    policy.missing_host_key(client, "[h]:2222", key)
    text = (tmp_path / "sub" / "known_hosts").read_text()
    assert text == f"[h]:2222 ssh-ed25519 {key.get_base64()}\n"
    assert client.get_host_keys().lookup("[h]:2222") is not None
    with pytest.raises(ssh.UnknownHostKey):
        ssh.StrictPolicy(tmp_path / "other", accept_new=False).missing_host_key(
            client, "[h]:2222", key)


def test_df_and_docker_info_outputs_are_read():
    df = ("Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
          "/dev/sda1        263174212 100000000 150000000      40% /\n"
          "tmpfs              1000000         0   1000000       0% /tmp\n")
    assert ssh.parse_df(df) == {"0": 150000000 * 1024, "1": 1000000 * 1024}
    assert ssh.parse_info('WARNING: x\n{"NCPU": 8, "MemTotal": 8321499136}\n') == \
        {"NCPU": 8, "MemTotal": 8321499136}
    assert ssh.parse_info("Cannot connect") == {}


def _entries(tmp_path: Path) -> tuple[Path, list[remote.FileEntry]]:
    ctx = tmp_path / "ctx"
    (ctx / "scripts").mkdir(parents=True)
    (ctx / "patches").mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "scripts" / "build.sh").write_text("#!/bin/sh\n")
    (ctx / "scripts" / "build.sh").chmod(0o755)
    (ctx / "scripts" / ".tmp").write_text("half written")
    return ctx, remote.context_files(ctx, tmp_path / "cache")


def test_context_files_are_named_by_content_with_modes_and_empty_dirs(tmp_path):
    ctx, entries = _entries(tmp_path)
    assert [(e.rel, e.mode) for e in entries] == [("Dockerfile", 0o644),
                                                  ("scripts/build.sh", 0o755)]
    assert entries[0].sha256 == hashlib.sha256(b"FROM scratch\n").hexdigest()
    assert remote.context_dirs(ctx) == ["patches", "scripts"]


def test_the_blob_tar_and_the_assemble_script_rebuild_the_context(tmp_path):
    ctx, entries = _entries(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    with tarfile.open(fileobj=io.BytesIO(b"".join(remote.blobs_tar(entries)))) as tar:
        assert sorted(tar.getnames()) == sorted(e.sha256 for e in entries)
        tar.extractall(store, filter="data")
    script = remote.assemble_script(entries, PurePosixPath(store), PurePosixPath(tmp_path / "o"),
                                    remote.context_dirs(ctx))
    subprocess.run(["sh", "-c", script], check=True)
    out = tmp_path / "o"
    assert (out / "Dockerfile").read_text() == "FROM scratch\n"
    assert (out / "scripts" / "build.sh").stat().st_mode & 0o777 == 0o755
    assert (out / "patches").is_dir() and not (out / "scripts" / ".tmp").exists()
    assert (out / "Dockerfile").stat().st_ino == (store / entries[0].sha256).stat().st_ino


def test_an_assemble_script_cut_short_runs_nothing_and_a_rerun_drops_stale_files(tmp_path):
    _ctx, entries = _entries(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    with tarfile.open(fileobj=io.BytesIO(b"".join(remote.blobs_tar(entries)))) as tar:
        tar.extractall(store, filter="data")
    out = tmp_path / "o"
    script = remote.assemble_script(entries, PurePosixPath(store), PurePosixPath(out))
    cut = subprocess.run(["sh", "-s"], input=script[:len(script) // 2], text=True,
                         capture_output=True)
    assert cut.returncode != 0 and not out.exists()
    out.mkdir()
    (out / "stale").write_text("from an earlier step")
    subprocess.run(["sh", "-s"], input=script, text=True, check=True)
    assert not (out / "stale").exists() and (out / "Dockerfile").is_file()


def test_dot_files_of_a_context_are_sent_but_not_its_temp_files(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / ".version").write_text("1.0\n")
    (ctx / "src" / ".Makefile.tmp").write_text("half")
    assert [e.rel for e in remote.context_files(ctx, tmp_path / "cache")] == ["src/.version"]


def _facts(cpus: int, memory: int) -> ssh.RemoteFacts:
    from recipes import resources
    return ssh.RemoteFacts("me", cpus, memory, "x86_64", "/var/lib/docker", "27.0", "v0.13",
                           None, None, resources.jobs_for(cpus, memory))


def test_remote_jobs_come_from_the_remote_engine_and_too_many_are_refused():
    r = remote.Host(remote.Target("h"), None, _facts(8, 8 * 1024**3), PurePosixPath("/h"))
    assert remote.choose_jobs(r, 0) == 4
    assert remote.choose_jobs(r, 3) == 3
    with pytest.raises(UserError) as err:
        remote.choose_jobs(r, 8)
    assert "--jobs 4" in err.value.line()


def test_fanout_jobs_are_every_version_with_every_arch_once():
    a, x = resolve("arm64"), resolve("x86_64")
    jobs = fanout.jobs_of(["6.12.54", "6.12.54", "6.6.1"], [a, x])
    assert [str(j) for j in jobs] == ["6.12.54 arm64", "6.12.54 amd64", "6.6.1 arm64",
                                      "6.6.1 amd64"]


def test_a_pinned_url_source_is_located_without_any_download(tmp_path):
    from recipes import sources
    from recipes.settings import Settings

    s = Settings(flags={"cache_dir": str(tmp_path)}, env={}, files=[])
    pin = "ab" * 32
    url = "https://example.invalid/linux-6.12.54.tar.xz"
    found = sources.locate(s, "6.12.54", f"{url}#sha256={pin}")
    assert (found.url, found.sha256, found.name) == (url, pin, "linux-6.12.54.tar.xz")
    assert sources.locate(s, "6.12.54", str(tmp_path / "local.tar.xz")) is None
    with pytest.raises(UserError):
        sources.locate(s, "6.12.54", "ftp://example.invalid/x.tar.xz")


def test_a_receiver_holding_the_base_layers_gets_only_the_rest() -> None:
    manifest = [{"Config": "c.json", "Layers": ["a/layer.tar", "b/layer.tar", "c/layer.tar"]}]
    assert ssh.layers_to_drop(manifest, 2) == ["a/layer.tar", "b/layer.tar"]
    assert ssh.layers_to_drop(manifest, 0) == []
    assert ssh.layers_to_drop([], 2) == []


def test_a_layer_file_a_later_layer_shares_is_kept() -> None:
    """OCI archives name layers by digest: two equal layers share one file."""
    manifest = [{"Layers": ["blobs/sha256/x", "blobs/sha256/y", "blobs/sha256/x"]}]
    assert ssh.layers_to_drop(manifest, 2) == ["blobs/sha256/y"]


class Images:
    """The one engine call shared_layers makes, answered from a table."""

    def __init__(self, table: dict) -> None:
        self.table = table

    def image(self, ref: str) -> dict | None:
        return self.table.get(ref)


def test_the_longest_chain_prefix_any_candidate_holds_is_what_the_engine_has() -> None:
    from recipes.engine import Engine

    images = Images({"base": {"RootFS": {"Layers": ["l1", "l2"]}},
                     "other": {"RootFS": {"Layers": ["l1", "x", "l3"]}},
                     "empty": {}})
    count = Engine.shared_layers
    assert count(images, ["l1", "l2", "l3"], ["base", "other", "empty", "missing"]) == 2
    assert count(images, ["l9"], ["base"]) == 0
    assert count(images, ["l1", "l2"], []) == 0


class DeadChannel:
    """A channel whose connection died mid-stream: reading and closing both fail, as
    paramiko's do once the peer's sshd is gone."""

    def __init__(self) -> None:
        self.sent = [f"{ssh.PID_MARK}4242\n".encode(), b"x" * 10]

    def set_combine_stderr(self, combine: bool) -> None: ...

    def exec_command(self, cmd: str) -> None: ...

    def recv(self, n: int) -> bytes:
        if self.sent:
            return self.sent.pop(0)
        raise EOFError()

    def close(self) -> None:
        raise EOFError()


def test_a_transfer_cut_mid_stream_is_one_error_even_when_closing_fails_too(monkeypatch):
    host = ssh.Remote(type("Conn", (), {"user": "root", "close": lambda self: None})(),
                      ssh.parse_host("root@build:22"), 22)
    monkeypatch.setattr(host, "_channel", DeadChannel)
    monkeypatch.setattr(host, "stop_all", lambda: None)  # the host is unreachable anyway
    got = bytearray()
    with pytest.raises(InfraError) as err:
        host.recv_stream("docker save x", got.extend)
    assert err.value.line().startswith(
        "lkbuild: error: the transfer from root@build:22 was cut (the connection closed)")
    assert bytes(got) == b"x" * 10 and host.groups == set()
