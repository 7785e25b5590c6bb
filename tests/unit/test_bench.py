"""The goals table `inv bench` prints: every figure read from its benchmark's JSON."""
from __future__ import annotations

import pytest

from bench.run import GOALS, table

pytestmark = pytest.mark.unit


def test_each_goal_is_read_from_its_benchmark_and_compared_its_way():
    found = {"kernel_build": {"ratios": {"cold_over_bare_make": 1.2, "rebuild_over_cold": 0.1},
                              "seconds": {"noop": 0.3}},
             "jobs": {"oom_kills_auto": 0, "auto_over_best_fixed": 1.01},
             "remote": {"transfer": {"loopback": {"transfer_vs_openssh_cat": 0.9,
                                                  "cold_vs_hand": 0.97,
                                                  "one_layer_vs_hand": 0.5}}}}
    rows = {r["figure"]: r for r in table(found)}
    assert len(rows) == len(GOALS)
    assert rows["cold buildplainkernel / bare make -jN"]["met"] is False
    assert rows["rebuild after a one-symbol config change / cold"]["met"] is True
    assert rows["OOM kills, automatic jobs on a capped builder"]["met"] is True
    assert rows["cold image transfer / ssh docker save | docker load, loopback"]["met"] is True
    assert rows["one changed layer / ssh docker save | docker load, loopback"]["met"] is False
    wire = rows["image transfer / raw ssh cat, loopback (the wire, for reference)"]
    assert (wire["measured"], wire["goal"], wire["met"]) == (0.9, "-", None)
    missing = rows["buildmodule hello - bare make M= (s)"]
    assert missing["measured"] is None and missing["met"] is None
