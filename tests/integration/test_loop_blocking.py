"""Nothing the agent does blocks its event loop for more than 20 ms.

The real agent runs as PID 1 of a sandbox under ``python -m tests.harness``
(blockbuster for blocking calls, a CPU-time probe for slow callbacks; see
``tests.harness.loopcheck.py``) through the three moments the contract names:
start-up with TLS, a certificate rotation (dockerd restarted on its held
sockets), and scrapes of /metrics and /status with 200 containers in dockerd.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.loopcheck import read_records
from tests.integration.conftest import import_busybox
from tests.integration.sandbox import PYTHON, Sandbox, poll
from tests.integration.test_tls import TLS_ENV, sample, scrape, wait_tls

CONTAINERS = 200
RUNNING = 10


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("docker")
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._path)
        self.sock = sock


def _api(box: Sandbox, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    connection = _UnixConnection(box.socket)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        assert response.status < 300, (method, path, response.status, data[:300])
        return json.loads(data) if data else None
    finally:
        connection.close()


def _problems(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_records(str(path)) if r["kind"] != "installed"]


def test_no_call_blocks_the_loop_at_start_rotation_and_scrapes_of_200_containers(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path, tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Start-up, one rotation and scrapes at 200 containers: no record from either detector."""
    out = tmp_path / "loopcheck.jsonl"
    box = sandboxes(
        root=tmp_path / "box", env={**TLS_ENV, "LOOPCHECK_OUT": str(out)},
        command=[PYTHON, "-m", "tests.harness", "run", "--log-level", "debug",
                 "--tls-server-lifetime", "40s", "--", "--bridge=none"],
    )
    wait_tls(box)
    installed = [r for r in read_records(str(out)) if r["kind"] == "installed"]
    assert installed, "the detectors were not installed in the agent"
    assert _problems(out) == [], "during start-up"

    # 200 containers, 10 of them running: the container table, the collectors and
    # /status all grow with them.
    import_busybox(box, busybox_tar)
    for number in range(CONTAINERS):
        created = _api(box, "POST", f"/containers/create?name=c{number}",
                       {"Image": "busybox:test", "Cmd": ["sleep", "600"],
                        "HostConfig": {"NetworkMode": "none"}})
        if number < RUNNING:
            _api(box, "POST", f"/containers/{created['Id']}/start")
    poll(lambda: sum((box.status()["containers"] or {}).values()) >= CONTAINERS,
         timeout=30, interval=0.2, what=f"{CONTAINERS} containers in /status")
    for _ in range(20):
        samples = scrape(box)
        assert box.status()["dockerd"]["state"] == "running"
    assert _problems(out) == [], "during scrapes at 200 containers"

    # A rotation: the renewal in a worker, dockerd restarted on its held sockets.
    poll(lambda: sample(scrape(box), "dind_tls_rotations_total", cert="server") >= 1
         and box.status()["dockerd"]["state"] == "running",
         timeout=60, interval=0.5, what="a server rotation and dockerd running again")
    wait_tls(box)
    samples = scrape(box)
    assert sample(samples, "dind_dockerd_restarts_total", reason="tls_rotation") >= 1
    problems = _problems(out)
    record_property("loop_blocking_records", len(problems))
    assert problems == [], json.dumps(problems, indent=1)[:6000]
    assert box.agent_pid() is not None
