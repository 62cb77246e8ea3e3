"""dockerd's own process figures, read from /proc at scrape time.

Owns: reading one process's memory, CPU time, start time and file
descriptors from a /proc tree (`read_process`), the Prometheus collector that
exports them under `dind_<process>_process_*` (`ProcessFigures`), and a pid
provider for processes known by a pid file (`pid_from_file`, for the
containerd that dockerd starts). Does not own: knowing dockerd's pid (the
agent passes a provider returning the current pid or None) nor the agent's own
process figures (prometheus_client's ProcessCollector does that).

Like client_python's ProcessCollector, the /proc root and the pid are
arguments, so tests point them at a fake tree. Unlike it, open fds are counted
with one stat() of /proc/PID/fd when the kernel reports the count as the
directory's size (Linux 6.2 and later): listing the directory costs about
1 ms per 2000 fds, which a dockerd running hundreds of containers has.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from supervisor.metrics import family, process_families

PidProvider = Callable[[], int | None]

_READ_CHUNK: Final = 8192


def _read(path: str) -> bytes:
    # os.read is several times cheaper than open().read() for these small files.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_boot_time(proc_root: str) -> float:
    """The `btime` line of PROC/stat: when the machine booted, in Unix seconds."""
    for line in _read(f"{proc_root}/stat").splitlines():
        if line.startswith(b"btime "):
            return float(line.split()[1])
    raise ValueError(f"{proc_root}/stat has no btime line; is {proc_root} a procfs mount?")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSample:
    """One reading of one process."""

    pid: int
    comm: str
    resident_memory_bytes: int
    virtual_memory_bytes: int
    cpu_seconds: float
    start_time_seconds: float
    open_fds: int | None
    """None when PROC/PID/fd cannot be read."""
    max_fds: float | None
    """The soft RLIMIT_NOFILE (inf when unlimited); None when PROC/PID/limits cannot be read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcReader:
    """How to read a /proc tree: its root and the machine's constants."""

    proc_root: str = "/proc"
    boot_time: float
    ticks_per_second: int
    page_size: int
    fd_count_from_size: bool
    """True when stat(PROC/PID/fd).st_size is the number of open fds."""

    @classmethod
    def for_root(
        cls,
        proc_root: str = "/proc",
        *,
        ticks_per_second: int | None = None,
        page_size: int | None = None,
    ) -> ProcReader:
        return cls(
            proc_root=proc_root,
            boot_time=read_boot_time(proc_root),
            ticks_per_second=ticks_per_second or os.sysconf("SC_CLK_TCK"),
            page_size=page_size or os.sysconf("SC_PAGE_SIZE"),
            fd_count_from_size=_fd_size_is_count(proc_root),
        )


def _fd_size_is_count(proc_root: str) -> bool:
    # Only a live procfs of our own pid namespace resolves `self` to our pid;
    # a fake tree (or an older kernel, whose st_size is 0) falls back to listing.
    try:
        if os.readlink(f"{proc_root}/self") != str(os.getpid()):
            return False
        return os.stat(f"{proc_root}/self/fd").st_size > 0
    except OSError:
        return False


def read_process(reader: ProcReader, pid: int) -> ProcessSample | None:
    """Read PROC/PID/{stat,limits,fd}; None when the process is gone or a zombie."""
    base = f"{reader.proc_root}/{pid}"
    try:
        stat = _read(f"{base}/stat")
    except OSError:  # gone (ENOENT, ESRCH) between the pid lookup and here
        return None
    # comm may hold spaces and parentheses; it ends at the last ")".
    open_paren, close_paren = stat.find(b"("), stat.rfind(b")")
    comm = stat[open_paren + 1 : close_paren].decode(errors="replace")
    fields = stat[close_paren + 2 :].split()
    # fields[0] is field 3 of proc(5): field N is fields[N - 3].
    if fields[0] in (b"Z", b"X"):
        return None
    utime, stime = int(fields[11]), int(fields[12])
    starttime = int(fields[19])
    return ProcessSample(
        pid=pid,
        comm=comm,
        resident_memory_bytes=int(fields[21]) * reader.page_size,
        virtual_memory_bytes=int(fields[20]),
        cpu_seconds=(utime + stime) / reader.ticks_per_second,
        start_time_seconds=reader.boot_time + starttime / reader.ticks_per_second,
        open_fds=_open_fds(f"{base}/fd", from_size=reader.fd_count_from_size),
        max_fds=_max_fds(f"{base}/limits"),
    )


def _open_fds(fd_dir: str, *, from_size: bool) -> int | None:
    try:
        if from_size:
            size = os.stat(fd_dir).st_size
            if size > 0:
                return size
        return len(os.listdir(fd_dir))
    except OSError:
        return None


def _max_fds(limits_path: str) -> float | None:
    try:
        limits = _read(limits_path)
    except OSError:
        return None
    for line in limits.splitlines():
        if line.startswith(b"Max open files"):
            soft = line.split()[3]
            return float("inf") if soft == b"unlimited" else float(soft)
    return None


def pid_from_file(path: str, *, expect_comm: str | None = None,
                  proc_root: str = "/proc") -> PidProvider:
    """A provider reading a pid file at each call (dockerd rewrites containerd's at each start).

    With ``expect_comm``, a pid whose process has another name counts as none:
    a stale file may name a reused pid.
    """
    expected = expect_comm.encode() if expect_comm is not None else None

    def provider() -> int | None:
        try:
            pid = int(_read(path).strip() or b"0")
            if pid <= 0:
                return None
            if expected is not None and _read(f"{proc_root}/{pid}/comm").strip() != expected:
                return None
        except (OSError, ValueError):
            return None
        return pid

    return provider


class ProcessFigures:
    """A prometheus_client collector for one supervised process, followed across restarts.

    `pid` is called at each scrape; when it returns None, or the process is
    gone, a zombie, or not named `expect_comm`, the families have no samples.
    A new pid simply shows up as a new start time and a CPU counter reset.
    """

    def __init__(
        self,
        pid: PidProvider,
        *,
        process: str = "dockerd",
        expect_comm: str | None = None,
        reader: ProcReader | None = None,
    ) -> None:
        self._pid = pid
        self._process = process
        self._declared = process_families(process)
        self._expect_comm = expect_comm
        # Read at the first scrape (in the endpoint's thread), not on the event loop.
        self._reader = reader

    def sample(self) -> ProcessSample | None:
        pid = self._pid()
        if pid is None:
            return None
        if self._reader is None:
            self._reader = ProcReader.for_root()
        sample = read_process(self._reader, pid)
        if sample is None or (self._expect_comm is not None and sample.comm != self._expect_comm):
            return None
        return sample

    def _families(self) -> tuple[GaugeMetricFamily | CounterMetricFamily, ...]:
        """rss, vms, cpu, open fds, max fds, start time: the order of process_families."""
        return tuple(family(spec) for spec in self._declared)

    def describe(self) -> Iterable[Metric]:
        yield from self._families()

    def collect(self) -> Iterable[Metric]:
        sample = self.sample()
        rss, vms, cpu, open_fds, max_fds, start = self._families()
        if sample is not None:
            rss.add_metric([], sample.resident_memory_bytes)
            vms.add_metric([], sample.virtual_memory_bytes)
            if sample.open_fds is not None:
                open_fds.add_metric([], sample.open_fds)
            if sample.max_fds is not None:
                max_fds.add_metric([], sample.max_fds)
            start.add_metric([], sample.start_time_seconds)
            cpu.add_metric([], sample.cpu_seconds)
        return (rss, vms, cpu, open_fds, max_fds, start)
