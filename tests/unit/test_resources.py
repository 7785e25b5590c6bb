"""The jobs model, free space and credential helper lookup: pure logic and files."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from recipes import resources
from recipes.errors import UserError
from recipes.resources import (
    MEMORY_PER_JOB,
    MEMORY_RESERVE,
    Check,
    GiB,
    credential_helpers,
    find_helper,
    jobs_for,
    memory_needed,
)
from recipes.settings import Settings

pytestmark = pytest.mark.unit


def test_the_logs_7_75_gib_8_cpu_vm_gets_at_most_3_jobs() -> None:
    assert 1 <= jobs_for(8, int(7.75 * GiB)) <= 3


def test_the_logs_8_jobs_need_more_than_the_vm_had() -> None:
    assert memory_needed(8) > 7.75 * GiB


def test_jobs_never_exceed_cpus() -> None:
    assert jobs_for(2, 24 * GiB) == 2
    assert jobs_for(16, 1024 * GiB) == 16


def test_jobs_never_drop_below_one() -> None:
    assert jobs_for(8, 512 * 1024 ** 2) == 1
    assert jobs_for(8, 0) == 1
    assert jobs_for(0, 64 * GiB) == 1


def test_memory_needed_is_the_inverse_of_jobs_for() -> None:
    for jobs in range(1, 33):
        assert jobs_for(64, memory_needed(jobs)) == jobs
        assert jobs_for(64, memory_needed(jobs) - 1) == max(1, jobs - 1)


def test_model_constants_are_positive_and_documented() -> None:
    assert MEMORY_RESERVE > 0 and MEMORY_PER_JOB > 0
    assert "7.75" in (resources.__doc__ or "") + Path(resources.__file__).read_text()


def test_free_bytes_measures_the_nearest_existing_parent(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet" / "there"
    assert resources.free_bytes(missing) == resources.free_bytes(tmp_path) > 0


def write_config(config: Path, data: dict) -> Path:
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.json").write_text(json.dumps(data))
    return config


def test_credential_helpers_come_from_creds_store_and_cred_helpers(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c", {"credsStore": "desktop", "credHelpers": {
        "gcr.io": "gcloud", "eu.gcr.io": "gcloud", "x.example": "desktop"}})
    assert credential_helpers(config) == ["desktop", "gcloud"]


def test_no_config_means_no_helpers(tmp_path: Path) -> None:
    assert credential_helpers(tmp_path / "absent") == []
    assert credential_helpers(write_config(tmp_path / "c", {"auths": {}})) == []


def test_broken_config_json_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(UserError):
        credential_helpers(tmp_path)


def fake_helper(directory: Path, name: str = "desktop") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_helper_on_path_needs_no_fix(tmp_path: Path) -> None:
    helper = fake_helper(tmp_path / "bin")
    found = find_helper("desktop", str(tmp_path / "bin"), [])
    assert found.on_path and found.path == helper and found.fix == ""


def test_helper_only_in_a_known_dir_gets_the_export_path_fix(tmp_path: Path) -> None:
    """The log's SSH failure: the helper is installed but the session's PATH lacks its dir."""
    app_bin = tmp_path / "Docker.app" / "Contents" / "Resources" / "bin"
    fake_helper(app_bin)
    found = find_helper("desktop", os.pathsep.join([str(tmp_path / "empty"), "/nonexistent"]),
                        [tmp_path / "elsewhere", app_bin])
    assert not found.on_path and found.path == app_bin / "docker-credential-desktop"
    assert found.fix == f'export PATH="{app_bin}:$PATH"'


def test_a_non_executable_file_is_not_a_helper(tmp_path: Path) -> None:
    (tmp_path / "docker-credential-desktop").write_text("")
    assert find_helper("desktop", "", [tmp_path]).path is None


def test_helper_found_nowhere_says_which_and_how(tmp_path: Path) -> None:
    found = find_helper("desktop", str(tmp_path), [tmp_path])
    assert found.path is None
    assert "docker-credential-desktop" in found.fix and "credsStore" in found.fix


def test_credentials_check_warns_with_the_fix_when_lkbuild_can_use_the_helper(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "c", {"credsStore": "desktop"})
    fake_helper(config / "bin")
    check = resources.check_credentials({"DOCKER_CONFIG": str(config), "PATH": "/nonexistent"})
    assert (check.status, check.blocker) == ("warn", False)
    assert "lkbuild uses it from there" in check.detail
    assert check.fix == f'export PATH="{config / "bin"}:$PATH"'


def test_a_helper_off_path_is_put_on_path_for_lkbuild_and_its_children(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c", {"credsStore": "desktop", "credHelpers": {
        "ghcr.io": "absent"}})
    helper = fake_helper(config / "bin")
    env = {"DOCKER_CONFIG": str(config), "PATH": "/usr/bin"}
    assert resources.adopt_helpers(env) == [config / "bin"]
    assert env["PATH"] == f"{config / 'bin'}{os.pathsep}/usr/bin"
    assert find_helper("desktop", env["PATH"]).path == helper
    assert resources.adopt_helpers(env) == []  # on PATH now: nothing more to add
    (config / "config.json").write_text("{")
    assert resources.adopt_helpers({"DOCKER_CONFIG": str(config), "PATH": ""}) == []


def test_credentials_check_is_ok_when_none_are_configured(tmp_path: Path) -> None:
    check = resources.check_credentials({"DOCKER_CONFIG": str(tmp_path), "PATH": ""})
    assert (check.status, check.detail) == ("ok", "none configured")


def test_check_as_json_has_the_documented_fields() -> None:
    data = Check("engine", "ok", "context default", "", True).as_json()
    assert {"name", "status", "detail", "fix", "blocker"} <= set(data)
    json.dumps(data)


def test_qemu_check_warns_with_an_install_command(tmp_path: Path) -> None:
    check = resources.check_qemu(str(tmp_path))
    assert check.status == "warn" and not check.blocker
    assert "qemu" in check.fix and "qemu-system-aarch64" in check.detail


def test_a_measured_peak_sizes_jobs_with_a_margin_in_whole_steps() -> None:
    from recipes.resources import MEASURED_STEP, JobModel

    model = JobModel.measured(300 * 1024 ** 2)  # 375 MiB with the margin -> 384 MiB
    assert model.per_job == 6 * MEASURED_STEP and model.reserve == GiB
    assert JobModel.measured(300 * 1024 ** 2 + 4096).per_job == model.per_job
    assert JobModel.measured(25 * 1024 ** 2).per_job == 4 * MEASURED_STEP  # a no-op rebuild
    assert jobs_for(2, 4 * GiB, model) == 2  # the small config on a 4 GiB builder
    assert jobs_for(2, 4 * GiB) == 1  # the cautious default would take one
    assert jobs_for(64, memory_needed(5, model), model) == 5
    assert "measured" in model.describe() and "default" in JobModel().describe()


def test_the_largest_peak_is_kept_per_key(tmp_path: Path) -> None:
    from recipes.resources import DEFAULT_MODEL, model_for, remember_peak

    assert model_for(tmp_path, "k") == DEFAULT_MODEL
    remember_peak(tmp_path, "k", 500 * 1024 ** 2, 2)
    remember_peak(tmp_path, "k", 100 * 1024 ** 2, 2)  # an incremental rebuild
    assert model_for(tmp_path, "k").peak == 500 * 1024 ** 2
    assert model_for(tmp_path, "other") == DEFAULT_MODEL
    (tmp_path / "jobs" / "bad.json").write_text("{not json")
    assert model_for(tmp_path, "bad") == DEFAULT_MODEL


def _jobs_sh(tmp_path: Path, jobs: int, auto: int, mem_mib: int, cgroup: str | None,
             v2: bool = False) -> tuple[int, str]:
    import subprocess

    (tmp_path / "meminfo").write_text(f"MemTotal:       {mem_mib * 1024} kB\n")
    root = tmp_path / "cg"
    shutil.rmtree(root, ignore_errors=True)
    if cgroup is not None:
        if v2:
            root.mkdir()
            (root / "memory.max").write_text(cgroup + "\n")
        else:
            (root / "memory").mkdir(parents=True)
            (root / "memory" / "memory.stat").write_text(
                f"cache 0\nhierarchical_memory_limit {cgroup}\n")
    script = Path(__file__).parents[2] / "kernel" / "scripts" / "jobs.sh"
    out = subprocess.run(["sh", str(script), str(jobs), str(auto), "1024", "512"],
                         capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "LKBUILD_MEMINFO": str(tmp_path / "meminfo"),
                              "LKBUILD_CGROUP_ROOT": str(root)})
    return int(out.stdout), out.stderr


def test_the_builder_lowers_automatic_jobs_to_its_own_memory_limit(tmp_path: Path) -> None:
    unlimited = "9223372036854771712"
    assert _jobs_sh(tmp_path, 2, 1, 24000, unlimited) == \
        (2, "lkbuild: builder memory: MemTotal 24000 MiB, room for -j44\n")
    jobs, said = _jobs_sh(tmp_path, 8, 1, 24000, str(2 * GiB))
    assert jobs == 2 and "cgroup limit 2048 MiB) allows -j2: using it" in said
    jobs, said = _jobs_sh(tmp_path, 8, 0, 24000, str(2 * GiB))  # asked for: kept, and said
    assert jobs == 8 and "-j8 is more than the builder's memory (cgroup limit 2048 MiB) " \
        "allows -j2" in said
    jobs, said = _jobs_sh(tmp_path, 4, 1, 2048, None)  # no cgroup: the VM's MemTotal
    assert jobs == 2 and "MemTotal 2048 MiB" in said
    assert _jobs_sh(tmp_path, 4, 1, 24000, str(GiB // 2))[0] == 1  # never below one
    assert _jobs_sh(tmp_path, 8, 1, 24000, str(2 * GiB), v2=True)[0] == 2
    assert _jobs_sh(tmp_path, 8, 1, 24000, "max", v2=True)[0] == 8


def disk_image(tmp_path: Path, limit: int, used: int = 0) -> Path:
    """A sparse Docker.raw: `limit` bytes long, `used` of them written."""
    path = tmp_path / "Docker.raw"
    with path.open("wb") as fh:
        fh.write(b"\1" * used)
        fh.truncate(limit)
    return path


def image_settings(path: Path, min_free_gb: int = 1) -> Settings:
    return Settings(flags={"desktop_disk_image": str(path), "min_free_gb": min_free_gb})


def test_a_docker_raw_that_can_outgrow_the_mac_disk_is_a_warning_with_a_size_to_set(
        tmp_path: Path) -> None:
    free = resources.free_bytes(tmp_path)
    path = disk_image(tmp_path, free + 200 * resources.GB, used=1024 * 1024)
    check = resources.check_disk_image(image_settings(path), None)
    assert check is not None and check.status == "warn" and not check.blocker
    assert check.data["allocated"] >= 1024 * 1024 and check.data["limit"] == path.stat().st_size
    assert "Disk image size to at most" in check.fix and "input/output error" in check.fix


def test_a_mac_disk_below_what_a_build_needs_fails_the_disk_image_check(tmp_path: Path) -> None:
    free_gb = resources.free_bytes(tmp_path) // resources.GB
    path = disk_image(tmp_path, 1024 * 1024)
    check = resources.check_disk_image(image_settings(path, int(free_gb) + 10), None)
    assert check is not None and check.status == "fail" and check.blocker
    assert "free space on the Mac" in check.fix


def test_a_docker_raw_that_fits_the_mac_disk_is_ok(tmp_path: Path) -> None:
    check = resources.check_disk_image(image_settings(disk_image(tmp_path, 4096)), None)
    assert check is not None and check.status == "ok"


def test_no_docker_raw_and_no_docker_desktop_means_no_disk_image_line(tmp_path: Path) -> None:
    assert resources.check_disk_image(image_settings(tmp_path / "none.raw"), None) is None


def test_the_disk_a_build_measured_is_what_its_next_build_is_checked_against(tmp_path,
                                                                             monkeypatch):
    from recipes.resources import GB, disk_needed, measured_disk, remember_peak
    from recipes.settings import Settings

    monkeypatch.delenv("LKBUILD_MIN_FREE_GB", raising=False)
    s = Settings(flags={"cache_dir": tmp_path})
    assert disk_needed(s, "k") == (30 * GB, "30 GB")  # never measured: the default
    remember_peak(tmp_path, "k", 0, 2, disk=8 * GB)
    remember_peak(tmp_path, "k", 0, 2, disk=1 * GB)  # an incremental rebuild holds no less
    assert measured_disk(tmp_path, "k") == 8 * GB
    need, how = disk_needed(s, "k")
    assert need == 12 * GB and how.startswith("about 12.0 GB (measured")
    monkeypatch.setenv("LKBUILD_MIN_FREE_GB", "5")  # the user's own figure wins
    assert disk_needed(Settings(flags={"cache_dir": tmp_path}), "k") == (5 * GB, "5 GB")


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /var/lib/docker rw,relatime shared:9 - xfs /dev/sdb1 rw
31 30 0:26 / /var/lib/docker/fuse-overlayfs/x/merged rw - fuse.fuse-overlayfs fuse rw
40 22 0:30 / /srv/my\\040data rw - zfs tank/data rw
"""


