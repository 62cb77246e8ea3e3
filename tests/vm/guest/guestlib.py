"""Helpers for the scenarios that run inside the VM lane's guest (stdlib only).

This file is copied to the guest's input disk with the scenarios and run by
the guest's own python3 (Debian 13's), not by pytest: the guest has no
network and no project venv. It owns running commands with a deadline,
polling, talking to a dind container (docker exec, the agent's HTTP
endpoint through the container's network namespace) and reading the
Prometheus text format. The scenarios record what they see; the host's
pytest (tests/vm/test_vm.py) asserts on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

# 1 under KVM; larger under TCG, where everything takes about ten times longer.
SCALE = float(os.environ.get("LANE_SCALE", "1"))
INPUT = os.environ.get("LANE_INPUT", "/mnt/lane-input")


def scaled(seconds: float) -> float:
    return seconds * SCALE


class CommandFailed(RuntimeError):
    pass


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60,
    check: bool = True,
    stdin: Any = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a (scaled) deadline; a timeout is a failure, never a hang."""
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=scaled(timeout), check=False,
            stdin=stdin, env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(argv)} timed out after {scaled(timeout):.0f} s") from exc
    if check and result.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return result


def docker(*args: str, timeout: float = 60, check: bool = True,
           stdin: Any = None) -> subprocess.CompletedProcess[str]:
    """The guest host's docker CLI, talking to the guest's own docker.service."""
    return run(["docker", *args], timeout=timeout, check=check, stdin=stdin)


def poll(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.5,
         what: str = "") -> Any:
    """The first truthy value of ``predicate`` within the (scaled) deadline, else TimeoutError."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {scaled(timeout):.0f} s waiting for {what}")
        time.sleep(interval)


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The first sample ``name{labels...}`` in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, label_text = head.partition("{")
        if metric_name != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            return float(value)
    return None


def http_in_netns(pid: int, path: str, *, port: int = 9324, timeout: float = 10) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path inside the network namespace of ``pid``.

    A forked child joins that namespace (os.setns) and does the request, so
    the agent's endpoint is reached on its own loopback without docker exec
    (slow under emulation) and without any address outside the container.
    """
    import http.client

    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        code, body = 0, ""
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            os.setns(fd, os.CLONE_NEWNET)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", path)
            response = conn.getresponse()
            code, body = response.status, response.read().decode(errors="replace")
        except Exception as exc:  # the parent gets code 0 and the reason
            body = f"{type(exc).__name__}: {exc}"
        with os.fdopen(write_fd, "w") as out:
            out.write(json.dumps([code, body]))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as data:
        raw = data.read()
    os.waitpid(child, 0)
    code, body = json.loads(raw) if raw else (0, "no answer")
    return int(code), str(body)


class Dind:
    """One dind container of the image under test in the guest's docker.service."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def start(cls, name: str, image: str, *, options: Sequence[str] = (),
              dockerd_args: Sequence[str] = (), privileged: bool = True) -> Dind:
        docker("rm", "-f", "-v", name, check=False)
        docker("run", "-d", "--name", name, *(["--privileged"] if privileged else []),
               *options, image, *dockerd_args, timeout=120)
        return cls(name)

    def inspect(self, fmt: str) -> str:
        return docker("inspect", "-f", fmt, self.name).stdout.strip()

    @property
    def pid(self) -> int:
        """The container's PID 1 (the agent's init) as the guest host sees it."""
        return int(self.inspect("{{.State.Pid}}"))

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exec(self, *cmd: str, timeout: float = 60, check: bool = True,
             stdin: Any = None) -> subprocess.CompletedProcess[str]:
        return docker("exec", *(["-i"] if stdin is not None else []), self.name, *cmd,
                      timeout=timeout, check=check, stdin=stdin)

    def docker(self, *args: str, timeout: float = 60, check: bool = True,
               stdin: Any = None) -> subprocess.CompletedProcess[str]:
        """The nested docker CLI over the nested dockerd's unix socket."""
        return self.exec("docker", *args, timeout=timeout, check=check, stdin=stdin)

    def http(self, path: str) -> tuple[int, str]:
        return http_in_netns(self.pid, path)

    def status(self) -> dict[str, Any]:
        code, body = self.http("/status")
        if code != 200:
            raise CommandFailed(f"/status of {self.name}: {code} {body[:500]}")
        return dict(json.loads(body))

    def metrics(self) -> str:
        code, body = self.http("/metrics")
        if code != 200:
            raise CommandFailed(f"/metrics of {self.name}: {code} {body[:500]}")
        return body

    def logs(self) -> str:
        result = docker("logs", self.name, check=False, timeout=60)
        return result.stdout + result.stderr

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if name is None or event.get("event") == name:
                        found.append(event)
        return found

    def wait_ready(self, timeout: float = 90) -> float:
        """Poll /readyz until 200; the seconds it took. Fails early if the container exits."""
        started = time.monotonic()

        def ready() -> bool:
            if not self.running():
                raise CommandFailed(f"{self.name} exited:\n{self.logs()[-3000:]}")
            return self.http("/readyz")[0] == 200

        try:
            poll(ready, timeout=timeout, interval=0.5, what=f"{self.name} ready")
        except TimeoutError as exc:
            raise CommandFailed(f"{exc}\n{self.logs()[-3000:]}") from None
        return time.monotonic() - started

    def load_busybox(self, tag: str = "busybox:test") -> str:
        with open(f"{INPUT}/images/busybox.tar", "rb") as tar:
            self.docker("import", "-", tag, stdin=tar, timeout=120)
        return tag

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False, timeout=120)


def processes_in(pid_of_container: int) -> list[dict[str, Any]]:
    """Every process in the pid namespace of a container's PID 1, as the guest host sees it."""
    target = os.readlink(f"/proc/{pid_of_container}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != target:
                continue
            status = read(f"/proc/{entry}/status") or ""
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            found.append({
                "pid": int(entry),
                "inner_pid": int(fields.get("NSpid", "0").split()[-1]),
                "ppid": int(fields.get("PPid", "0")),
                "comm": fields.get("Name", "").strip(),
                "cmdline": (read(f"/proc/{entry}/cmdline") or "").replace("\0", " ").strip(),
                "oom_score": int((read(f"/proc/{entry}/oom_score") or "0").strip() or 0),
                "oom_score_adj": int((read(f"/proc/{entry}/oom_score_adj") or "0").strip() or 0),
                "cgroup": (read(f"/proc/{entry}/cgroup") or "").strip(),
                "limits": read(f"/proc/{entry}/limits") or "",
            })
        except (OSError, ValueError):
            continue
    return found


def limit_of(limits_text: str, name: str) -> tuple[str, str] | None:
    """(soft, hard) of a /proc/<pid>/limits row such as 'Max open files'."""
    for line in limits_text.splitlines():
        if line.startswith(name):
            parts = line[len(name):].split()
            return parts[0], parts[1]
    return None
