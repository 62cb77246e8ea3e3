"""The detectors the loop-blocking integration test relies on catch what they claim to."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.harness.loopcheck import read_records

REPO = Path(__file__).resolve().parents[2]

_AGENT_LIKE = '''
import os, time
import anyio

async def blocking_read() -> None:
    r, w = os.pipe()
    os.write(w, b"x")  # a blocking descriptor, on the loop: recorded, raised
    os.read(r, 1)  # not reached

async def cpu_bound() -> None:
    start = time.thread_time()
    while time.thread_time() - start < 0.05:
        pass

async def well_behaved() -> None:
    await anyio.sleep(0.01)
    await anyio.to_thread.run_sync(time.sleep, 0.05)  # blocking, but in a thread

async def main() -> None:
    await well_behaved()
    for work in (blocking_read, cpu_bound):
        try:
            await work()
        except Exception:
            pass
'''


def run(tmp_path: Path, body: str) -> list[dict[str, object]]:
    package = tmp_path / "agentlike"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "work.py").write_text(body)
    out = tmp_path / "records.jsonl"
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO)!r}, {str(tmp_path)!r}]
        from tests.harness.loopcheck import install
        install({str(out)!r}, package="agentlike")
        import anyio
        from agentlike.work import main
        anyio.run(main)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [r for r in read_records(str(out)) if r["kind"] != "installed"]


def test_blocking_calls_and_cpu_bound_steps_are_recorded(tmp_path: Path) -> None:
    records = run(tmp_path, _AGENT_LIKE)
    calls = [r for r in records if r["kind"] == "blocking_call"]
    slow = [r for r in records if r["kind"] == "slow_callback"]
    assert [r["call"] for r in calls] == ["os.write"], records
    assert any("work.py" in line for line in calls[0]["stack"]), calls  # type: ignore[attr-defined]
    assert len(slow) == 1, records
    assert any("in cpu_bound" in line for line in slow[0]["stack"]), slow  # type: ignore[attr-defined]
    assert float(slow[0]["cpu_seconds"]) >= 0.04  # type: ignore[arg-type]


def test_awaiting_and_threads_are_not_recorded(tmp_path: Path) -> None:
    body = _AGENT_LIKE.replace("for work in (blocking_read, cpu_bound):", "for work in ():")
    assert run(tmp_path, body) == []
