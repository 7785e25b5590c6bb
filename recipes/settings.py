"""Layered settings: flag > LKBUILD_<NAME> environment variable > config file > default.

One table (SETTINGS) says every option lkbuild has, its type and its default, so `inv config`
can show each effective value and where it came from, and a typo in a config file is caught
instead of silently ignored.
"""
from __future__ import annotations

import difflib
import getpass
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or install prefix) that holds tasks.py, kernel/ and module/."""

ENV_PREFIX = "LKBUILD_"
CONFIG_NAME = "lkbuild.yaml"
# Invoke's own config files: lkbuild reads their `lkbuild:` section (below its own files), so
# a project that configures its tasks there keeps lkbuild's settings beside them.
INVOKE_NAME = "invoke.yaml"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    return Path(value) if value else Path.home() / fallback


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "lkbuild"


def user_config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "lkbuild"


def user_cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "lkbuild"


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # str | int | bool | path | list
    default: Callable[[], Any]
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("kernel_dir", "path", lambda: ROOT / "kernel",
            "kernel tree in linuxkit's layout (<series>/build-args, config-<arch>, patches/)"),
    Setting("module_dir", "path", lambda: ROOT / "module",
            "module recipes (<name>/recipe.yml) that --module NAME finds"),
    Setting("cache_dir", "path", user_cache_dir, "verified sources, logs and digests"),
    Setting("org", "str", lambda: "lkbuild", "image organisation (name prefix) for tags"),
    Setting("registry", "str", lambda: "", "registry host for push and pull (empty: Docker Hub)"),
    Setting("kernel_mirror", "str", lambda: "https://cdn.kernel.org/pub/linux/kernel",
            "base URL holding v<major>.x/linux-<v>.tar.xz and sha256sums.asc"),
    Setting("keyring", "path", lambda: None,
            "OpenPGP keyring that signs sha256sums.asc (checked with gpgv when set)"),
    Setting("build_image", "str", lambda: "",
            "image the kernel is compiled in (empty: the series' BUILD_IMAGE)"),
    Setting("bootstrap_image", "str", lambda: "lkbuild/build:bookworm",
            "name of the offline build image made by bootstrap-image"),
    Setting("debian_mirror", "str", lambda: "http://deb.debian.org/debian",
            "Debian mirror for bootstrap-image"),
    Setting("debian_suite", "str", lambda: "bookworm", "Debian suite for bootstrap-image"),
    Setting("context", "str", lambda: "",
            "Docker context to use (empty: DOCKER_HOST, then the CLI's active context)"),
    Setting("builders", "list", list,
            "per-platform builders, e.g. linux/arm64=desktop-linux; {arch} is replaced"),
    Setting("builder_name", "str", lambda: "",
            "buildx builder name (empty: the engine's own builder)"),
    Setting("jobs", "int", lambda: 0, "make jobs (0: from the builder's cpus and memory)"),
    Setting("cache_id", "str", lambda: _user(),
            "builds with the same cache id share compiled objects (default: your user name)"),
    Setting("build_hosts", "list", list,
            "Linux hosts ([USER@]HOST[:PORT]) a build may run on when this engine cannot fit it "
            "(--where auto)"),
    Setting("build_host_identity", "path", lambda: None,
            "SSH private key for the build hosts (default: ~/.ssh/config, ssh-agent, ~/.ssh/id_*)"),
    Setting("build_host_known_hosts", "path", lambda: None,
            "known_hosts file the build hosts' keys are checked against (default: "
            "~/.ssh/known_hosts)"),
    Setting("where", "str", lambda: "",
            "where builds run: auto, local or a build host (empty: auto when build_hosts is "
            "set, else local)"),
    Setting("verbose", "bool", lambda: False,
            "builds (and bootstrap-image) stream their whole output to stderr instead of "
            "their progress"),
    Setting("min_free_gb", "int", lambda: 30,
            "free disk a full kernel build needs, in GB (doctor and build preflight)"),
    Setting("desktop_disk_image", "path",
            lambda: Path.home() / "Library/Containers/com.docker.docker/Data/vms/0/data/"
                                  "Docker.raw",
            "Docker Desktop's disk image (Docker.raw): the disk the engine's VM grows into"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Value:
    name: str
    value: Any
    source: str  # "flag", "env LKBUILD_X", "file PATH", "default"


def _unknown(key: str, where: str) -> UserError:
    close = difflib.get_close_matches(key, list(BY_NAME), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(BY_NAME)}"
    return UserError(f"unknown setting {key!r} in {where}", hint)


def _spelled(setting: Setting, where: str, value: Any) -> str:
    """How the user writes `value` for this setting in the place `where` names."""
    if where.startswith("environment variable"):
        return f"{setting.env}={value}"
    if where.startswith("flag"):
        return f"--{setting.name.replace('_', '-')} {value}"
    return f"{setting.name}: {value}"


def _example(setting: Setting) -> Any:
    if setting.kind == "int":
        default = setting.default()
        return default if default else 4
    if setting.kind == "list":
        return "linux/arm64=desktop-linux"
    if setting.kind == "bool":
        return "true"
    return setting.default() or "VALUE"


BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}


def convert(setting: Setting, raw: Any, where: str, base: Path | None = None) -> Any:
    """Turn a raw value (flag, env string, YAML scalar) into the setting's type."""
    fix = f"e.g. {_spelled(setting, where, _example(setting))}"
    if setting.kind == "int":
        if isinstance(raw, bool):
            raise UserError(f"setting {setting.name} in {where} must be an integer, got {raw!r}",
                            fix)
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise UserError(
                f"setting {setting.name} in {where} must be an integer, got {raw!r}",
                fix) from None
        if value < 0:
            raise UserError(f"setting {setting.name} in {where} must be >= 0, got {value}", fix)
        return value
    if setting.kind == "bool":
        word = str(raw).strip().lower()
        if isinstance(raw, bool) or word in BOOL_WORDS:
            return raw if isinstance(raw, bool) else BOOL_WORDS[word]
        raise UserError(f"setting {setting.name} in {where} must be true or false, got "
                        f"{raw!r}", fix)
    if setting.kind == "list":
        if isinstance(raw, (list, tuple)):
            items = [str(x).strip() for x in raw]
        elif isinstance(raw, str):
            items = [x.strip() for x in raw.split(",")]
        else:
            raise UserError(
                f"setting {setting.name} in {where} must be a list or a comma-separated "
                f"string, got {raw!r}", fix)
        return [x for x in items if x]
    if isinstance(raw, (dict, list)):
        raise UserError(f"setting {setting.name} in {where} must be a single value, got {raw!r}",
                        fix)
    text = "" if raw is None else str(raw)
    if setting.kind == "path":
        if not text:
            return None
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return path
    return text


