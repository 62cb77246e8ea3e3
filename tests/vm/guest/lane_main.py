"""The VM lane's guest side: load the images, run every scenario once, write the results.

Started by the guest's vm-lane.service (tests/vm/guest_image.py installs it)
after docker.service, with the input disk mounted read-only at LANE_INPUT.
Each scenario runs under its own deadline (SIGALRM); whatever happens, the
results written so far are on the results disk (a raw disk holding one tar
archive, rewritten after every scenario), which the host reads after the
guest has powered off. The wrapper powers the guest off when this exits.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import tarfile
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from guestlib import INPUT, docker, poll, run, scaled
from scenarios import SCENARIOS, describe_failure

RESULTS_DEVICE = os.environ.get("LANE_RESULTS", "/dev/vdc")


class ScenarioTimeout(Exception):
    pass


class Results:
    """Every result so far, as one tar archive written over the raw results disk."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.files: dict[str, bytes] = {}

    def put(self, name: str, data: Any) -> None:
        self.files[name] = json.dumps(data, indent=1, default=str).encode()
        self.flush()

    def flush(self) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in self.files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
        with open(self.device, "r+b") as disk:
            disk.write(buffer.getvalue())
            disk.flush()
            os.fsync(disk.fileno())


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _alarm(_signum: int, _frame: object) -> None:
    raise ScenarioTimeout("the scenario ran past its deadline")


def setup(manifest: dict[str, Any]) -> dict[str, Any]:
    """docker.service answering, the images loaded: what every scenario starts from."""
    info: dict[str, Any] = {"uptime_at_start": _uptime()}
    started = time.monotonic()
    poll(lambda: run(["docker", "info", "-f", "{{.ServerVersion}}"], check=False,
                     timeout=30).returncode == 0,
         timeout=60, interval=1, what="the guest's docker.service")
    info["outer_dockerd"] = docker("info", "-f", "{{.ServerVersion}} {{.CgroupVersion}}"
                                   " {{.CgroupDriver}}").stdout.strip()
    info["kernel"] = os.uname().release
    loads = {}
    for tar in manifest["images"]:
        began = time.monotonic()
        docker("load", "-q", "-i", f"{INPUT}/{tar}", timeout=600)
        loads[tar] = time.monotonic() - began
    info["image_load_seconds"] = loads
    info["setup_seconds"] = time.monotonic() - started
    return info


def main() -> int:
    with open(f"{INPUT}/manifest.json") as f:
        manifest = json.load(f)
    results = Results(RESULTS_DEVICE)
    lane: dict[str, Any] = {"manifest": manifest, "finished": False, "order": []}
    results.put("lane.json", lane)
    signal.signal(signal.SIGALRM, _alarm)
    try:
        lane["setup"] = setup(manifest)
    except Exception as exc:  # any failure is the host's to report: every test then fails
        lane["setup_error"] = f"{describe_failure(exc)}\n{traceback.format_exc()}"
        results.put("lane.json", lane)
        return 1
    results.put("lane.json", lane)
    for entry in manifest["runs"]:
        name = entry["id"]
        print(f"lane: scenario {name} starting", flush=True)
        record: dict[str, Any] = {"name": name, "image": entry["image"], "completed": False}
        began = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, scaled(manifest["scenario_deadline"]))
        try:
            record["observations"] = SCENARIOS[entry["scenario"]](entry["image"])
            record["completed"] = True
        except Exception as exc:  # a failed scenario is reported; the next one still runs
            record["error"] = f"{describe_failure(exc)}\n{traceback.format_exc()}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        record["seconds"] = time.monotonic() - began
        print(f"lane: scenario {name} done in {record['seconds']:.0f} s"
              f" ({'completed' if record['completed'] else 'error'})", flush=True)
        results.put(f"{name}.json", record)
        lane["order"].append(name)
        results.put("lane.json", lane)
    lane["finished"] = True
    lane["uptime_at_end"] = _uptime()
    results.put("lane.json", lane)
    return 0


if __name__ == "__main__":
    sys.exit(main())
