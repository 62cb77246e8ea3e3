"""Tests for supervisor.procstats: process figures from a fake /proc tree and the real one."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.procstats import (
    ProcessFigures,
    ProcReader,
    pid_from_file,
    read_boot_time,
    read_process,
)

pytestmark = pytest.mark.unit

BTIME = 1_700_000_000
PAGE = 4096
TICKS = 100
NAMES = (
    "dind_dockerd_process_resident_memory_bytes",
    "dind_dockerd_process_virtual_memory_bytes",
    "dind_dockerd_process_cpu_seconds",
    "dind_dockerd_process_open_fds",
    "dind_dockerd_process_max_fds",
    "dind_dockerd_process_start_time_seconds",
)


def stat_line(
    pid: int,
    comm: str = "dockerd",
    *,
    state: str = "S",
    utime: int = 250,
    stime: int = 50,
    starttime: int = 12_345,
    vsize: int = 2_000_000_000,
    rss: int = 10_000,
) -> str:
    """A proc(5) stat line: field N of the man page is fields[N]."""
    fields = ["0"] * 53
    fields[1], fields[2], fields[3] = str(pid), f"({comm})", state
    fields[14], fields[15] = str(utime), str(stime)
    fields[22], fields[23], fields[24] = str(starttime), str(vsize), str(rss)
    return " ".join(fields[1:]) + "\n"


def limits_text(soft: str = "1048576", hard: str = "1048576") -> str:
    return (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max processes             96365                96365                processes \n"
        f"Max open files            {soft:<20} {hard:<20} files     \n"
        "Max locked memory         8388608              8388608              bytes     \n"
    )


def add_process(
    root: Path, pid: int, *, fds: int = 7, limits: str | None = None, **stat: object
) -> None:
    proc = root / str(pid)
    (proc / "fd").mkdir(parents=True)
    (proc / "stat").write_text(stat_line(pid, **stat))  # type: ignore[arg-type]
    (proc / "limits").write_text(limits if limits is not None else limits_text())
    for fd in range(fds):
        (proc / "fd" / str(fd)).symlink_to("/dev/null")


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text(f"cpu  1 2 3 4\nintr 5\nctxt 6\nbtime {BTIME}\nprocesses 7\n")
    return root


def reader_for(root: Path) -> ProcReader:
    return ProcReader.for_root(str(root), ticks_per_second=TICKS, page_size=PAGE)


def scrape(figures: object) -> dict[str, float]:
    """Register on a fresh registry, expose, parse back: name -> value."""
    registry = CollectorRegistry()
    registry.register(figures)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_fake_tree_gives_known_values(fake_proc: Path) -> None:
    """Every figure is computed from stat, limits and the fd dir as proc(5) defines them."""
    add_process(fake_proc, 4242, fds=7)
    sample = read_process(reader_for(fake_proc), 4242)
    assert sample is not None
    assert sample.comm == "dockerd"
    assert sample.resident_memory_bytes == 10_000 * PAGE
    assert sample.virtual_memory_bytes == 2_000_000_000
    assert sample.cpu_seconds == pytest.approx(3.0)
    assert sample.start_time_seconds == pytest.approx(BTIME + 123.45)
    assert sample.open_fds == 7
    assert sample.max_fds == 1_048_576


def test_exposition_parses_with_help_and_types(fake_proc: Path) -> None:
    """The six dind_dockerd_process_* families come out with HELP, the right type and values."""
    add_process(fake_proc, 4242)
    registry = CollectorRegistry()
    registry.register(ProcessFigures(lambda: 4242, reader=reader_for(fake_proc)))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert set(families) == set(NAMES)
    assert all(f.documentation for f in families.values())
    assert families["dind_dockerd_process_cpu_seconds"].type == "counter"
    assert families["dind_dockerd_process_cpu_seconds"].samples[0].name == (
        "dind_dockerd_process_cpu_seconds_total"
    )
    assert families["dind_dockerd_process_open_fds"].type == "gauge"
    assert families["dind_dockerd_process_resident_memory_bytes"].samples[0].value == 10_000 * PAGE


def test_comm_with_spaces_and_parentheses(fake_proc: Path) -> None:
    """A comm holding ") (" does not shift the fields after it."""
    add_process(fake_proc, 7, comm="evil) S (name", rss=3)
    sample = read_process(reader_for(fake_proc), 7)
    assert sample is not None
    assert sample.comm == "evil) S (name"
    assert sample.resident_memory_bytes == 3 * PAGE


def test_follows_dockerd_across_restarts(fake_proc: Path) -> None:
    """The provider is asked at each scrape: a new pid is followed, None exports nothing."""
    add_process(fake_proc, 100, starttime=1_000, utime=900, stime=100)
    add_process(fake_proc, 200, starttime=5_000, utime=1, stime=0)
    pids: list[int | None] = [100, None, 200]
    figures = ProcessFigures(lambda: pids[0], reader=reader_for(fake_proc))

    first = scrape(figures)
    assert first["dind_dockerd_process_cpu_seconds_total"] == pytest.approx(10.0)
    assert first["dind_dockerd_process_start_time_seconds"] == pytest.approx(BTIME + 10)
    pids.pop(0)
    assert scrape(figures) == {}
    pids.pop(0)
    third = scrape(figures)
    assert third["dind_dockerd_process_cpu_seconds_total"] == pytest.approx(0.01)
    assert third["dind_dockerd_process_start_time_seconds"] == pytest.approx(BTIME + 50)


@pytest.mark.parametrize("state", ["Z", "X"])
def test_zombie_or_dead_process_exports_nothing(fake_proc: Path, state: str) -> None:
    """An exited dockerd not yet reaped has no meaningful figures: none are exported."""
    add_process(fake_proc, 100, state=state)
    assert read_process(reader_for(fake_proc), 100) is None
    assert scrape(ProcessFigures(lambda: 100, reader=reader_for(fake_proc))) == {}


def test_vanished_process_exports_nothing(fake_proc: Path) -> None:
    """A pid whose /proc entry is gone (dockerd just exited) gives no samples and no error."""
    assert scrape(ProcessFigures(lambda: 999, reader=reader_for(fake_proc))) == {}


def test_unexpected_comm_exports_nothing(fake_proc: Path) -> None:
    """With expect_comm, a pid reused by another program is not reported as containerd."""
    add_process(fake_proc, 300, comm="bash")
    figures = ProcessFigures(
        lambda: 300, process="containerd", expect_comm="containerd", reader=reader_for(fake_proc)
    )
    assert scrape(figures) == {}


def test_containerd_gets_its_own_prefix(fake_proc: Path) -> None:
    """process="containerd" exports dind_containerd_process_*, alongside dockerd's."""
    add_process(fake_proc, 300, comm="containerd")
    (fake_proc / "containerd.pid").write_text("300\n")
    figures = ProcessFigures(
        pid_from_file(str(fake_proc / "containerd.pid")),
        process="containerd",
        expect_comm="containerd",
        reader=reader_for(fake_proc),
    )
    values = scrape(figures)
    assert values["dind_containerd_process_open_fds"] == 7
    assert not any(name.startswith("dind_dockerd_") for name in values)


