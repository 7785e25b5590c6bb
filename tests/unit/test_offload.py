"""Where a build runs: the setting and flag, and the decision from each place's preflight."""
import pytest

from recipes import offload
from recipes.errors import InfraError, UserError
from recipes.settings import Settings

pytestmark = pytest.mark.unit


def test_where_is_auto_with_build_hosts_and_local_without():
    assert offload.where_of(Settings(flags={}), "") == "local"
    hosts = Settings(flags={"build_hosts": ["me@big", "me@other:2222"]})
    assert offload.where_of(hosts, "") == "auto"
    assert offload.where_of(hosts, "local") == "local"
    assert offload.where_of(hosts, "me@big:22") == "me@big:22"


@pytest.mark.parametrize("flags,where,words", [
    ({}, "auto", ["--where auto needs build hosts", "build_hosts"]),
    ({}, "bad host!", ["bad host 'bad host!'"]),
    ({"build_hosts": ["ok@host", "not a host"]}, "", ["bad host 'not a host'"]),
])
def test_a_bad_where_or_build_host_is_refused_before_anything_runs(flags, where, words):
    with pytest.raises(UserError) as err:
        offload.where_of(Settings(flags=flags), where)
    for word in words:
        assert word in err.value.line()


def test_auto_stays_here_when_this_engine_fits(monkeypatch):
    monkeypatch.setattr(offload, "local_misfit", lambda settings, p: "")
    monkeypatch.setattr(offload, "host_misfit", lambda *a: pytest.fail("no host is asked"))
    s = Settings(flags={"build_hosts": ["me@big"]})
    assert offload.decide(s, None, "auto") == offload.Decision("", "")


def test_auto_takes_the_first_host_that_fits_and_says_why(monkeypatch):
    monkeypatch.setattr(offload, "local_misfit", lambda settings, p: "only 9.2 GB free in X")
    lacks = {"me@small": "me@small: 2.0 GB free in the work dir", "me@big": ""}
    asked = []
    monkeypatch.setattr(offload, "host_misfit",
                        lambda settings, p, spec: asked.append(spec) or lacks[spec])
    s = Settings(flags={"build_hosts": ["me@small", "me@big"]})
    decision = offload.decide(s, None, "auto")
    assert decision.host == "me@big" and asked == ["me@small", "me@big"]
    assert decision.reason == "this engine cannot fit the build (only 9.2 GB free in X)"


def test_no_place_that_fits_is_one_line_naming_what_each_lacked(monkeypatch):
    monkeypatch.setattr(offload, "local_misfit", lambda settings, p: "only 9.2 GB free in X")
    monkeypatch.setattr(offload, "host_misfit",
                        lambda settings, p, spec: "cannot connect to big: connection refused")
    s = Settings(flags={"build_hosts": ["me@big"]})
    with pytest.raises(InfraError) as err:
        offload.decide(s, None, "auto")
    line = err.value.line()
    assert "no place fits this build: this engine: only 9.2 GB free in X; me@big: cannot " \
           "connect to big: connection refused" in line
    assert "--where local" in line


def test_a_named_host_or_local_is_not_second_guessed(monkeypatch):
    monkeypatch.setattr(offload, "local_misfit", lambda *a: pytest.fail("no preflight"))
    s = Settings(flags={})
    assert offload.decide(s, None, "local") == offload.Decision("", "")
    assert offload.decide(s, None, "me@big") == offload.Decision("me@big", "--where me@big")
