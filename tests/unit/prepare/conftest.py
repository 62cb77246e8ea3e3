"""Fakes for the preparation tests: a cgroupfs tree, a mount table, a command runner.

Each imitates the kernel or tool behaviour the code depends on, and nothing
more; they are handed to tests through fixtures so test files need no imports
from here.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from supervisor.prepare.iptables import RunResult
from supervisor.prepare.mounts import MS_REC, MS_REMOUNT, MS_SHARED


class FakeCgroupTree:
    """A tmp directory that behaves like a cgroup v2 namespace root.

    Writing a pid to <group>/cgroup.procs moves it (ESRCH when the process has
    exited, EBUSY into a group that distributes controllers); writing +name to
    cgroup.subtree_control fails with ENOENT for a controller the group lacks
    and EBUSY while the group holds processes (the "no internal processes"
    rule, which applies to a namespace root). ``spawn_reads`` makes a new
    process appear in the root right after each of the first N listings of
    the root's cgroup.procs, as ``docker exec`` does during startup.
    """

    def __init__(
        self,
        root: Path,
        *,
        controllers: Sequence[str] = ("cpuset", "cpu", "io", "memory", "pids"),
        pids: Iterable[int] = (1, 7, 42),
        spawn_reads: int = 0,
        vanishing: Iterable[int] = (),
        stuck: dict[int, int] | None = None,
        refuse: dict[str, int] | None = None,
        mount_point: str = "/sys/fs/cgroup",
        threaded_rules: bool = False,
    ) -> None:
        self.root = root  # where the files live
        self.mount_point = mount_point  # the path the code under test uses
        self.procs: dict[str, list[int]] = {"": list(pids)}
        self.controllers: dict[str, list[str]] = {"": list(controllers)}
        self.subtree: dict[str, list[str]] = {"": []}
        self.spawn_reads = spawn_reads
        self.vanishing = set(vanishing)
        self.stuck = dict(stuck or {})
        self.refuse = dict(refuse or {})
        self.next_pid = 1000
        # The kernel's finer rule (cgroup_vet_subtree_control_enable): threaded
        # controllers may be enabled beside processes while no child is populated,
        # which makes the group a thread root; domain ones are then EOPNOTSUPP.
        self.threaded_rules = threaded_rules
        self.writes: list[tuple[str, str]] = []
        root.mkdir(parents=True, exist_ok=True)
        self._sync("")

    # -- helpers ------------------------------------------------------------
    def _group(self, path: str) -> tuple[str, str]:
        rel = os.path.relpath(path, self.mount_point)
        group, name = os.path.split(rel)
        if group not in self.procs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return group, name

    def _sync(self, group: str) -> None:
        d = self.root / group
        d.mkdir(exist_ok=True)
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in self.procs[group]))
        (d / "cgroup.controllers").write_text(" ".join(self.controllers[group]) + "\n")
        (d / "cgroup.subtree_control").write_text(" ".join(self.subtree[group]) + "\n")

    def spawn(self) -> int:
        self.next_pid += 1
        self.procs[""].append(self.next_pid)
        self._sync("")
        return self.next_pid

    # -- the CgroupFS protocol ----------------------------------------------
    def read_text(self, path: str) -> str:
        group, name = self._group(path)
        text = (self.root / group / name).read_text()
        if group == "" and name == "cgroup.procs" and self.spawn_reads > 0:
            self.spawn_reads -= 1
            self.spawn()  # appears after the listing was taken
        return text

    def write_text(self, path: str, text: str) -> None:
        group, name = self._group(path)
        self.writes.append((os.path.join(group, name), text))
        if name == "cgroup.procs":
            self._move(int(text), group)
        elif name == "cgroup.subtree_control":
            self._control(group, text)
        else:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        for g in self.procs:
            self._sync(g)

    def _move(self, pid: int, dest: str) -> None:
        src = next((g for g, ps in self.procs.items() if pid in ps), None)
        if pid in self.vanishing:
            if src is not None:
                self.procs[src].remove(pid)
            raise ProcessLookupError(errno.ESRCH, "No such process")
        if src is None:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        if pid in self.stuck:
            code = self.stuck[pid]
            raise OSError(code, os.strerror(code))
        if dest != "" and self.subtree[dest]:
            raise OSError(errno.EBUSY, "Device or resource busy")
        self.procs[src].remove(pid)
        self.procs[dest].append(pid)

    def _control(self, group: str, text: str) -> None:
        for token in text.split():
            sign, name = token[0], token[1:]
            if name not in self.controllers[group]:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory")
            if name in self.refuse:
                code = self.refuse[name]
                raise OSError(code, os.strerror(code))
            if sign == "+":
                if self.procs[group] and self.threaded_rules:
                    self._vet_threaded(group, name)
                elif self.procs[group]:
                    raise OSError(errno.EBUSY, "Device or resource busy")
                if name not in self.subtree[group]:
                    self.subtree[group].append(name)
            elif name in self.subtree[group]:
                self.subtree[group].remove(name)

    THREADED = frozenset({"cpuset", "cpu", "pids", "perf_event"})

    def _vet_threaded(self, group: str, name: str) -> None:
        """The kernel's check for a group holding processes (threaded_rules only)."""
        populated_child = any(
            self.procs[g] for g in self.procs if g and os.path.dirname(g) == group
        )
        thread_root = any(c in self.THREADED for c in self.subtree[group])
        if name not in self.THREADED and thread_root:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        domain_enabled = any(c not in self.THREADED for c in self.subtree[group])
        if name in self.THREADED and not populated_child and not domain_enabled:
            return
        raise OSError(errno.EBUSY, "Device or resource busy")

    def make_dir(self, path: str) -> None:
        rel = os.path.relpath(path, self.mount_point)
        parent = os.path.dirname(rel)
        if parent not in self.procs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if rel in self.procs:
            return
        self.procs[rel] = []
        self.controllers[rel] = list(self.subtree[parent])
        self.subtree[rel] = []
        self._sync(rel)


