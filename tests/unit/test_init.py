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
    from supervisor import fdstore, init

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

def by_sys_exit_5():
    sys.exit(5)

def returns_zero():
    return 0

def bare_sys_exit():
    sys.exit()

results = {f.__name__: init.run(f) for f in (by_sys_exit_5, returns_zero, bare_sys_exit)}
print(json.dumps(results))
"""


def test_run_exit_codes() -> None:
    """An agent that ends by itself ends PID 1 with its code (a bare sys.exit() is 0)."""
    result = run_script(EXIT_CODES)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"by_sys_exit_5": 5, "returns_zero": 0,
                                         "bare_sys_exit": 0}


DEATHS = """
become_subreaper()
mode, log = sys.argv[1], sys.argv[2]

def agent():
    restarts = int(os.environ[fdstore.RESTARTS_ENV])
    role = os.environ[fdstore.ROLE_ENV]
    with open(log, "a") as f:
        f.write(f"{role} {restarts}\\n")
    if mode == "always" or restarts == 0:
        if mode == "crash":
            raise RuntimeError("boom in the agent")
        os.kill(os.getpid(), signal.SIGKILL)
    return 4

print(json.dumps(init.run(agent)))
"""


def _deaths(tmp_path: Path, mode: str) -> tuple[int, list[str], list[dict[str, object]]]:
    log = tmp_path / "starts.txt"
    result = run_script(DEATHS, mode, str(log))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return json.loads(result.stdout), log.read_text().splitlines(), events


def test_a_killed_agent_is_restarted_and_counted(tmp_path: Path) -> None:
    """kill -9 of the agent: PID 1 logs one agent_died line and starts a new agent (told it is
    restart 1), whose code is PID 1's."""
    code, starts, events = _deaths(tmp_path, "once")
    assert code == 4
    assert starts == ["run 0", "run 1"]
    [died] = [e for e in events if e["event"] == "agent_died"]
    assert (died["signal"], died["exit_code"], died["component"]) == ("SIGKILL", 137, "init")


def test_a_crashed_agent_is_restarted(tmp_path: Path) -> None:
    """An uncaught exception in the agent is a death too (exit 70), with its traceback."""
    code, starts, events = _deaths(tmp_path, "crash")
    assert code == 4
    assert starts == ["run 0", "run 1"]
    assert [e["exit_code"] for e in events if e["event"] == "agent_died"] == [70]


def test_agent_restarts_are_bounded(tmp_path: Path) -> None:
    """More than restart_limit (5) deaths: one last agent only to stop dockerd, then exit 1."""
    code, starts, events = _deaths(tmp_path, "always")
    assert code == 1
    assert starts == [f"run {n}" for n in range(6)] + ["stop 5"]
    assert [e["event"] for e in events if e["event"] != "dockerd_stopped_by_init"] == [
        *["agent_died"] * 6, "agent_restarts_exhausted", "agent_died",
    ]


HANDOVER = """
become_subreaper()
log = sys.argv[1]

def agent():
    restarts = int(os.environ[fdstore.RESTARTS_ENV])
    depositor = fdstore.Depositor.from_env(os.environ)
    inherited = fdstore.inherited(os.environ)
    if restarts == 0:
        read_end, write_end = os.pipe()
        os.write(write_end, b"kept by PID 1")
        os.close(write_end)
        depositor.store("keep", read_end)
        # A stand-in for dockerd: it outlives this agent and exits 7 when told. (Like the
        # exec wrapper, it unblocks what PID 1 blocked for its children.)
        child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time;"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7));"
            "signal.pthread_sigmask(signal.SIG_SETMASK, []); time.sleep(60)"])
        depositor.set(dockerd_pid=child.pid, stop_timeout=5)
        depositor.store("dockerd", os.pidfd_open(child.pid))
        time.sleep(0.3)  # let the child install its handler
        os.kill(os.getpid(), signal.SIGKILL)
    names = dict(inherited)
    kept = os.read(names["keep"], 100).decode()
    os.kill(int(fdstore.pidfd_pid(names["dockerd"])), signal.SIGTERM)
    sock = depositor.sock
    sock.setblocking(True)
    sock.settimeout(10)
    exited = sock.recv(100).decode()
    with open(log, "w") as f:
        json.dump({"names": sorted(names), "kept": kept, "exited": exited.split()[0],
                   "status": os.waitstatus_to_exitcode(int(exited.split()[2]))}, f)
    return 0

print(json.dumps(init.run(agent)))
"""


def test_descriptors_and_dockerds_exit_outlive_the_agent(tmp_path: Path) -> None:
    """What an agent deposits reaches the next one at fds 3.. (LISTEN_FDNAMES), and the exit
    status of the dockerd it left (now PID 1's child) is reported back (EXITED)."""
    log = tmp_path / "handover.json"
    result = run_script("import subprocess\n" + HANDOVER, str(log))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 0
    record = json.loads(log.read_text())
    assert record["names"] == ["dockerd", "keep"]
    assert record["kept"] == "kept by PID 1"
    assert (record["exited"], record["status"]) == ("EXITED", 7)