def test_the_filesystem_of_a_path_is_its_longest_mount_point() -> None:
    assert resources.filesystem_of("/var/lib/docker", MOUNTINFO) == "xfs"
    assert resources.filesystem_of("/var/lib/dockerish", MOUNTINFO) == "ext4"
    assert resources.filesystem_of("/srv/my data/docker", MOUNTINFO) == "zfs"
    assert resources.filesystem_of("/x", "") == ""


def test_a_slow_storage_driver_is_named_with_its_cost_and_the_fix_that_would_work() -> None:
    check = resources.storage_check("fuse-overlayfs", "/var/lib/docker", "ext4")
    assert check.status == "warn" and not check.blocker
    assert "2.75 s" in check.detail
    assert '"storage-driver": "overlay2"' in check.fix and "on ext4" in check.fix
    on_zfs = resources.storage_check("vfs", "/srv/docker", "zfs")
    assert on_zfs.status == "warn" and "overlay2 does not run" in on_zfs.fix
    assert resources.storage_check("overlay2", "/var/lib/docker", "ext4").status == "ok"


def test_a_build_larger_than_two_gib_records_its_disk_as_a_whole_number(tmp_path: Path) -> None:
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    du = bin_dir / "du"  # a full arm64 build: its build dir and unpacked source, in KiB
    du.write_text("#!/bin/sh\nprintf '2500000\\t/cache/kbuild/k\\n1500000\\t/cache/src/k\\n'\n")
    du.chmod(0o755)
    mawk = shutil.which("mawk")  # what the build image's awk is
    if mawk:
        (bin_dir / "awk").symlink_to(mawk)
    script = Path(__file__).parents[2] / "kernel" / "scripts" / "disk.sh"
    out = subprocess.run(["sh", str(script), "/cache/kbuild/k", "/cache/src/k"],
                         capture_output=True, text=True, check=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"}).stdout
    assert out == f"{4_000_000 * 1024}\n"
    assert out.strip().isdigit()  # what remember_jobs takes
