"""Tests for supervisor.fdstore: deposits over the channel, the store's bookkeeping, and the
systemd-style hand-over (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES) a new agent adopts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor import fdstore

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def channel() -> Iterator[tuple[fdstore.Store, fdstore.Depositor]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    store = fdstore.Store(ours)
    try:
        yield store, fdstore.Depositor(theirs)
    finally:
        for _name, fd in store.fds:
            os.close(fd)
        ours.close()
        theirs.close()


def test_deposits_reach_the_store_as_copies(
    channel: tuple[fdstore.Store, fdstore.Depositor],
) -> None:
    """STORE sends a copy of the descriptor: the depositor may close its own, the store's
    still works; SET values and REMOVE (all of a name, closed) are applied in order."""
    store, depositor = channel
    read_end, write_end = os.pipe()
    assert depositor.store("pipe", read_end)
    assert depositor.store("pipe", read_end)
    assert depositor.set(restart_limit=3, stop_timeout=12.5)
    os.write(write_end, b"hello")
    os.close(read_end)
    store.drain()
    assert [name for name, _fd in store.fds] == ["pipe", "pipe"]
    assert os.read(store.first("pipe") or -1, 5) == b"hello"
    assert (store.number("restart_limit", 5), store.number("stop_timeout", 20)) == (3, 12.5)
    copies = [fd for _name, fd in store.fds]
    depositor.remove("pipe")
    store.drain()
    assert store.fds == []
    for fd in copies:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    os.close(write_end)


def test_malformed_messages_never_leak_descriptors(
    channel: tuple[fdstore.Store, fdstore.Depositor],
) -> None:
    """A message with descriptors the store does not keep (unknown verb, STORE without a name)
    has them closed, not piled up in PID 1."""
    store, depositor = channel
    read_end, write_end = os.pipe()
    assert depositor.sock is not None
    fdstore._send(depositor.sock, b"BOGUS x", [read_end])
    fdstore._send(depositor.sock, b"STORE ", [read_end])
    in_flight = len(os.listdir("/proc/self/fd"))  # the copies are in the socket, not here
    store.drain()
    assert store.fds == []
    assert len(os.listdir("/proc/self/fd")) == in_flight  # received, then closed
    os.close(read_end)
    os.close(write_end)


def test_inherited_only_when_listen_pid_is_ours() -> None:
    """LISTEN_* left by an ancestor (another pid) describe nothing of ours; either way the
    variables are removed so no child (dockerd) takes them for its own."""
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "1", "LISTEN_FDNAMES": "a:b"}
    assert fdstore.inherited(env, pid=999) == []
    assert env == {}


HANDOVER_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from supervisor import fdstore
    found = fdstore.inherited(os.environ)
    print(json.dumps({"found": found, "reads": [os.read(fd, 50).decode() for _n, fd in found],
                      "env": [k for k in os.environ if k.startswith("LISTEN_")]}))
    """
)


def test_hand_over_puts_descriptors_at_3_with_names() -> None:
    """hand_over (what PID 1 does in the child it forks) moves the stored descriptors to 3..
    and describes them; the new agent's inherited() gives them back by name, in order, and
    leaves no LISTEN_* behind for its own children."""
    script = textwrap.dedent(
        """
        import os, subprocess, sys
        from supervisor import fdstore
        r1, w1 = os.pipe(); r2, w2 = os.pipe()
        os.write(w1, b"one"); os.write(w2, b"two"); os.close(w1); os.close(w2)
        pid = os.fork()
        if pid == 0:
            fdstore.hand_over([("first", r2), ("second", r1)], os.environ)
            os.set_inheritable(3, True); os.set_inheritable(4, True)
            os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
        os.waitpid(pid, 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, HANDOVER_CHILD], cwd=REPO, capture_output=True,
        text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [name for name, _fd in out["found"]] == ["first", "second"]
    assert [fd for _name, fd in out["found"]] == [3, 4]
    assert out["reads"] == ["two", "one"]
    assert out["env"] == []
