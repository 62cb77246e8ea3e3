"""Tests for supervisor.policy.service: runc's refusals decoded off the output relay, with the
value the container asked for read through the Docker API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.config import load
from supervisor.logs import parse_dockerd_line
from supervisor.metrics import Metrics
from supervisor.policy.service import PolicyService
from supervisor.policy.spec import policy_from_config
from tests.unit.test_policy_explain import REAL_RLIMIT_LINE

pytestmark = pytest.mark.unit

CONTAINER = "cada1ec72d0015fe69996daeadf52630c909349824eec71001e9b1c00473b904"


def service(tmp_path: Path, host_config: Any) -> PolicyService:
    config = load(env={"DIND_SUPERVISOR_DOCKERD_DATA_ROOT": str(tmp_path / "no-data-root")})
    return PolicyService(config, Metrics(), policy=policy_from_config(config), plan=None,
                         under_init=False, host_config=host_config)


def run_with_line(part: PolicyService, line: str) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(part.run)
            part.observe_line(parse_dockerd_line(line))
            with anyio.fail_after(10):
                while part.runtime_errors == 0:  # noqa: ASYNC110 - the part's own counter
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_requested_value_comes_from_the_containers_host_config(tmp_path: Path) -> None:
    """The decoded event carries what the container asked for, from GET /containers/{id}/json
    (no hostconfig.json exists here), and /status keeps it as the last explanation."""
    asked: list[str] = []

    async def host_config(container_id: str) -> dict[str, Any]:
        asked.append(container_id)
        return {"Ulimits": [{"Name": "nproc", "Soft": 5, "Hard": 5},
                            {"Name": "nofile", "Soft": 30000, "Hard": 30000}]}

    part = service(tmp_path, host_config)
    with capture_logs() as logs:
        run_with_line(part, REAL_RLIMIT_LINE)
    assert asked == [CONTAINER]
    (event,) = [e for e in logs if e["event"] == "container_policy_refused"]
    assert event["requested"] == "30000:30000"
    assert "(30000:30000)" in event["message"]
    status = part.status()
    assert status["runtime_errors"] == 1
    assert status["last_runtime_error"]["requested"] == "30000:30000"
    assert status["placement"] in ("shell", "container", "systemd", "kubernetes")


def test_api_failure_falls_back_to_the_file_and_never_stops_the_part(tmp_path: Path) -> None:
    """The API refuses (container gone): the event still comes, requested unknown."""

    async def host_config(container_id: str) -> dict[str, Any]:
        raise RuntimeError("404 no such container")

    part = service(tmp_path, host_config)
    with capture_logs() as logs:
        run_with_line(part, REAL_RLIMIT_LINE)
    (event,) = [e for e in logs if e["event"] == "container_policy_refused"]
    assert event["requested"] is None
