"""The VM lane's session: build (cached), boot once, run every scenario, read the results.

One session fixture does it all, because the guest boots once for every
scenario: it builds the guest disk (tests/vm/guest_image.py, cached), the
dind image(s) in a sandboxed outer dockerd on the host (tests/e2e), saves
them to the input disk with this checkout's package and the guest-side
scenarios, picks KVM or TCG, boots, and reads the results disk after the
guest powered off. Each test in test_vm.py then asserts on one scenario's
observations. Timings go to ``<basetemp>/vm-timings.json`` and the summary.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import image as e2e_image
from tests.e2e.outer import Outer
from tests.integration.sandbox import busybox_rootfs_tar
from tests.vm import guest_image, qemu

REPO = Path(__file__).resolve().parents[2]
GUEST_CODE = Path(__file__).with_name("guest")
# What the guest runs, in this order: (scenario, suite of the dind image). Each
# scenario is a function in tests/vm/guest/scenarios.py. Every scenario runs
# with the bookworm image: its dockerd 20.10 is the one that shows the AppArmor
# defect (dockerd 23+ checks for apparmor_parser). The trixie image (dockerd
# 26.1) repeats the nesting scenario and shows that 26.1 is not affected by
# securityfs. systemd_unit is last: it replaces the guest's docker.service.
RUNS: tuple[tuple[str, str], ...] = (
    ("cgroup_v2_nesting", "bookworm"),
    ("cgroupns_host", "bookworm"),
    ("apparmor_securityfs", "bookworm"),
    ("policy_privileged", "bookworm"),
    ("docs_runtime_settings", "bookworm"),
    ("kill_recovery", "bookworm"),
    ("cgroup_v2_nesting", "trixie"),
    ("apparmor_securityfs", "trixie"),
    ("systemd_unit", "bookworm"),
)
# Per scenario, in KVM seconds; multiplied by the accelerator's scale in the guest.
SCENARIO_DEADLINE = 75.0
LANE_DEADLINE_CAP = 2700.0  # whatever the sum, qemu is killed after 45 minutes


def run_id(scenario: str, suite: str) -> str:
    return f"{scenario}-{suite}"


@dataclass
class Lane:
    accel: qemu.Accel
    results: dict[str, Any]
    outcome: qemu.RunOutcome
    timings: dict[str, Any] = field(default_factory=dict)

    def scenario(self, name: str, suite: str = "bookworm") -> dict[str, Any]:
        """The observations of one run; a clear failure when it did not complete."""
        key = run_id(name, suite)
        if key not in selected_runs():
            pytest.skip(f"{key} not in VM_LANE_SCENARIOS")
        lane = self.results.get("lane", {})
        if "setup_error" in lane:
            pytest.fail(f"the guest's setup failed:\n{lane['setup_error']}\n{self.serial_tail()}")
        record = self.results.get(key)
        if record is None:
            pytest.fail(f"{key} has no result (guest exit {self.outcome.exit_code},"
                        f" {self.outcome.stderr}):\n{self.serial_tail()}")
        if not record.get("completed"):
            pytest.fail(f"{key} did not complete in the guest:\n{record.get('error')}")
        return dict(record["observations"])

    def serial_tail(self, lines: int = 60) -> str:
        log = self.outcome.serial_log
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def selected_runs() -> list[str]:
    """Every run's id, or those named in VM_LANE_SCENARIOS (comma-separated ids or
    scenario names, e.g. ``cgroup_v2_nesting`` or ``cgroup_v2_nesting-trixie``)."""
    ids = [run_id(*run) for run in RUNS]
    wanted = [n.strip() for n in os.environ.get("VM_LANE_SCENARIOS", "").split(",") if n.strip()]
    if not wanted:
        return ids
    chosen = [i for (name, suite), i in zip(RUNS, ids, strict=True)
              if i in wanted or name in wanted]
    unknown = [w for w in wanted if w not in ids and w not in {name for name, _ in RUNS}]
    assert not unknown, f"VM_LANE_SCENARIOS names unknown runs: {unknown}"
    return chosen


def _images(work: Path, suites: list[str]) -> tuple[dict[str, Path], dict[str, float]]:
    """Build each suite's dind image in a sandboxed outer dockerd and `docker save` it."""
    outer = Outer(work / "outer")
    tars: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    try:
        outer.start()
        for suite in suites:
            began = time.monotonic()
            built = e2e_image.build_image(outer.docker, work / f"build-{suite}", suite=suite)
            tar = work / "input" / "images" / f"dind-{suite}.tar"
            tar.parent.mkdir(parents=True, exist_ok=True)
            outer.docker("save", "-o", str(tar), built.image, timeout=600)
            tars[suite] = tar
            seconds[suite] = time.monotonic() - began
            seconds[f"{suite}_base"] = built.base_seconds  # debootstrap when not cached
    finally:
        outer.stop()
    return tars, seconds


