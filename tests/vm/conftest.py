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

import inspect
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
# The dind images the scenarios use, by Debian suite. bookworm's dockerd 20.10
# is the one that shows the AppArmor defect (dockerd 23+ checks for the parser).
SUITES = ("bookworm",)
# What the guest runs, in this order (tests/vm/guest/scenarios.py has one function
# each); systemd_unit last, as it replaces the guest's docker.service.
SCENARIOS = (
    "cgroup_v2_nesting", "cgroupns_host", "apparmor_securityfs", "policy_privileged",
    "docs_runtime_settings", "kill_recovery", "systemd_unit",
)
# Per scenario, in KVM seconds; multiplied by the accelerator's scale in the guest.
SCENARIO_DEADLINE = 75.0
LANE_DEADLINE_CAP = 2700.0  # whatever the sum, qemu is killed after 45 minutes


@dataclass
class Lane:
    accel: qemu.Accel
    results: dict[str, Any]
    outcome: qemu.RunOutcome
    timings: dict[str, Any] = field(default_factory=dict)

    def scenario(self, name: str) -> dict[str, Any]:
        """The observations of one scenario; a clear failure when it did not complete."""
        if name not in selected_scenarios():
            pytest.skip(f"{name} not in VM_LANE_SCENARIOS")
        lane = self.results.get("lane", {})
        if "setup_error" in lane:
            pytest.fail(f"the guest's setup failed:\n{lane['setup_error']}\n{self.serial_tail()}")
        record = self.results.get(name)
        if record is None:
            pytest.fail(f"scenario {name} has no result (guest exit {self.outcome.exit_code},"
                        f" {self.outcome.stderr}):\n{self.serial_tail()}")
        if not record.get("completed"):
            pytest.fail(f"scenario {name} did not complete in the guest:\n{record.get('error')}")
        return dict(record["observations"])

    def serial_tail(self, lines: int = 60) -> str:
        log = self.outcome.serial_log
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def selected_scenarios() -> list[str]:
    """All scenarios, or the comma-separated names in VM_LANE_SCENARIOS (for a quicker run)."""
    wanted = [n.strip() for n in os.environ.get("VM_LANE_SCENARIOS", "").split(",") if n.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    assert not unknown, f"VM_LANE_SCENARIOS names unknown scenarios: {sorted(unknown)}"
    return [n for n in SCENARIOS if n in wanted] if wanted else list(SCENARIOS)


def _images(work: Path) -> tuple[list[Path], dict[str, float], str]:
    """Build the dind image(s) in a sandboxed outer dockerd and `docker save` each one."""
    outer = Outer(work / "outer")
    tars: list[Path] = []
    seconds: dict[str, float] = {}
    takes_suite = "suite" in inspect.signature(e2e_image.build_image).parameters
    first_image = ""
    try:
        outer.start()
        for suite in SUITES:
            began = time.monotonic()
            if takes_suite:
                build: Any = e2e_image.build_image  # the suite-aware one, once it lands
                build(outer.docker, work / f"build-{suite}", suite=suite)
                tag = f"dind-supervisor:e2e-{suite}"
            else:  # today's tests/e2e: bookworm only, one tag
                assert suite == "bookworm", suite
                e2e_image.build_image(outer.docker, work / f"build-{suite}")
                tag = e2e_image.IMAGE
            tar = work / "input" / "images" / f"dind-{suite}.tar"
            tar.parent.mkdir(parents=True, exist_ok=True)
            outer.docker("save", "-o", str(tar), tag, timeout=600)
            tars.append(tar)
            seconds[suite] = time.monotonic() - began
            first_image = first_image or tag
    finally:
        outer.stop()
    return tars, seconds, first_image


def _input_folder(folder: Path, image_tars: list[Path], image: str, accel: qemu.Accel,
                  scenarios: list[str]) -> None:
    shutil.copytree(GUEST_CODE, folder / "guest",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "supervisor", folder / "src" / "supervisor",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "systemd").mkdir()
    shutil.copy2(REPO / "systemd" / "dind-supervisor.service", folder / "systemd")
    busybox_rootfs_tar(folder / "images")
    manifest = {
        "image": image,
        "images": [str(t.relative_to(folder)) for t in image_tars],
        "scenarios": scenarios,
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
    names = selected_scenarios()
    work = tmp_path_factory.mktemp("vm")
    timings: dict[str, Any] = {}
    began = time.monotonic()
    guest = guest_image.build_guest()
    timings["guest_build_seconds"] = round(guest.build_seconds, 1)
    timings["guest_cached"] = guest.cached
    tars, image_seconds, image = _images(work)
    timings["dind_image_seconds"] = {k: round(v, 1) for k, v in image_seconds.items()}
    accel_began = time.monotonic()
    accel = qemu.choose_accel(guest.kernel, work)
    timings["accel_probe_seconds"] = round(time.monotonic() - accel_began, 1)
    timings["accel"] = accel.name
    timings["accel_reason"] = accel.reason
    folder = work / "input"
    _input_folder(folder, tars, image, accel, names)
    disks_began = time.monotonic()
    input_disk = qemu.make_input_disk(folder, work / "input.img")
    results_disk = qemu.make_results_disk(work / "results.img")
    shutil.rmtree(folder / "images")  # the disk holds them now
    timings["disks_seconds"] = round(time.monotonic() - disks_began, 1)
    deadline = min(LANE_DEADLINE_CAP, 300 + len(names) * SCENARIO_DEADLINE * accel.scale)
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
        name: round(outcome.results[name]["seconds"], 1)
        for name in names if name in outcome.results
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
