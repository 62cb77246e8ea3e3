"""Tests for supervisor.init: exit statuses, orphan reaping, signal forwarding, subreaper check.

``init.run`` blocks signals and reaps with waitpid(-1), so every test of it runs
in its own Python subprocess (made a subreaper with prctl, so orphans come to
it as they would to PID 1), never inside pytest's process.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.init import FORWARDED, exit_status

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

PRELUDE = textwrap.dedent(
    """
    import ctypes, json, os, signal, sys, time
    from supervisor import init

    def become_subreaper():
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    """
)


def run_script(body: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# exit_status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (0, 0),
        (3 << 8, 3),
        (255 << 8, 255),
        (signal.SIGKILL, 137),
        (signal.SIGTERM, 143),
        (signal.SIGSEGV | 0x80, 128 + signal.SIGSEGV),  # with a core dump
    ],
)
def test_exit_status(status: int, code: int) -> None:
    """A wait status becomes the exit code, or 128+N for death by signal N."""
    assert exit_status(status) == code


def test_exit_status_of_real_children() -> None:
    """exit_status of real wait statuses: an exit code, and death by SIGKILL as 137."""
    statuses = []
    for script in ("exit 7", "kill -KILL $$"):
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", script], {})
        _, status = os.waitpid(pid, 0)
        statuses.append(exit_status(status))
    assert statuses == [7, 137]


# run(): exit codes and reaping -------------------------------------------------------

ORPHANS = """
become_subreaper()
N = 20

def agent():
    r, w = os.pipe()
    helpers = []
    for _ in range(N):
        helper = os.fork()
        if helper == 0:
            grandchild = os.fork()
            if grandchild == 0:
                os._exit(0)
            os.write(w, f"{grandchild}\\n".encode())
            os._exit(0)  # the grandchild is now an orphan
        helpers.append(helper)
    for helper in helpers:
        os.waitpid(helper, 0)  # the agent waits for its own children only, never -1
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    orphans = [int(p) for p in data.split()]
    assert len(orphans) == N
    init_pid = os.getppid()

    def unreaped():
        left = []
        for pid in orphans:
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except FileNotFoundError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == init_pid:
                left.append(pid)
        return left

    # Nothing to wait on for "reaped by another process": poll /proc with a bound.
    deadline = time.monotonic() + 10
    while unreaped():
        if time.monotonic() > deadline:
            return 9
        time.sleep(0.005)
    return 3

code = init.run(agent)
try:
    left = os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    left = None
print(json.dumps({"code": code, "left": left}))
"""


def test_run_returns_agent_code_and_reaps_orphans() -> None:
    """run(agent) reaps 20 double-forked orphans while the agent runs, returns 3, leaves none."""
    result = run_script(ORPHANS)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"code": 3, "left": None}


EXIT_CODES = """
become_subreaper()

def by_sigkill():
    os.kill(os.getpid(), signal.SIGKILL)
    return 0

def by_sigterm_default():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    return 0

def by_sys_exit_5():
    sys.exit(5)

def by_crash():
    raise RuntimeError("boom in the agent")

def returns_zero():
    return 0

results = {f.__name__: init.run(f) for f in (
    by_sigkill, by_sigterm_default, by_sys_exit_5, by_crash, returns_zero)}
print(json.dumps(results))
"""


def test_run_exit_codes() -> None:
    """The agent's code passes through; SIGKILL gives 137, TERM 143; a crash gives 1."""
    result = run_script(EXIT_CODES)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "by_sigkill": 137,
        "by_sigterm_default": 143,
        "by_sys_exit_5": 5,
        "by_crash": 1,
        "returns_zero": 0,
    }
    assert "agent crashed" in result.stderr
    assert "boom in the agent" in result.stderr


def test_run_sys_exit_without_code_is_zero() -> None:
    """An agent ending with a bare sys.exit() exits 0, as Python itself would."""
    result = run_script("print(init.run(lambda: sys.exit()))")
    assert result.stdout.strip() == "0", result.stderr


# run(): signal forwarding ------------------------------------------------------------

FORWARDING = """
out = sys.argv[1]
WATCHED = {signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM}

def agent():
    # sigwait, not handlers: nothing can arrive between a check and a wait.
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    print("ready", os.getpid(), flush=True)
    while True:
        signum = signal.sigwait(WATCHED)
        name = signal.Signals(signum).name
        with open(out, "a") as f:
            f.write(name + "\\n")
        print(name, flush=True)
        if signum == signal.SIGTERM:
            return 0

code = init.run(agent)
print("exit", code, flush=True)
sys.exit(code)
"""


class Lines:
    """Reads a child's stdout line by line with a deadline (no hang if the child stalls)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.stream = proc.stdout

    def next(self, timeout: float = 10.0) -> str:
        ready, _, _ = select.select([self.stream], [], [], timeout)
        assert ready, "child did not answer in time"
        return self.stream.readline().strip()


@pytest.fixture
def forwarding_child(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    record = tmp_path / "signals.txt"
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", PRELUDE + textwrap.dedent(FORWARDING), str(record)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    agent_pid = 0
    try:
        words = Lines(proc).next().split()
        assert words[0] == "ready"
        agent_pid = int(words[1])
        yield proc, record, agent_pid
    finally:
        if proc.poll() is None:
            for pid in (agent_pid, proc.pid):
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_signals_forwarded_once_each(
    forwarding_child: tuple[subprocess.Popen[str], Path, int],
) -> None:
    """USR1, HUP and TERM sent to init reach the agent exactly once each; its 0 is init's 0."""
    proc, record, agent_pid = forwarding_child
    lines = Lines(proc)
    for signum in (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM):
        proc.send_signal(signum)
        assert lines.next() == signal.Signals(signum).name
    assert lines.next() == "exit 0"
    assert proc.wait(timeout=10) == 0
    assert record.read_text().split() == ["SIGUSR1", "SIGHUP", "SIGTERM"]
    assert agent_pid != proc.pid


def test_forwarded_signals_are_the_documented_six() -> None:
    """init forwards exactly TERM, INT, HUP, QUIT, USR1 and USR2."""
    assert set(FORWARDED) == {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }


# is_subreaper ---------------------------------------------------------------------


def test_is_subreaper_false_then_true_after_prctl() -> None:
    """is_subreaper() is False for a plain process and True once it set PR_SET_CHILD_SUBREAPER."""
    result = run_script(
        """
        before = init.is_subreaper()
        become_subreaper()
        print(json.dumps([before, init.is_subreaper()]))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, True]
