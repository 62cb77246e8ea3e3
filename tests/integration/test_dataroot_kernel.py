"""Data-root features against the real kernel, without dockerd.

Real /proc for pid files, real flock between processes, real mounts (tmpfs,
overlay, an ext4 loop image) made inside a private mount namespace of a
child process, so nothing is visible to the machine and everything goes away
with that child even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from supervisor.dataroot import PidFileAction, PidFileState, acquire, clean_stale_pid_files
from supervisor.errors import DataRootLockedError

pytestmark = pytest.mark.integration

SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test; all killed and reaped at the end, pass or fail."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


def spawn_exec(argv: list[str], name: str, children: list[subprocess.Popen[bytes]]) -> int:
    """Start argv and return its pid once the kernel shows it as ``name``.

    Popen may return (vfork) a moment before exec has renamed the task, so
    the test waits for that state change with a deadline, not for a time.
    """
    import os
    import time

    child = subprocess.Popen(argv)
    children.append(child)
    deadline = time.monotonic() + 10
    comm = Path(f"/proc/{child.pid}/comm")
    while comm.read_text().strip() != name:
        assert time.monotonic() < deadline, f"{argv[0]} did not exec"
        os.sched_yield()
    return child.pid


def test_pid_file_of_dead_process_is_removed(tmp_path: Path) -> None:
    """A pid file naming a process that has exited is removed."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(f"{child.pid}\n")
    [outcome] = clean_stale_pid_files([pidfile])
    assert outcome.action is PidFileAction.REMOVED
    # Reuse of that pid within this instant is possible in theory; dockerd it is not.
    assert outcome.state in {PidFileState.DEAD, PidFileState.UNRELATED}
    assert not pidfile.exists()


def test_live_unrelated_pid_is_not_mistaken_for_dockerd(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A live `sleep` named in docker.pid is reported as unrelated, its file removed, it lives."""
    sleeper_pid = spawn_exec([SLEEP, "300"], "sleep", children)
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(sleeper_pid))
    [outcome] = clean_stale_pid_files([pidfile])
    assert outcome.state is PidFileState.UNRELATED
    assert outcome.process_name == "sleep"
    assert not outcome.daemon_running
    assert not pidfile.exists()
    assert children[0].poll() is None


def test_live_process_named_dockerd_keeps_its_pid_file(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A live process whose executable is called dockerd is left alone and reported."""
    fake_dockerd = tmp_path / "dockerd"
    shutil.copy(SLEEP, fake_dockerd)
    daemon_pid = spawn_exec([str(fake_dockerd), "300"], "dockerd", children)
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(daemon_pid))
    [outcome] = clean_stale_pid_files([pidfile])
    assert outcome.state is PidFileState.DAEMON
    assert outcome.action is PidFileAction.KEPT
    assert pidfile.read_text() == str(daemon_pid)


# --- helpers for lock and mount tests -------------------------------------

REPO = Path(__file__).resolve().parents[2]

LOCK_HOLDER = """
import os, subprocess, sys
from datetime import UTC, datetime
from pathlib import Path
from supervisor.dataroot import acquire

root = Path(sys.argv[1])
if len(sys.argv) > 2:  # lock through another path of the same folder (another "container")
    os.makedirs(sys.argv[1], exist_ok=True)
    os.makedirs(sys.argv[2], exist_ok=True)
    subprocess.run(["mount", "--bind", sys.argv[1], sys.argv[2]], check=True)
    root = Path(sys.argv[2])
lock = acquire(root, host="holder-host", now=datetime.now(UTC), pid=os.getpid())
# close_fds=False: even so, the lock descriptor (close-on-exec) must not reach a child
grandchild = subprocess.Popen(["sleep", "300"], close_fds=False)
print(os.getpid(), grandchild.pid, flush=True)
sys.stdin.read()  # hold until killed
"""