def _input_folder(folder: Path, image_tars: dict[str, Path], accel: qemu.Accel,
                  runs: list[str]) -> None:
    shutil.copytree(GUEST_CODE, folder / "guest",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "supervisor", folder / "src" / "supervisor",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "systemd").mkdir()
    shutil.copy2(REPO / "systemd" / "dind-supervisor.service", folder / "systemd")
    busybox_rootfs_tar(folder / "images")
    manifest = {
        "images": [str(t.relative_to(folder)) for t in image_tars.values()],
        "runs": [
            {"id": run_id(name, suite), "scenario": name,
             "image": e2e_image.suite_named(suite).image}
            for name, suite in RUNS if run_id(name, suite) in runs
        ],
        "scenario_deadline": SCENARIO_DEADLINE,
        "accel": accel.name,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (folder / "lane.env").write_text(f"LANE_SCALE={accel.scale}\n")


@pytest.fixture(scope="session")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Lane:
    """Build, boot once, run every scenario; the results for the tests to assert on."""
    if os.geteuid() != 0:
        pytest.skip("the VM lane needs root (debootstrap, the outer dockerd)")
    missing = qemu.tools_missing()
    assert not missing, f"missing {missing}: scripts/setup.sh installs them"
    runs = selected_runs()
    suites = sorted({suite for name, suite in RUNS if run_id(name, suite) in runs})
    work = tmp_path_factory.mktemp("vm")
    timings: dict[str, Any] = {}
    began = time.monotonic()
    guest = guest_image.build_guest()
    timings["guest_build_seconds"] = round(guest.build_seconds, 1)
    timings["guest_cached"] = guest.cached
    tars, image_seconds = _images(work, suites)
    timings["dind_image_seconds"] = {k: round(v, 1) for k, v in image_seconds.items()}
    accel_began = time.monotonic()
    accel = qemu.choose_accel(guest.kernel, work)
    timings["accel_probe_seconds"] = round(time.monotonic() - accel_began, 1)
    timings["accel"] = accel.name
    timings["accel_reason"] = accel.reason
    folder = work / "input"
    _input_folder(folder, tars, accel, runs)
    disks_began = time.monotonic()
    input_disk = qemu.make_input_disk(folder, work / "input.img")
    results_disk = qemu.make_results_disk(work / "results.img")
    shutil.rmtree(folder / "images")  # the disk holds them now
    timings["disks_seconds"] = round(time.monotonic() - disks_began, 1)
    deadline = min(LANE_DEADLINE_CAP, 300 + len(runs) * SCENARIO_DEADLINE * accel.scale)
    try:
        outcome = qemu.boot(
            kernel=guest.kernel, initrd=guest.initrd, root_disk=guest.root_disk,
            input_disk=input_disk, results_disk=results_disk, accel=accel,
            serial_log=work / "serial.log", deadline=deadline,
        )
    finally:
        input_disk.unlink(missing_ok=True)
    timings["vm_seconds"] = round(outcome.seconds, 1)
    lane_info = outcome.results.get("lane", {})
    setup = lane_info.get("setup", {})
    timings["boot_seconds"] = setup.get("uptime_at_start")
    timings["image_load_seconds"] = setup.get("image_load_seconds")
    timings["scenario_seconds"] = {
        key: round(outcome.results[key]["seconds"], 1) for key in runs if key in outcome.results
    }
    timings["lane_seconds"] = round(time.monotonic() - began, 1)
    (work.parent / "vm-timings.json").write_text(json.dumps(timings, indent=1))
    _SUMMARY.append(f"VM lane: {accel.name} ({accel.reason}); " + json.dumps(timings))
    return Lane(accel=accel, results=outcome.results, outcome=outcome, timings=timings)


_SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SUMMARY:
        terminalreporter.write_sep("=", "vm lane")
        for line in _SUMMARY:
            terminalreporter.write_line(line)