def test_unlimited_open_files_is_infinite(fake_proc: Path) -> None:
    """A soft nofile limit of "unlimited" is exported as +Inf, not dropped."""
    add_process(fake_proc, 100, limits=limits_text(soft="unlimited", hard="unlimited"))
    assert math.isinf(scrape(ProcessFigures(lambda: 100, reader=reader_for(fake_proc)))[
        "dind_dockerd_process_max_fds"
    ])


def test_unreadable_fd_dir_and_limits_drop_only_those_figures(fake_proc: Path) -> None:
    """Without fd/ and limits, open and max fds are absent while the rest is still exported."""
    add_process(fake_proc, 100)
    for fd in (fake_proc / "100" / "fd").iterdir():
        fd.unlink()
    (fake_proc / "100" / "fd").rmdir()
    (fake_proc / "100" / "limits").unlink()
    values = scrape(ProcessFigures(lambda: 100, reader=reader_for(fake_proc)))
    assert "dind_dockerd_process_open_fds" not in values
    assert "dind_dockerd_process_max_fds" not in values
    assert values["dind_dockerd_process_resident_memory_bytes"] == 10_000 * PAGE


def test_fake_tree_counts_fds_by_listing(fake_proc: Path) -> None:
    """A tree that is not our live procfs never trusts the directory size as a count."""
    assert reader_for(fake_proc).fd_count_from_size is False