def start_lock_holder(
    children: list[subprocess.Popen[bytes]], root: Path, *extra: str, private_ns: bool = False
) -> tuple[int, int]:
    """Start a process holding the lock; returns (holder pid, its sleep grandchild's pid)."""
    argv = [sys.executable, "-c", LOCK_HOLDER, str(root), *extra]
    if private_ns:
        argv = ["unshare", "--mount", "--propagation", "private", *argv]
    child = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, env=_env()
    )
    children.append(child)
    assert child.stdout is not None
    line = child.stdout.readline()  # the lock is held once this line arrives
    assert line, f"lock holder failed (exit {child.wait(timeout=10)})"
    holder, grandchild = (int(x) for x in line.split())
    return holder, grandchild


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


def _kill_pid(pid: int) -> None:
    import os
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_lock_held_by_another_process_names_it_and_dies_with_it(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A live holder blocks acquire (pid and host named); after kill -9 acquire succeeds."""
    root = tmp_path / "docker"
    holder_pid, grandchild = start_lock_holder(children, root)
    try:
        with pytest.raises(DataRootLockedError) as caught:
            acquire(root, host="me", now=datetime.now(UTC), pid=1)
        assert caught.value.holder_pid == holder_pid
        assert caught.value.holder_host == "holder-host"
        assert caught.value.exit_code == 2

        children[0].kill()
        children[0].wait(timeout=10)
        # The holder's sleep child lives on: it did not inherit the lock.
        assert Path(f"/proc/{grandchild}").exists()
        with acquire(root, host="me", now=datetime.now(UTC), pid=1) as lock:
            assert lock.held
    finally:
        _kill_pid(grandchild)


def test_lock_excludes_a_holder_in_another_mount_namespace(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """Two "containers" (mount namespaces) sharing a volume by two paths exclude each other."""
    root = tmp_path / "volume"
    holder_pid, grandchild = start_lock_holder(
        children, root, str(tmp_path / "elsewhere"), private_ns=True
    )
    try:
        with pytest.raises(DataRootLockedError) as caught:
            acquire(root, host="me", now=datetime.now(UTC), pid=1)
        assert caught.value.holder_host == "holder-host"
        assert caught.value.holder_pid == holder_pid
    finally:
        _kill_pid(grandchild)
    # the bind mount existed only in the holder's namespace
    assert not any((tmp_path / "elsewhere").iterdir())


PREFLIGHT_IN_NS = """
import json, os, subprocess, sys
from pathlib import Path
from supervisor.dataroot.preflight import preflight

setup = json.loads(sys.argv[1])
for argv in setup["commands"]:
    subprocess.run(argv, check=True, capture_output=True)
root = setup["data_root"]
report = preflight(Path(root))
print(json.dumps({
    "fstype": report.fstype,
    "mount_point": report.mount_point,
    "is_mount_point": report.is_mount_point,
    "persistent": report.persistent,
    "overlay2_supported": report.overlay2_supported,
    "d_type": report.d_type,
    "size_bytes": report.figures.size_bytes if report.figures else None,
    "findings": [f.as_dict() for f in report.findings],
    "leftovers": sorted(os.listdir(root)) if os.path.isdir(root) else None,
}))
"""


def preflight_in_private_ns(data_root: Path, commands: list[list[str]]) -> dict[str, Any]:
    """Run the mount commands and preflight in a private mount namespace; mounts die with it."""
    setup = json.dumps({"data_root": str(data_root), "commands": commands})
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private",
         sys.executable, "-c", PREFLIGHT_IN_NS, setup],
        capture_output=True, cwd=REPO, env=_env(), timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_preflight_on_tmpfs(tmp_path: Path) -> None:
    """A tmpfs data root: fstype tmpfs, a mount point, not persistent, overlay2 and d_type fine."""
    mnt = tmp_path / "docker"
    mnt.mkdir()
    report = preflight_in_private_ns(
        mnt, [["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)]]
    )
    assert report["fstype"] == "tmpfs"
    assert report["is_mount_point"]
    assert report["persistent"] is False
    assert report["overlay2_supported"] is True
    assert report["d_type"] is True
    assert report["size_bytes"] == 16 * 1024 * 1024
    assert report["leftovers"] == []  # the d_type probe cleaned up after itself
    assert not list(mnt.iterdir())  # and nothing reached the real folder


def test_preflight_on_overlay_warns_and_is_not_persistent(tmp_path: Path) -> None:
    """A data root on an overlay mount is warned (vfs fallback) and reported not persistent."""
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    options = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    merged = tmp_path / "merged"
    report = preflight_in_private_ns(
        merged / "var-lib-docker",
        [["mount", "-t", "overlay", "overlay", "-o", options, str(merged)]],
    )
    assert report["fstype"] == "overlay"
    assert report["mount_point"] == str(merged)
    assert report["persistent"] is False
    assert report["overlay2_supported"] is False
    [warning] = [f for f in report["findings"] if f["severity"] == "warning"]
    assert "vfs" in warning["message"]
    assert "-v dind-data:/var/lib/docker" in warning["remedy"]
    assert report["leftovers"] is None  # preflight creates no data root


def test_preflight_on_ext4_loop_volume(tmp_path: Path) -> None:
    """An ext4 volume (loop image): persistent mount point where overlay2 can work."""
    image = tmp_path / "ext4.img"
    with image.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mnt = tmp_path / "docker"
    mnt.mkdir()
    report = preflight_in_private_ns(mnt, [["mount", "-o", "loop", str(image), str(mnt)]])
    assert report["fstype"] == "ext4"
    assert report["is_mount_point"]
    assert report["persistent"] is True
    assert report["overlay2_supported"] is True
    assert report["d_type"] is True
    assert report["leftovers"] == ["lost+found"]
    assert [f["severity"] for f in report["findings"]] == ["warning"]  # 64 MiB is little room
    assert "GiB free" in report["findings"][0]["message"]


def test_preflight_on_xfs_loop_volume_probes_d_type(tmp_path: Path) -> None:
    """xfs (ftype=1): the real readdir d_type probe says yes and overlay2 can work."""
    image = tmp_path / "xfs.img"
    with image.open("wb") as handle:
        handle.truncate(320 * 1024 * 1024)  # mkfs.xfs's minimum is 300 MiB (sparse here)
    subprocess.run(["mkfs.xfs", "-q", "-n", "ftype=1", str(image)], check=True)
    mnt = tmp_path / "docker"
    mnt.mkdir()
    report = preflight_in_private_ns(mnt, [["mount", "-o", "loop", str(image), str(mnt)]])
    assert report["fstype"] == "xfs"
    assert report["d_type"] is True
    assert report["overlay2_supported"] is True
    assert report["leftovers"] == []


GC_IN_NS = """
import json, subprocess, sys
from pathlib import Path
import anyio
from supervisor.dataroot import disk_figures, run_gc

root = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], check=True)
MIB = 1024 * 1024