LAST_RESORT = """
become_subreaper()
log = sys.argv[1]

def agent():
    depositor = fdstore.Depositor.from_env(os.environ)
    if int(os.environ[fdstore.RESTARTS_ENV]) == 0 and os.environ[fdstore.ROLE_ENV] == "run":
        child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time;"
            f"signal.signal(signal.SIGTERM, lambda *a: (open({log!r}, 'w').write('TERM'),"
            " sys.exit(0))); signal.pthread_sigmask(signal.SIG_SETMASK, []); time.sleep(60)"])
        depositor.set(dockerd_pid=child.pid, stop_timeout=5, restart_limit=0)
        depositor.store("dockerd", os.pidfd_open(child.pid))
        time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)

print(json.dumps(init.run(agent)))
"""


def test_init_stops_dockerd_itself_when_no_agent_can(tmp_path: Path) -> None:
    """restart_limit 0 and the stop agent dead too: PID 1 sends dockerd its TERM itself,
    waits for it, and exits 1 (never leaving it to the kernel's SIGKILL)."""
    log = tmp_path / "term.txt"
    result = run_script("import subprocess\n" + LAST_RESORT, str(log))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 1
    assert log.read_text() == "TERM"
    assert "dockerd_stopped_by_init" in result.stderr


NO_PIDFD = """
become_subreaper()
log = sys.argv[1]

def agent():
    depositor = fdstore.Depositor.from_env(os.environ)
    if int(os.environ[fdstore.RESTARTS_ENV]) == 0:
        # As on a kernel without pidfd_open: the pid is set, no pidfd is deposited.
        child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time;"
            f"signal.signal(signal.SIGTERM, lambda *a: (open({log!r}, 'w').write('TERM'),"
            " sys.exit(0))); signal.pthread_sigmask(signal.SIG_SETMASK, []); time.sleep(60)"])
        depositor.set(dockerd_pid=child.pid, stop_timeout=5)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    # The second agent: the old dockerd must be gone (stopped by PID 1) before it runs.
    with open(log) as f:
        return 3 if f.read() == "TERM" else 9

print(json.dumps(init.run(agent)))
"""


def test_without_a_pidfd_the_orphan_dockerd_is_stopped_before_a_new_agent(
    tmp_path: Path,
) -> None:
    """A kernel before 5.3 gives no pidfd: the next agent could not take dockerd over safely,
    so PID 1 stops it gracefully (its TERM) before starting the new agent."""
    log = tmp_path / "term.txt"
    result = run_script("import subprocess\n" + NO_PIDFD, str(log))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 3
    assert "dockerd_stopped_by_init" in result.stderr


LAST_RESORT_BOTH = """
become_subreaper()
log = sys.argv[1]

def stand_in(name):
    # Records its TERM and, for "dockerd", whether "containerd" was still alive then.
    return subprocess.Popen([sys.executable, "-c", "import os, signal, sys, time;"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({log!r}, 'a').write({name!r} + ' '),"
        " sys.exit(0))); signal.pthread_sigmask(signal.SIG_SETMASK, []); time.sleep(60)"])

def agent():
    depositor = fdstore.Depositor.from_env(os.environ)
    if int(os.environ[fdstore.RESTARTS_ENV]) == 0 and os.environ[fdstore.ROLE_ENV] == "run":
        containerd, dockerd = stand_in("containerd"), stand_in("dockerd")
        depositor.set(containerd_pid=containerd.pid, dockerd_pid=dockerd.pid, stop_timeout=5,
                      restart_limit=0)
        depositor.store("containerd", os.pidfd_open(containerd.pid))
        depositor.store("dockerd", os.pidfd_open(dockerd.pid))
        time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)

print(json.dumps(init.run(agent)))
"""


def test_init_stops_the_agents_containerd_after_dockerd_when_no_agent_can(
    tmp_path: Path,
) -> None:
    """No agent left: PID 1 TERMs dockerd, waits for it, then TERMs the containerd the agent
    ran (never the other way round: dockerd must not lose containerd while it stops)."""
    log = tmp_path / "terms.txt"
    result = run_script("import subprocess\n" + LAST_RESORT_BOTH, str(log))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 1
    assert log.read_text().split() == ["dockerd", "containerd"]
    assert result.stderr.index("dockerd_stopped_by_init") < result.stderr.index(
        "containerd_stopped_by_init")


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


REMOVAL = """
become_subreaper()
init._POLL_SECONDS = 60.0  # without a wake-up, PID 1 would read the channel only a minute later

def agent():
    depositor = fdstore.Depositor.from_env(os.environ)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    depositor.store("listener", server.fileno())
    server.close()  # PID 1's copy alone listens now
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    depositor.remove("listener")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return 0  # PID 1 closed its copy
        time.sleep(0.01)
    return 9

print(json.dumps(init.run(agent)))
"""


def test_a_removal_is_taken_at_once_not_at_the_next_poll() -> None:
    """The channel wakes PID 1 (SIGIO): a listener handed back stops queueing clients even
    when PID 1 would otherwise sleep for a minute."""
    result = run_script("import socket\n" + REMOVAL)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 0
