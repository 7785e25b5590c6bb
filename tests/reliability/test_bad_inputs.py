"""Bad inputs to every task: each is refused in one line that names it and says the fix, and
costs nothing (no file, image, container or process created or changed).

The table below is the battery: a case is a task's argv, the setup that makes its input bad,
the values the error must name and a word of the fix it must give. Each becomes a test named
by its sentence. Cases that fail before lkbuild asks any engine anything run with an engine
address where none listens (so reaching an engine would change their error) and are unit tests;
the others talk to the real engine and are in the CI tier.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from tests.integration.daemons import DockerEngine, SSHServer
from tests.reliability.conftest import ENTRY_POINTS, VERSION, Sandbox, refused
from tests.run import Run

Setup = Callable[[Sandbox], None]
JUNK = bytes(range(256)) * 8  # binary junk: NULs, control bytes, invalid UTF-8
PIN = "0" * 64


@dataclass(frozen=True)
class Case:
    """One bad input. `{s.NAME}` in argv, names and env is a Sandbox attribute; `names` must
    all be in the error's message and `fix` in its hint; `engine` says the run may ask the
    real engine (CI tier); `parser` says Invoke's parser refuses it before any lkbuild code
    runs, so under `inv`, whose program is Invoke's own, the one line is Invoke's (no
    `lkbuild: error:` prefix, exit 1); `xfail` says which defect keeps the case from passing
    yet."""

    name: str
    argv: tuple[str, ...]
    names: tuple[str, ...]
    fix: str
    setup: Setup | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    engine: bool = False
    parser: bool = False
    xfail: str = ""


def write(rel: str, content: str | bytes) -> Setup:
    """A setup that writes a file under the sandbox root."""

    def setup(s: Sandbox) -> None:
        path = s.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def remove(rel: str) -> Setup:
    return lambda s: (s.root / rel).unlink()


def mkdir(rel: str) -> Setup:
    return lambda s: (s.root / rel).mkdir(parents=True)


def both(*steps: Setup) -> Setup:
    def setup(s: Sandbox) -> None:
        for step in steps:
            step(s)

    return setup


TREE = "work/kernel"
ARGS = f"{TREE}/6.12.x/build-args"
KD = ("--kernel-dir", "{s.tree}")
SRC = ("--source", "{s.tarball}")
PINNED_URL = "{s.dead_url}/linux-6.12.54.tar.xz#sha256=" + PIN
REMOTE = ("remote-build", "--version", VERSION, "--arch", "amd64", *KD, "--source", PINNED_URL)
PROFILE_ARM64 = f"""\
lkbuild-profile: 1
release: {VERSION}-linuxkit
arch: arm64
compiler: gcc (Alpine 14.2.0) 14.2.0
"""

CASES: tuple[Case, ...] = (
    # versions
    Case("a_version_without_a_patch_level_is_refused",
         ("build", "--version", "6.12", "--arch", "amd64", *KD), ("'6.12'",), "full version"),
    Case("a_version_with_a_v_prefix_is_refused_by_fetch",
         ("fetch", "--version", "v6.12.54"), ("'v6.12.54'",), "full version"),
    Case("a_series_name_is_not_a_version_for_add_kernel",
         ("add-kernel", "--version", "6.12.x", *KD), ("'6.12.x'",), "full version"),
    Case("a_version_of_a_series_the_tree_lacks_is_refused_by_list",
         ("list", "--version", "7.0.1", *KD), ("7.0.x", "7.0.1", "{s.tree}"), "add-kernel"),
    Case("a_malformed_version_is_refused_by_pull",
         ("pull", "--version", "6.12.54.1", "--arch", "amd64", "--registry", "127.0.0.1:{s.port}"),
         ("'6.12.54.1'",), "full version", engine=True),
    # arches
    Case("an_unknown_arch_is_refused_by_buildplainkernel",
         ("buildplainkernel", "--version", VERSION, "--arch", "sparc", *KD), ("'sparc'",),
         "supported are"),
    Case("an_unknown_arch_is_refused_by_vmtest",
         ("vmtest", "--kernel", VERSION, "--arch", "mips", *KD), ("'mips'",), "supported are"),
    Case("an_unknown_arch_is_refused_by_list",
         ("list", "--arch", "riscv64", *KD), ("'riscv64'",), "supported are"),
    # kernel dirs
    Case("a_kernel_dir_that_does_not_exist_is_refused",
         ("list", "--kernel-dir", "{s.root}/nowhere"), ("{s.root}/nowhere",), "--kernel-dir"),
    Case("a_kernel_dir_whose_series_has_no_build_args_is_refused",
         ("list", *KD), ("{s.tree}",), "build-args", setup=remove(ARGS)),
    Case("a_build_args_line_that_is_not_key_value_is_refused",
         ("buildplainkernel", "--version", VERSION, "--arch", "amd64", *KD, *SRC),
         ("{s.tree}/6.12.x/build-args", "line 2", "KERNEL SERIES 6.12.x"), "KEY=VALUE",
         setup=write(ARGS, f"KERNEL_VERSION={VERSION}\nKERNEL SERIES 6.12.x\n")),
    Case("a_series_without_a_config_for_the_arch_is_refused_by_kconfig",
         ("kconfig", "--version", VERSION, "--arch", "arm64", *KD, *SRC),
         ("arm64", "{s.tree}/6.12.x/config-aarch64"), "--base defconfig --save",
         setup=remove(f"{TREE}/6.12.x/config-aarch64")),
    Case("a_series_without_a_config_for_the_arch_is_refused_by_builddebugkernel",
         ("builddebugkernel", "--version", VERSION, "--arch", "amd64", *KD, *SRC),
         ("amd64", "{s.tree}/6.12.x/config-x86_64"), "inv kconfig",
         setup=remove(f"{TREE}/6.12.x/config-x86_64")),
    Case("a_kernel_dir_that_is_a_file_is_refused_by_vmtest",
         ("vmtest", "--kernel", VERSION, "--arch", "amd64", "--kernel-dir", "{s.work}/kernel.tar"),
         ("{s.work}/kernel.tar", "not a directory"), "--kernel-dir",
         setup=write("work/kernel.tar", "not a tree\n")),
    Case("a_build_args_file_of_binary_junk_is_refused",
         ("list", *KD), ("{s.tree}/6.12.x/build-args",), "KEY=VALUE", setup=write(ARGS, JUNK)),
    Case("a_build_args_version_that_is_not_full_is_refused_and_add_kernel_changes_nothing",
         ("add-kernel", "--version", "6.12.60", *KD),
         ("{s.tree}/6.12.x/build-args", "KERNEL_VERSION=6.12"), "KERNEL_VERSION=6.12.1",
         setup=write(ARGS, "KERNEL_VERSION=6.12\nKERNEL_SERIES=6.12.x\n")),
    Case("a_build_arg_without_a_value_is_refused",
         ("build", "--version", VERSION, "--arch", "amd64", *KD, *SRC, "--build-arg", "NOVALUE"),
         ("'NOVALUE'",), "KEY=VALUE"),
    Case("a_jobs_flag_that_is_not_a_number_is_refused",
         ("build", "--version", VERSION, "--arch", "amd64", *KD, "--jobs", "abc"),
         ("--jobs", "'abc'"), "digits only"),
    Case("a_negative_jobs_flag_is_refused",
         ("buildmodule", "--kernel", VERSION, "--module", "hello", *KD, "--jobs", "-1"),
         ("--jobs", "-1"), "--jobs 4"),
    Case("an_unknown_flag_is_refused",
         ("push", "--version", VERSION, "--regsitry", "127.0.0.1:5000"), ("'--regsitry'",),
         "lkbuild -h TASK", parser=True),
    Case("a_builders_mapping_without_a_context_is_refused_before_the_source_is_read",
         ("build", "--version", VERSION, "--arch", "amd64", *KD, *SRC, "--builders", "arm64"),
         ("'arm64'",), "PLATFORM=CONTEXT"),
    Case("menuconfig_without_a_terminal_is_refused_before_the_source_is_read",
         ("kconfig", "--version", VERSION, "--arch", "amd64", *KD, *SRC, "--menuconfig"),
         ("--menuconfig",), "from a terminal"),
    # configs and fragments
    Case("a_config_file_that_does_not_exist_is_refused",
         ("build", "--version", VERSION, "--arch", "amd64", *KD, *SRC,
          "--config", "{s.work}/missing.config"), ("{s.work}/missing.config",), "--config"),
    Case("a_fragment_that_is_a_directory_is_refused",
         ("buildplainkernel", "--version", VERSION, "--arch", "amd64", *KD, *SRC,
          "--fragment", "{s.work}/fragments"), ("{s.work}/fragments",), "--fragment",
         setup=mkdir("work/fragments")),
    Case("a_fragment_of_binary_junk_is_refused_before_the_engine",
         ("build", "--version", VERSION, "--arch", "amd64", *KD, *SRC,
          "--fragment", "{s.work}/junk.config"), ("{s.work}/junk.config",), "CONFIG_",
         setup=write("work/junk.config", JUNK)),
    # patches
    Case("a_patch_file_that_is_not_a_patch_is_refused_before_the_engine",
         ("build", "--version", VERSION, "--arch", "amd64", *KD, *SRC),
         ("{s.tree}/6.12.x/patches/0002-notes.patch",), "patch",
         setup=write(f"{TREE}/6.12.x/patches/0002-notes.patch", "remember to rebase this\n")),
    # sources and checksums
    Case("a_source_tarball_that_does_not_exist_is_refused",
         ("fetch", "--source", "{s.work}/linux-9.9.9.tar.xz"), ("{s.work}/linux-9.9.9.tar.xz",),
         "existing kernel source tarball"),
    Case("a_source_that_is_not_a_tarball_is_refused",
         ("fetch", "--version", VERSION, "--source", "{s.work}/notes.tar.xz"),
         ("{s.work}/notes.tar.xz",), "tarball", setup=write("work/notes.tar.xz", JUNK)),
    Case("a_source_url_with_a_short_sha256_pin_is_refused",
         ("fetch", "--version", VERSION,
          "--source", "{s.dead_url}/linux-6.12.54.tar.xz#sha256=abc"),
         ("#sha256=abc", "{s.dead_url}/linux-6.12.54.tar.xz"), "64 hex digits"),
    Case("a_source_tarball_that_does_not_exist_is_refused_by_build",
         ("build", "--arch", "amd64", *KD, "--source", "{s.work}/gone.tar.xz"),
         ("{s.work}/gone.tar.xz",), "existing kernel source tarball"),
    # module dirs and recipes
    Case("a_module_dir_without_a_makefile_is_refused",
         ("buildmodule", "--kernel", VERSION, "--arch", "amd64", *KD, *SRC,
          "--module", "{s.work}/mymod"), ("{s.work}/mymod",), "Makefile",
         setup=write("work/mymod/mymod.c", "int x;\n")),
    Case("a_recipe_with_bad_yaml_is_refused",
         ("buildmodule", "--kernel", VERSION, "--arch", "amd64", *KD, *SRC,
          "--module", "{s.work}/broken"), ("{s.work}/broken/recipe.yml", "line 2"), "YAML",
         setup=write("work/broken/recipe.yml",
                     "name: broken\nversion: 1.0: x\nsource: {dir: .}\n")),
    Case("a_recipe_with_an_unknown_key_is_refused",
         ("buildmodule", "--kernel", VERSION, "--arch", "amd64", *KD, *SRC,
          "--module", "{s.work}/typo"), ("{s.work}/typo/recipe.yml", "sourse"), "recipe format",
         setup=both(write("work/typo/recipe.yml",
                          "name: typo\nversion: '1.0'\nsource: {dir: .}\nsourse: {dir: .}\n"),
                    write("work/typo/Makefile", "obj-m := typo.o\n"))),
    Case("a_recipe_of_binary_junk_is_refused",
         ("buildmodule", "--kernel", VERSION, "--arch", "amd64", *KD, *SRC,
          "--module", "{s.work}/junk"), ("{s.work}/junk/recipe.yml",), "YAML",
         setup=write("work/junk/recipe.yml", JUNK)),
    Case("a_matrix_file_of_binary_junk_is_refused",
         ("buildmodule", "--matrix", "{s.work}/versions", *KD), ("{s.work}/versions",),
         "KERNEL ARCH MODULE", setup=write("work/versions", JUNK)),
    Case("a_matrix_file_that_does_not_exist_is_refused",
         ("buildmodule", "--matrix", "{s.work}/versions", *KD), ("{s.work}/versions",),
         "KERNEL ARCH MODULE"),
    # profiles
    Case("a_profile_that_does_not_exist_is_refused",
         ("build", "--profile", "{s.work}/desktop.yaml", *KD, *SRC), ("{s.work}/desktop.yaml",),
         "inv detect --save"),
    Case("a_profile_of_corrupt_yaml_is_refused",
         ("buildmodule", "--profile", "{s.work}/desktop.yaml", "--module", "hello", *KD, *SRC),
         ("{s.work}/desktop.yaml", "line 2"), "inv detect --save",
         setup=write("work/desktop.yaml",
                     "lkbuild-profile: 1\nrelease: 6.12.54: x\narch: arm64\n")),
    Case("a_profile_of_another_arch_is_refused",
         ("build", "--profile", "{s.work}/desktop.yaml", "--arch", "amd64", *KD, *SRC),
         ("{s.work}/desktop.yaml", "arm64", "amd64"), "--arch arm64",
         setup=write("work/desktop.yaml", PROFILE_ARM64)),
    Case("a_capture_dir_that_does_not_exist_is_refused_by_detect",
         ("detect", "--from-dir", "{s.work}/capture"), ("{s.work}/capture",), "capture.sh"),
    Case("a_capture_file_of_binary_junk_is_refused_by_detect",
         ("detect", "--from-dir", "{s.work}/console.log"), ("{s.work}/console.log",),
         "capture.sh", setup=write("work/console.log", JUNK)),
    # hosts, ports and keys
    Case("a_malformed_host_is_refused",
         ("remote-build", "--host", "me@@server", "--version", VERSION), ("'me@@server'",),
         "[USER@]HOST[:PORT]"),
    Case("port_zero_is_refused",
         ("remote-build", "--host", "server:0", "--version", VERSION), ("'server:0'",),
         "1-65535"),
    Case("a_port_above_65535_is_refused",
         ("remote-build", "--host", "me@127.0.0.1:70000", "--version", VERSION),
         ("'me@127.0.0.1:70000'",), "1-65535"),
    Case("a_loopback_port_nobody_listens_on_is_refused_and_nothing_is_left",
         (*REMOTE, "--host", "root@127.0.0.1:{s.port}"), ("127.0.0.1:{s.port}",), "runs sshd"),
    Case("an_identity_file_that_does_not_exist_is_refused",
         (*REMOTE, "--host", "root@127.0.0.1:{s.port}", "--identity", "{s.home}/.ssh/id_gone"),
         ("{s.home}/.ssh/id_gone",), "--identity"),
    Case("a_zero_connect_timeout_is_refused",
         (*REMOTE, "--host", "root@127.0.0.1:{s.port}", "--connect-timeout", "0"),
         ("--connect-timeout", "0"), "--connect-timeout 15"),
    Case("a_keyring_that_does_not_exist_is_refused_before_any_download",
         ("fetch", "--version", VERSION, "--keyring", "{s.home}/kernel.org.gpg"),
         ("{s.home}/kernel.org.gpg",), "OpenPGP public keyring"),
    Case("a_vmtest_timeout_of_zero_is_refused",
         ("vmtest", "--kernel", VERSION, "--arch", "amd64", *KD, "--timeout", "0"),
         ("--timeout", "0"), "--timeout 120"),
    # registries and credentials
    Case("a_registry_given_as_a_url_is_refused_by_push",
         ("push", "--version", VERSION, "--registry", "http://127.0.0.1:5000/"),
         ("'http://127.0.0.1:5000/'",), "without a scheme", engine=True),
    Case("a_registry_with_a_space_is_refused_by_pull",
         ("pull", "--version", VERSION, "--arch", "amd64", "--registry", "my registry"),
         ("'my registry'",), "host and optional port", engine=True),
    Case("a_registry_given_as_a_url_is_refused_by_remote_build_push",
         (*REMOTE, "--host", "root@127.0.0.1:{s.port}", "--push", "--registry", "https://x.io"),
         ("'https://x.io'",), "without a scheme"),
    Case("a_docker_config_that_is_not_json_is_refused",
         ("pull", "--version", VERSION, "--arch", "amd64", "--registry", "127.0.0.1:{s.port}"),
         ("{s.docker_config}/config.json",), "fix or remove",
         setup=write("docker/config.json", '{"auths": {"127.0.0.1": \n'), engine=True),
    Case("a_docker_config_that_is_not_json_is_refused_by_doctor",
         ("doctor",), ("{s.docker_config}/config.json",), "fix or remove",
         setup=write("docker/config.json", "auths = none\n"), engine=True),
    Case("an_unknown_context_is_refused_by_prune",
         ("prune", "--context", "nosuchcontext"), ("'nosuchcontext'",), "existing contexts"),
    Case("an_unknown_context_is_refused_by_doctor",
         ("doctor", "--context", "desktop-linux"), ("'desktop-linux'",), "existing contexts"),
    Case("an_image_reference_with_a_space_is_refused_by_vmtest",
         ("vmtest", "--kernel", "my kernel:6.12.54", "--arch", "amd64"),
         ("'my kernel:6.12.54'",), "reference", engine=True),
    # the build image
    Case("an_image_name_with_capitals_is_refused_by_bootstrap_image",
         ("bootstrap-image", "--name", "MyOrg/Build:bookworm"), ("'MyOrg/Build:bookworm'",),
         "lowercase"),
    Case("a_debian_mirror_that_is_not_a_url_is_refused_by_bootstrap_image",
         ("bootstrap-image", "--mirror", "deb.debian.org/debian"), ("'deb.debian.org/debian'",),
         "http://"),
    # settings files
    Case("a_settings_file_of_bad_yaml_is_refused",
         ("config",), ("{s.work}/lkbuild.yaml", "line 2"), "YAML",
         setup=write("work/lkbuild.yaml", "org: me\njobs: 3: 4\nregistry: x\n"),
         env={"LKBUILD_CONFIG": "{s.work}/lkbuild.yaml"}),
    Case("a_settings_file_of_binary_junk_is_refused",
         ("config",), ("{s.work}/lkbuild.yaml",), "YAML", setup=write("work/lkbuild.yaml", JUNK),
         env={"LKBUILD_CONFIG": "{s.work}/lkbuild.yaml"}),
    Case("a_settings_path_that_is_a_directory_is_refused",
         ("config",), ("{s.work}",), "LKBUILD_CONFIG", env={"LKBUILD_CONFIG": "{s.work}"}),
    Case("a_settings_file_with_an_unknown_key_is_refused",
         ("list", *KD), ("'jbos'", "{s.work}/lkbuild.yaml"), "did you mean 'jobs'",
         setup=write("work/lkbuild.yaml", "jbos: 3\n"),
         env={"LKBUILD_CONFIG": "{s.work}/lkbuild.yaml"}),
    Case("a_settings_file_value_of_the_wrong_type_is_refused",
         ("prune",), ("jobs", "{s.work}/lkbuild.yaml", "'many'"), "e.g. jobs: 4",
         setup=write("work/lkbuild.yaml", "jobs: many\n"),
         env={"LKBUILD_CONFIG": "{s.work}/lkbuild.yaml"}),
    # environment values
    Case("an_unknown_lkbuild_variable_is_refused",
         ("doctor",), ("LKBUILD_JBOS",), "did you mean 'jobs'", env={"LKBUILD_JBOS": "3"}),
    Case("a_jobs_variable_that_is_not_a_number_is_refused",
         ("bootstrap-image",), ("LKBUILD_JOBS", "'abc'"), "LKBUILD_JOBS=4",
         env={"LKBUILD_JOBS": "abc"}),
    Case("a_negative_min_free_gb_is_refused",
         ("detect", "--from-dir", "{s.work}"), ("LKBUILD_MIN_FREE_GB", "-1"),
         "LKBUILD_MIN_FREE_GB=30", env={"LKBUILD_MIN_FREE_GB": "-1"}),
)


def fill(text: str, s: Sandbox) -> str:
    return text.format(s=s)


def check(case: Case, sandbox: Sandbox, snapshot: Callable) -> None:
    """Make the input bad, run the task, then hold the run to every promise."""
    if case.setup is not None:
        case.setup(sandbox)
    argv = [fill(a, sandbox) for a in case.argv]
    env = {k: fill(v, sandbox) for k, v in case.env.items()}
    names = [fill(n, sandbox) for n in case.names]
    lines = {}
    for entry in ENTRY_POINTS:  # lkbuild, then inv: the same line and code from both
        with snapshot(sandbox.root):
            run = sandbox.lkbuild(*argv, engine=case.engine, env=env, entry=entry)
        if entry == "inv" and case.parser:
            invokes_own(run, names)
            continue
        lines[entry] = (run.code, refused(run, names, case.fix))
    if not case.parser:
        assert lines["inv"] == lines["lkbuild"], lines


def invokes_own(run: Run, names: list[str]) -> None:
    """Invoke's parser refused the command line in one line of its own, naming the input."""
    assert run.code != 0 and run.out == "", run.out + run.err
    assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1, run.err
    for name in names:
        assert name in run.err, run.err


