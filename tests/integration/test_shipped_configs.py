"""The series configs lkbuild ships: exactly what their recipe makes, and what Docker needs."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from recipes import modrecipe
from recipes.intree import status
from tests.integration.kernels import DEBIAN_SOURCE, ROOT, config_body, lkbuild

pytestmark = pytest.mark.ci

SERIES = ROOT / "kernel" / "6.12.x"
CHECKER = Path("/usr/share/docker.io/contrib/check-config.sh")
# What no 6.12 config can have: MEMCG_SWAP is gone since 6.1 (part of MEMCG), AUFS_FS was
# never upstream, and the zfs lines are checks of the running machine, not of the config.
NEVER = {"CONFIG_MEMCG_SWAP", "CONFIG_AUFS_FS", "/dev/zfs", "zfs command", "zpool command"}


def test_the_shipped_configs_are_what_their_recipe_makes(kernel_cache, kver, tmp_path):
    run = lkbuild(kernel_cache, "kconfig", "--version", kver, "--source", str(DEBIAN_SOURCE),
                  "--regenerate", "--output", str(tmp_path), "--json")
    assert run.code == 0, run.err[-3000:]
    rows = run.json()
    assert sorted(Path(r["saved"]).name for r in rows) == ["config-aarch64", "config-x86_64"]
    for row in rows:
        made = Path(row["saved"])
        assert made.parent == tmp_path
        shipped = SERIES / made.name
        assert config_body(made.read_text()) == config_body(shipped.read_text()), \
            f"{shipped} is not what kernel/6.12.x/configs.yml makes: run inv kconfig --regenerate"
        assert row["builtin"] > 1000 and row["modules"] > 100, row  # a VM kernel, not tinyconfig
        values = re.findall(r"^(CONFIG_\w+)=(\w+)$", made.read_text(), re.M)
        assert row["builtin"] == sum(v == "y" for _, v in values)
        # which of the in-tree recipes' modules the config has, as kconfig --json says
        config = dict(values)
        assert row["in_tree_modules"] == {
            name: status(config, modrecipe.load(ROOT / "module" / name / "recipe.yml").in_tree)
            for name in ("openvswitch", "sctp", "wireguard")}


@pytest.mark.parametrize("name", ["config-aarch64", "config-x86_64"])
def test_dockers_checker_finds_nothing_missing_that_a_kernel_could_have(name):
    if not CHECKER.is_file():
        pytest.fail(f"{CHECKER} is missing: Debian's docker.io package has it")
    out = subprocess.run(["bash", str(CHECKER), str(SERIES / name)], capture_output=True,
                         text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NO_COLOR": "1"})
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    missing = {m.strip() for m in re.findall(r"^\s*-\s*(.+?):\s*missing", text, re.M)}
    assert "CONFIG_NAMESPACES" in text, text[:2000]  # the checker ran and read the config
    assert missing - NEVER == set(), f"{name}: Docker's checker says missing: " \
        f"{sorted(missing - NEVER)}"