ROOT_LINE = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw"


class FakeMountSystem:
    """An in-memory mount table: mount(2) appends a mountinfo line or marks mounts shared."""

    def __init__(
        self,
        lines: Sequence[str] = (ROOT_LINE,),
        *,
        dirs: Iterable[str] = ("/sys/kernel/security", "/tmp"),
        fail: dict[str, int] | None = None,
        silent: bool = False,
    ) -> None:
        self.lines = list(lines)
        self.dirs = set(dirs)
        self.fail = dict(fail or {})
        self.silent = silent  # mount() "succeeds" without changing the table
        self.calls: list[tuple[str | None, str, str | None, int, str | None]] = []
        self.next_id = 900

    def read_mountinfo(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    def is_dir(self, path: str) -> bool:
        return path in self.dirs

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self.calls.append((source, target, fstype, flags, data))
        if target in self.fail:
            code = self.fail[target]
            raise OSError(code, os.strerror(code), target)
        if self.silent:
            return
        if flags & MS_REMOUNT:
            for i, line in enumerate(self.lines):
                left, right = line.split(" - ", 1)
                fields = left.split()
                if fields[4] == target:
                    options = [o for o in fields[5].split(",") if o not in ("ro", "rw")]
                    fields[5] = ",".join(["rw", *options])
                    self.lines[i] = " ".join(fields) + " - " + right
            return
        if flags & MS_SHARED and flags & MS_REC:
            out = []
            for i, line in enumerate(self.lines):
                left, right = line.split(" - ", 1)
                fields = [f for f in left.split() if not f.startswith(("shared:", "master:"))]
                out.append(" ".join([*fields, f"shared:{50 + i}"]) + " - " + right)
            self.lines = out
            return
        self.next_id += 1
        self.lines.append(f"{self.next_id} 27 0:99 / {target} rw,relatime - {fstype} {source} rw")


class FakeRunner:
    """Answers commands by basename with canned results; records every call in order."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers: dict[str, Any] = dict(answers or {})
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        self.calls.append(list(argv))
        key = " ".join([os.path.basename(argv[0]), *argv[1:]])
        answer = self.answers.get(key, (0, "", ""))
        if callable(answer):
            answer = answer(list(argv))
        code, out, err = answer
        return RunResult(returncode=code, stdout=out, stderr=err)

    def ran(self, key: str) -> bool:
        return any(" ".join([os.path.basename(c[0]), *c[1:]]) == key for c in self.calls)


def make_bin_dir(where: Path, names: Iterable[str]) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        p = where / name
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return where


ALL_IPTABLES = [
    f"{base}-{backend}{suffix}"
    for base in ("iptables", "ip6tables")
    for backend in ("legacy", "nft")
    for suffix in ("", "-save", "-restore")
]


@pytest.fixture
def cgroup_tree(tmp_path: Path) -> Callable[..., FakeCgroupTree]:
    return lambda **kw: FakeCgroupTree(tmp_path / "cgroup", **kw)


@pytest.fixture
def mount_system() -> type[FakeMountSystem]:
    return FakeMountSystem


@pytest.fixture
def fake_runner() -> type[FakeRunner]:
    return FakeRunner


@pytest.fixture
def bin_dir(tmp_path: Path) -> Callable[..., Path]:
    return lambda names=(*ALL_IPTABLES, "modprobe"): make_bin_dir(
        tmp_path / "bin", names
    )
