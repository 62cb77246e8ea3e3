"""What each process of ours imports: resident memory and time to dockerd's spawn depend on it.

Each check runs in a fresh interpreter, since this test session has long
since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.sandbox import REPO


def loaded_after(statement: str) -> set[str]:
    """Top-level packages in sys.modules after ``statement``, in a fresh interpreter."""
    code = f"{statement}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=REPO)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize("module", ["typing", "dataclasses", "inspect", "argparse"])
def test_pid1_stays_small(module: str) -> None:
    """PID 1 lives on after the fork: what it imports stays resident there (and in the agent's
    RSS, counted twice)."""
    loaded = loaded_after("import supervisor.entry, supervisor.init")
    assert module not in loaded


def test_the_agent_never_loads_cryptography() -> None:
    """The agent's modules, TLS part included, leave cryptography to the worker process."""
    loaded = loaded_after("import supervisor.run, supervisor.app, supervisor.tls.service")
    assert "cryptography" not in loaded


@pytest.mark.parametrize("package", ["cryptography", "anyio", "structlog", "aiohttp",
                                     "prometheus_client", "aiodocker"])
def test_what_precedes_dockerds_spawn_is_light(package: str) -> None:
    """The command line, the configuration and the launch load no heavy package."""
    loaded = loaded_after("import supervisor.entry, supervisor.init, supervisor.cli,"
                          " supervisor.run")
    assert package not in loaded