def fill(name, mib):
    (root / name).write_bytes(b"x" * (mib * MIB))

fill("in-use-image", 4)
fill("build-cache", 1)
fill("dangling-image", 1)
fill("unused-image", 1)


class Prune:
    calls = []

    def _drop(self, name):
        self.calls.append(name)
        size = (root / name).stat().st_size
        (root / name).unlink()
        return size

    async def prune_build_cache(self):
        return self._drop("build-cache")

    async def prune_images(self, *, dangling_only):
        return self._drop("dangling-image" if dangling_only else "unused-image")


api = Prune()
result = anyio.run(run_gc, api, lambda: disk_figures(root), 0.85, 0.60)
print(json.dumps({
    "calls": api.calls,
    "before": result.before.used_fraction,
    "after": result.after.used_fraction,
    "reclaimed": result.reclaimed_bytes,
    "in_use_left": (root / "in-use-image").exists(),
}))
"""


def test_gc_on_a_small_tmpfs_prunes_below_low_mark(tmp_path: Path) -> None:
    """On a real 8 MiB tmpfs at 7/8 used, GC prunes in order until statvfs shows < low mark."""
    mnt = tmp_path / "docker"
    mnt.mkdir()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", GC_IN_NS,
         str(mnt)],
        capture_output=True, cwd=REPO, env=_env(), timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["before"] >= 0.85
    assert result["calls"] == ["build-cache", "dangling-image", "unused-image"]
    assert result["after"] < 0.60
    assert result["reclaimed"] == 3 * 1024 * 1024
    assert result["in_use_left"]


LOCK_ON_FULL_DISK = """
import json, os, subprocess, sys
from datetime import UTC, datetime
from pathlib import Path
from supervisor.dataroot import LOCK_NAME, acquire
from supervisor.errors import DataRootError