def test_boot_time_requires_btime(tmp_path: Path) -> None:
    """A stat file without btime is refused with a message naming the file."""
    (tmp_path / "stat").write_text("cpu 1 2 3\n")
    with pytest.raises(ValueError, match="no btime"):
        read_boot_time(str(tmp_path))


@pytest.mark.parametrize(
    ("content", "expected"),
    [("1234\n", 1234), ("", None), ("garbage", None), ("0", None), (None, None)],
)
def test_pid_from_file(tmp_path: Path, content: str | None, expected: int | None) -> None:
    """The pid file provider returns the pid, or None when the file is missing, empty or bad."""
    path = tmp_path / "containerd.pid"
    if content is not None:
        path.write_text(content)
    assert pid_from_file(str(path))() == expected


@pytest.mark.parametrize(("comm", "expected"), [("containerd\n", 77), ("bash\n", None),
                                                 (None, None)])
def test_pid_from_file_checks_the_process_name(
    tmp_path: Path, comm: str | None, expected: int | None
) -> None:
    """A stale pid file naming a pid reused by another process, or a dead one, names nobody."""
    (tmp_path / "containerd.pid").write_text("77")
    if comm is not None:
        (tmp_path / "77").mkdir()
        (tmp_path / "77" / "comm").write_text(comm)
    provider = pid_from_file(str(tmp_path / "containerd.pid"), expect_comm="containerd",
                             proc_root=str(tmp_path))
    assert provider() == expected


@pytest.fixture
def sleeper() -> Iterator[int]:
    # It says when it is done starting: until then its memory moves between two reads.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        yield child.pid
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_real_proc_matches_client_python(sleeper: int) -> None:
    """On the real /proc a quiet child reads the same as prometheus_client's ProcessCollector."""
    ours = scrape(ProcessFigures(lambda: sleeper))
    theirs = {
        sample.name: sample.value
        for family in ProcessCollector(pid=lambda: sleeper, registry=None).collect()
        for sample in family.samples
    }
    assert ours["dind_dockerd_process_virtual_memory_bytes"] == (
        theirs["process_virtual_memory_bytes"]
    )
    assert ours["dind_dockerd_process_resident_memory_bytes"] == (
        theirs["process_resident_memory_bytes"]
    )
    assert ours["dind_dockerd_process_start_time_seconds"] == pytest.approx(
        theirs["process_start_time_seconds"]
    )
    assert ours["dind_dockerd_process_max_fds"] == theirs["process_max_fds"]
    assert ours["dind_dockerd_process_open_fds"] == theirs["process_open_fds"]
    assert ours["dind_dockerd_process_open_fds"] == len(os.listdir(f"/proc/{sleeper}/fd"))
    assert ours["dind_dockerd_process_cpu_seconds_total"] == pytest.approx(
        theirs["process_cpu_seconds_total"], abs=0.05
    )


def test_real_proc_self_is_plausible() -> None:
    """Our own process reads as alive: memory, CPU used, started after boot and before now."""
    reader = ProcReader.for_root()
    sample = read_process(reader, os.getpid())
    assert sample is not None
    assert sample.resident_memory_bytes > 1_000_000
    assert sample.virtual_memory_bytes >= sample.resident_memory_bytes
    assert sample.cpu_seconds > 0
    assert reader.boot_time <= sample.start_time_seconds <= time.time()
    assert sample.open_fds is not None
    assert sample.open_fds >= 3


def test_promtool_accepts_the_exposition(fake_proc: Path) -> None:
    """`promtool check metrics` finds nothing to complain about in these families."""
    add_process(fake_proc, 4242)
    registry = CollectorRegistry()
    registry.register(ProcessFigures(lambda: 4242, reader=reader_for(fake_proc)))
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
