"""Socket activation through the exec wrapper: held sockets reach the program at fds 3.. with
LISTEN_FDS/LISTEN_PID naming it, and it starts with no signal blocked."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from supervisor.policy.apply import wrap_argv

pytestmark = pytest.mark.unit

PROGRAM = """
import json, os, signal, socket
fds = int(os.environ["LISTEN_FDS"])
names = [socket.socket(fileno=3 + i).getsockname()[1] for i in range(fds)]
print(json.dumps({"pid_matches": os.environ["LISTEN_PID"] == str(os.getpid()),
                  "fds": fds, "ports": names, "names": os.environ["LISTEN_FDNAMES"],
                  "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))}))
"""


def test_wrapper_hands_sockets_over_systemd_style() -> None:
    """Two sockets at any fd numbers arrive at 3 and 4, in order, announced for the program's
    own pid; signals the agent still blocked are not blocked in the program."""
    socks = [socket.socket() for _ in range(2)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    argv = wrap_argv(None, [sys.executable, "-c", PROGRAM], listen=[s.fileno() for s in socks])
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                                pass_fds=[s.fileno() for s in socks])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        for sock in socks:
            sock.close()
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {"pid_matches": True, "fds": 2, "ports": ports,
                   "names": "listener:listener", "blocked": []}


def test_no_policy_and_no_sockets_means_no_wrapper() -> None:
    """Nothing to set and nothing to hand over: dockerd is run as it is."""
    assert wrap_argv(None, ["dockerd", "--debug"]) == ["dockerd", "--debug"]