def config_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """Candidate config files, highest precedence first."""
    env = os.environ if env is None else env
    explicit = env.get(ENV_PREFIX + "CONFIG", "")
    if explicit:
        return [Path(explicit).expanduser()]
    return [ROOT / CONFIG_NAME, user_config_dir() / CONFIG_NAME,
            ROOT / INVOKE_NAME, Path.home() / f".{INVOKE_NAME}"]


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file's data; an unreadable file or bad YAML is one UserError with the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}",
                        "check the path and its permissions") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not text (byte {exc.start} is not UTF-8)",
                        "give a YAML file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"bad YAML in {what} {path}{line}: {problem}",
                        f"correct the YAML syntax{' at that line' if line else ''}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse one config file; bad YAML names the file and line, unknown keys are refused."""
    data = read_yaml(path, "config file")
    if path.name.lstrip(".") == INVOKE_NAME:
        data = data.get("lkbuild") if isinstance(data, dict) else None
        if data is not None and not isinstance(data, dict):
            raise UserError(f"config file {path}: its lkbuild section must be a mapping of "
                            "setting: value", "e.g. lkbuild: {build_hosts: [me@server]}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of setting: value",
                        "write one `setting: value` line per setting, e.g. org: myorg")
    out: dict[str, Any] = {}
    for key, raw in data.items():
        name = str(key).replace("-", "_")
        if name not in BY_NAME:
            raise _unknown(str(key), f"config file {path}")
        out[name] = convert(BY_NAME[name], raw, f"config file {path}", base=path.parent)
    return out


class Settings:
    """The effective settings for one invocation."""

    def __init__(
        self,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        files: list[Path] | None = None,
    ) -> None:
        env = dict(os.environ if env is None else env)
        self._values: dict[str, Value] = {}
        layers: list[tuple[str, dict[str, Any]]] = []
        for path in reversed(files if files is not None else config_files(env)):
            if path.exists() and not path.is_file():
                raise UserError(f"config file {path} is not a file",
                                f"point {ENV_PREFIX}CONFIG at a YAML file, or unset it")
            if path.is_file():
                layers.append((f"file {path}", read_config_file(path)))
        known_env = {s.env for s in SETTINGS} | {ENV_PREFIX + "CONFIG", ENV_PREFIX + "DEBUG"}
        for key in env:
            if key.startswith(ENV_PREFIX) and key not in known_env:
                raise _unknown(key[len(ENV_PREFIX):].lower(), f"environment variable {key}")
        env_layer = {
            s.name: convert(s, env[s.env], f"environment variable {s.env}")
            for s in SETTINGS if s.env in env and env[s.env] != ""
        }
        flag_layer = {}
        for name, raw in (flags or {}).items():
            if name not in BY_NAME:
                raise _unknown(name, "flags")
            if raw is None or raw == "" or raw == []:
                continue
            flag_layer[name] = convert(BY_NAME[name], raw, f"flag --{name.replace('_', '-')}")
        for s in SETTINGS:
            value = Value(s.name, s.default(), "default")
            for source, layer in layers:
                if s.name in layer:
                    value = Value(s.name, layer[s.name], source)
            if s.name in env_layer:
                value = Value(s.name, env_layer[s.name], f"env {s.env}")
            if s.name in flag_layer:
                value = Value(s.name, flag_layer[s.name], "flag")
            self._values[s.name] = value

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name].value
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name: str) -> str:
        return self._values[name].source

    def values(self) -> list[Value]:
        return [self._values[s.name] for s in SETTINGS]

    def as_json(self) -> dict[str, dict[str, Any]]:
        def plain(v: Any) -> Any:
            return str(v) if isinstance(v, Path) else v

        return {v.name: {"value": plain(v.value), "source": v.source} for v in self.values()}