def _test_for(case: Case) -> Callable[[Sandbox, Callable], None]:
    def test(sandbox: Sandbox, snapshot: Callable) -> None:
        check(case, sandbox, snapshot)

    test.__name__ = f"test_{case.name}"
    test.__doc__ = f"{case.name.replace('_', ' ').capitalize()}: one line, the fix, no trace."
    test = (pytest.mark.ci if case.engine else pytest.mark.unit)(test)
    if case.xfail:
        test = pytest.mark.xfail(strict=True, reason=case.xfail)(test)
    return test


for _case in CASES:
    assert f"test_{_case.name}" not in globals(), _case.name
    globals()[f"test_{_case.name}"] = _test_for(_case)


@pytest.mark.unit
def test_the_battery_covers_every_task() -> None:
    """Every task that takes input has at least one bad input in the table."""
    tasks = {c.argv[0] for c in CASES}
    assert tasks >= {"doctor", "detect", "list", "add-kernel", "fetch", "bootstrap-image",
                     "buildplainkernel", "builddebugkernel", "build", "kconfig", "buildmodule",
                     "vmtest", "push", "pull", "remote-build", "prune", "config"}
    assert len(CASES) >= 30


@pytest.mark.ci
def test_a_missing_identity_starts_nothing_on_a_live_build_host(
        sandbox: Sandbox, snapshot: Callable, ssh_server: SSHServer,
        remote_engine: DockerEngine) -> None:
    """A real sshd and its engine: refused before any session there, nothing added there."""
    known = sandbox.work / "known_hosts"
    known.write_text(ssh_server.known_hosts_line())
    argv = [fill(a, sandbox) for a in REMOTE] + [
        "--host", ssh_server.host_spec, "--known-hosts", str(known),
        "--identity", str(sandbox.home / ".ssh" / "id_gone")]
    with snapshot(sandbox.root, engines=("", remote_engine.host)):
        run = sandbox.lkbuild(*argv)
        assert not ssh_server.session_pids()
    refused(run, [str(sandbox.home / ".ssh" / "id_gone")], "--identity")