image, root = sys.argv[1], Path(sys.argv[2])
subprocess.run(["mount", "-o", "loop", image, str(root)], check=True)

def fill():
    fd = os.open(root / "fill", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for chunk in (65536, 4096, 1024, 1):  # down to the last byte of the last block
        try:
            while True:
                os.write(fd, b"x" * chunk)
        except OSError as exc:
            assert exc.errno == 28, exc
    os.close(fd)

def attempt(pid):
    try:
        lock = acquire(root, host="full", now=datetime.now(UTC), pid=pid,
                       check_daemon_locks=False)
    except DataRootError as exc:
        return {"error": exc.message, "remedy": exc.remedy, "no_space": exc.no_space}
    lock.release()
    return {"error": None}

out = {}
# 1. A lock record from an earlier run, then the disk fills up: a new holder's record,
#    longer than the old one, is written whole over it (no truncation, no empty file).
(root / LOCK_NAME).write_text(json.dumps({"pid": 7, "host": "x", "since": "y"}) + "\\n")
fill()
out["free_bytes"] = os.statvfs(root).f_bavail
out["rewrite"] = attempt(123456789)
out["record"] = (root / LOCK_NAME).read_text()
# 2. No lock file yet on the full disk: refused as a full disk, and no empty file left.
(root / LOCK_NAME).unlink()
fill()  # the old record's block too
out["new"] = attempt(42)
out["left"] = sorted(os.listdir(root))
# 3. Every inode used: the lock file cannot even be created.
(root / "fill").unlink()
for index in range(10000):
    try:
        (root / f"i{index}").touch()
    except OSError as exc:
        assert exc.errno == 28, exc
        break
out["inodes"] = attempt(43)
print(json.dumps(out))
"""


def test_lock_file_on_a_full_disk_is_never_left_empty_or_truncated(tmp_path: Path) -> None:
    """A real ext4 filled up (ENOSPC): an existing record is replaced whole by a longer one; a
    lock file that cannot be written is removed, not left empty; no inode is a full disk too."""
    image = tmp_path / "small.img"
    with image.open("wb") as handle:
        handle.truncate(2 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", "64", "-O", "^has_journal",
                    str(image)], check=True)
    mnt = tmp_path / "docker"
    mnt.mkdir()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
         LOCK_ON_FULL_DISK, str(image), str(mnt)],
        capture_output=True, cwd=REPO, env=_env(), timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    out = json.loads(done.stdout)
    assert out["free_bytes"] == 0
    assert out["rewrite"] == {"error": None}
    record = json.loads(out["record"])
    assert record["pid"] == 123456789
    assert record["host"] == "full"
    assert out["new"].get("no_space") is True, out
    assert "the disk is full" in out["new"]["error"]
    assert "df -h" in out["new"]["remedy"]
    assert ".dind-supervisor.lock" not in out["left"]
    assert "no free inode" in out["inodes"]["error"]
    assert not list(mnt.iterdir())  # the mounts died with the namespace
