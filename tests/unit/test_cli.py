"""The task edge: every flag documented, and bad input is one line, a non-zero exit, no change."""
import inspect

import pytest
from invoke import Context, Exit

from recipes import cli
from recipes.cli import dev_tasks
from recipes.errors import UserError

pytestmark = pytest.mark.unit


def test_every_task_has_a_one_line_help_and_every_flag_is_documented():
    for name, t in cli.ns.tasks.items():
        doc = inspect.getdoc(t.body)
        assert doc and doc.splitlines()[0].endswith("."), name
        params = [p for p in inspect.signature(t.body).parameters if p != "c"]
        missing = [p for p in params if p not in t.help]
        assert not missing, f"{name}: flags without help: {missing}"


def test_lkbuild_errors_become_one_line_and_their_exit_code():
    @cli.edge
    def boom(c):
        raise UserError("bad thing\nsecond line", "do this")

    with pytest.raises(Exit) as info:
        boom(Context())
    assert info.value.code == 2
    assert info.value.message == "lkbuild: error: bad thing second line (do this)"


def test_unexpected_errors_still_give_one_line_and_no_traceback(capsys):
    @cli.edge
    def boom(c):
        raise RuntimeError("surprise")

    with pytest.raises(Exit) as info:
        boom(Context())
    assert info.value.code == 70 and "surprise" in info.value.message
    assert "Traceback" not in capsys.readouterr().err


def test_ctrl_c_is_exit_130():
    @cli.edge
    def boom(c):
        raise KeyboardInterrupt

    with pytest.raises(Exit) as info:
        boom(Context())
    assert info.value.code == 130


def _record_checks(monkeypatch, failing: str = "") -> list[str]:
    """What the test task runs, in order; the check named `failing` finds problems."""
    ran: list[str] = []

    def call(argv, cwd):
        assert cwd == cli.ROOT
        ran.append(argv[2])
        return 1 if argv[2] == failing else 0

    monkeypatch.setattr(dev_tasks.subprocess, "call", call)
    monkeypatch.setattr(dev_tasks.os, "spawnv", lambda mode, exe, args: ran.append(args[2]) or 0)
    return ran


@pytest.mark.parametrize("tier", [{"quick": True}, {}, {"full": True}])
def test_every_test_tier_runs_ruff_and_mypy_before_pytest(monkeypatch, tier):
    ran = _record_checks(monkeypatch)
    cli.test(Context(), **tier)
    assert ran == ["ruff", "mypy", "pytest"]


def test_a_code_check_that_finds_problems_fails_the_task_in_one_line(monkeypatch):
    ran = _record_checks(monkeypatch, failing="mypy")
    with pytest.raises(Exit) as info:
        cli.test(Context(), quick=True)
    assert ran == ["ruff", "mypy"]
    assert info.value.code == 1
    assert info.value.message == ("lkbuild: error: mypy found problems, listed above "
                                  "(the settings are in pyproject.toml)")


@pytest.mark.parametrize("argv,line", [
    (["kconfig", "--arch"], "lkbuild: error: flag --arch needed value and was not given one!"),
    (["build", "--build-image"],
     "lkbuild: error: flag --build-image needed value and was not given one!"),
])
def test_a_flag_without_its_value_is_named_as_typed(capsys, argv, line):
    with pytest.raises(SystemExit) as info:
        cli.LkbuildProgram(namespace=cli.ns, name="lkbuild", binary="lkbuild").run(
            ["lkbuild", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(line) and "<" not in err, err
