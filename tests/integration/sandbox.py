"""A private machine for one test: the agent as PID 1 of new PID, mount and network namespaces.

``unshare --pid --fork --mount --net --mount-proc`` gives the agent PID 1;
temporary folders are bind-mounted over /var/lib/docker, /run and /certs, so
the agent and dockerd use their real default paths without touching the
machine's own. The dockerd socket is reachable from the test through the
bind-mounted /run folder; the agent's HTTP endpoint only inside the network
namespace (through nsenter). Killing the namespace's PID 1 ends every process
in it and the mount namespace with it, so cleanup cannot leak.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def poll(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Return the first truthy value of ``predicate`` within ``timeout`` seconds, else fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def ensure_mountpoints() -> None:
    # Empty directories only: the bind mounts inside the namespace need them.
    for path in ("/var/lib/docker", "/certs"):
        Path(path).mkdir(parents=True, exist_ok=True)


class Sandbox:
    """One agent in its own namespaces; use as a context manager."""

    def __init__(
        self,
        root: Path,
        *,
        agent_args: Sequence[str] = (),
        dockerd_args: Sequence[str] = ("--bridge=none",),
        env: Mapping[str, str] | None = None,
        data_root: Path | None = None,
        certs: Path | None = None,
        command: Sequence[str] | None = None,
        setup: str = "",
    ) -> None:
        self.root = root
        self.data_root = data_root or root / "lib"
        self.run_dir = root / "run"
        self.certs = certs or root / "certs"
        for path in (self.data_root, self.run_dir, self.certs):
            path.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "agent.log"
        self.agent_args = list(agent_args)
        self.dockerd_args = list(dockerd_args)
        self.env = dict(env or {})
        self.command = list(command) if command else None
        self.setup = setup
        self.process: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None  # host pid of the namespace's PID 1
        self.pid_ns: str | None = None
        self.returncode: int | None = None

    # Lifecycle ----------------------------------------------------------------

    def start(self) -> Sandbox:
        ensure_mountpoints()
        agent = self.command or [
            PYTHON,
            "-m",
            "supervisor",
            "run",
            "--log-level",
            "debug",
            *self.agent_args,
            "--",
            *self.dockerd_args,
        ]
        script = " && ".join(
            [
                f"mount --bind {shlex.quote(str(self.data_root))} /var/lib/docker",
                f"mount --bind {shlex.quote(str(self.run_dir))} /run",
                f"mount --bind {shlex.quote(str(self.certs))} /certs",
                "ip link set lo up",
                *([self.setup] if self.setup else []),
                "exec " + shlex.join(agent),
            ]
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "DOCKER_TLS_CERTDIR": "",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount",
                "--net",
                "--mount-proc",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        log.close()
        self.pid1 = poll(self._find_pid1, timeout=10, what="the namespace's PID 1")
        self.pid_ns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        return self

    def _find_pid1(self) -> int | None:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            text = children.read_text().split()
            if text:
                return int(text[0])
        if self.process.poll() is not None:
            raise RuntimeError(f"sandbox exited at once:\n{self.log_text()}")
        return None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def destroy(self) -> None:
        """KILL the namespace's PID 1: the kernel ends everything else in it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.pid1 is not None:
                    os.kill(self.pid1, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=30)
        self.returncode = self.process.returncode

    def signal(self, signum: int) -> None:
        assert self.pid1 is not None
        os.kill(self.pid1, signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        self.returncode = self.process.wait(timeout=timeout)
        return self.returncode

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # Looking inside -------------------------------------------------------------

    def ns_processes(self) -> dict[int, tuple[int, str, str]]:
        """host pid -> (pid inside, comm, state) for every process in the namespace."""
        target = self.pid_ns
        if target is None:
            return {}
        found: dict[int, tuple[int, str, str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns/pid") != target:
                    continue
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            inner = int(fields.get("NSpid", "0").split()[-1])
            if inner == 1 and int(entry.name) != self.pid1:
                # The kernel reused the id of our dead namespace for a new one.
                return {}
            found[int(entry.name)] = (inner, fields.get("Name", ""), fields.get("State", "")[:1])
        return found

    def host_pids(self, comm: str) -> list[int]:
        return sorted(
            pid for pid, (_inner, name, _state) in self.ns_processes().items() if name == comm
        )

    def dockerd_pid(self) -> int | None:
        pids = self.host_pids("dockerd")
        return pids[0] if pids else None

    def agent_pid(self) -> int | None:
        """The agent: the python child of PID 1."""
        for pid, (inner, name, _state) in self.ns_processes().items():
            if inner != 1 and name.startswith("python") and _ppid(pid) == self.pid1:
                return pid
        return None

    def nsenter(
        self, *cmd: str, timeout: float = 30, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        assert self.pid1 is not None
        return subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-n", "-m", "-p", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def http(self, path: str, *, timeout: float = 5) -> tuple[int, str]:
        """GET the agent's endpoint from inside the namespace's network."""
        assert self.pid1 is not None
        result = subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.pid1),
                "-n",
                "--",
                "curl",
                "-s",
                "-m",
                str(timeout),
                "-w",
                "\n%{http_code}",
                f"http://127.0.0.1:9324{path}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0), body

    def status(self) -> dict[str, Any]:
        code, body = self.http("/status")
        assert code == 200, body
        return dict(json.loads(body))

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        code, body = self.http("/metrics")
        assert code == 200, body
        return metric_value(body, name, labels)

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    def docker(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "DOCKER_CONFIG": str(self.root / "docker-config")},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}")
        return result

    def docker_answers(self) -> bool:
        return (
            self.socket.exists() and self.docker("version", timeout=10, check=False).returncode == 0
        )

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if not self.alive:
                raise AssertionError(
                    f"the agent exited ({self.process.returncode}):\n"  # type: ignore[union-attr]
                    f"{self.log_tail()}"
                )
            return self.http("/readyz")[0] == 200

        try:
            poll(ready, timeout=timeout, interval=0.05, what="/readyz = 200")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; log:\n{self.log_tail()}") from None

    # Logs ----------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def events(self) -> list[dict[str, Any]]:
        return json_log_events(self.log_text())

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    def iter_dockerd_lines(self) -> Iterator[str]:
        for event in self.events():
            if event.get("source") == "dockerd":
                yield str(event.get("event", ""))


def json_log_events(text: str) -> list[dict[str, Any]]:
    """The agent's JSON log lines in ``text`` (anything else, e.g. tracebacks, is skipped)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
    return found


def metric_value(
    exposition: str, name: str, labels: Mapping[str, str] | None = None
) -> float | None:
    """The first sample called ``name`` whose labels include ``labels``, from /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(sample.value)
    return None


@contextlib.contextmanager
def sandbox_pool(root: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes under ``root``; on exit every one is killed and checked empty."""
    started: list[Sandbox] = []
    counter = iter(range(1000))

    def make(**kwargs: Any) -> Sandbox:
        where = kwargs.pop("root", None) or root / f"sandbox{next(counter)}"
        where.mkdir(parents=True, exist_ok=True)
        factory = kwargs.pop("factory", Sandbox)  # a subclass (tests/integration/rootless.py)
        setup_for = kwargs.pop("setup_for", None)  # a setup that needs the sandbox's folder
        if setup_for is not None:
            kwargs["setup"] = setup_for(where)
        box = factory(where, **kwargs)
        started.append(box)
        return box.start()

    try:
        yield make
    finally:
        for box in started:
            box.destroy()
        for box in started:
            # The kernel tears a dead namespace down asynchronously.
            poll(
                lambda box=box: not box.ns_processes(),  # type: ignore[misc]
                timeout=30,
                what=f"an empty namespace, left: {box.ns_processes()}",
            )


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def busybox_rootfs_tar(dest: Path) -> Path:
    """A tar of /bin/busybox and its applet links: `docker import` makes an image of it."""
    import tarfile

    busybox = Path("/bin/busybox")
    tar_path = dest / "busybox.tar"
    if tar_path.exists():
        return tar_path
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tarfile.open(tar_path, "w") as tar:
        for directory in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return tar_path