@pytest.mark.ci
def test_a_key_file_of_junk_is_refused_by_a_live_build_host_and_leaves_no_session(
        sandbox: Sandbox, snapshot: Callable, ssh_server: SSHServer,
        remote_engine: DockerEngine) -> None:
    """The host is reached, the login fails: no session stays open there, nothing is added."""
    known = sandbox.work / "known_hosts"
    known.write_text(ssh_server.known_hosts_line())
    key = sandbox.work / "id_junk"
    key.write_bytes(JUNK)
    os.chmod(key, 0o600)
    argv = [fill(a, sandbox) for a in REMOTE] + [
        "--host", ssh_server.host_spec, "--known-hosts", str(known), "--identity", str(key)]
    with snapshot(sandbox.root, engines=("", remote_engine.host)):
        run = sandbox.lkbuild(*argv)
        assert not ssh_server.session_pids()
    refused(run, [str(key)], "--identity")


def whole_number_flags() -> list[tuple[str, str]]:
    """(task, --flag) for every flag of every task that takes a whole number: Invoke types
    a flag by its default. (Not through Task.get_arguments, which uses up the help texts.)"""
    import inspect

    from recipes.cli import ns

    return [(name, "--" + param.name.replace("_", "-"))
            for name, task in sorted(ns.tasks.items())
            for param in inspect.signature(task.body).parameters.values()
            if type(param.default) is int]


@pytest.mark.unit
@pytest.mark.parametrize("task,flag", whole_number_flags())
def test_a_word_for_a_whole_number_flag_is_one_line_under_inv_and_lkbuild(
        sandbox: Sandbox, snapshot: Callable, task: str, flag: str) -> None:
    check(Case(f"{task}_{flag}", (task, flag, "lots"), (flag, "'lots'"), "digits only"),
          sandbox, snapshot)
