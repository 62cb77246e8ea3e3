"""The outer dockerd of the e2e session and small helpers around the docker CLI.

The outer dockerd runs as PID 1 of private pid/mount/net namespaces through
the integration harness's ``Sandbox`` (its own data root, /run and network:
docker0 and its iptables rules stay inside), so the dind containers under
test never touch the machine's own Docker. ``Outer.docker(...)`` runs the
host's docker CLI against it; ``Dind`` wraps one dind container.

``Pool`` owns what a test makes in the outer dockerd (dind and client
containers, volumes, networks) and removes all of it, whatever the test did.

Does not own the image (``image.py``) nor what the scenarios assert.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.integration.sandbox import Sandbox, json_log_events, metric_value, poll

# --privileged fails on this machine (no CAP_SYS_RESOURCE in the bounding
# set: "unable to apply caps"); this is everything it grants that works here.
DIND_PRIVILEGES = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
)

OUTER_DOCKERD = (
    "dockerd",
    "--host", "unix:///run/docker.sock",
    "--data-root", "/var/lib/docker",
    "--exec-root", "/run/docker",
    "--pidfile", "/run/docker.pid",
    "--storage-driver", "overlay2",
)


class Outer:
    """One dockerd for the whole e2e session, in its own namespaces."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.box = Sandbox(root, command=list(OUTER_DOCKERD))

    def start(self) -> Outer:
        self.box.start()
        poll(self.box.docker_answers, timeout=60, interval=0.2, what="the outer dockerd")
        return self

    def docker(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        stdin: IO[bytes] | None = None,
        env_extra: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_CONFIG": str(self.root / "docker-config"),
               **(env_extra or {})}
        env.pop("DOCKER_HOST", None)
        env.pop("DOCKER_TLS_VERIFY", None)
        if stdin is None:
            result = subprocess.run(
                ["docker", "-H", f"unix://{self.box.socket}", *args],
                capture_output=True, text=True, timeout=timeout, check=False, env=env,
            )
        else:
            raw = subprocess.run(
                ["docker", "-H", f"unix://{self.box.socket}", *args],
                capture_output=True, timeout=timeout, check=False, env=env, stdin=stdin,
            )
            result = subprocess.CompletedProcess(
                raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                raw.stderr.decode(errors="replace"),
            )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result

    def inspect(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.docker("inspect", name).stdout)[0])

    def stop(self) -> None:
        """Remove every container, then TERM dockerd so it unmounts and frees its cgroups."""
        with contextlib.suppress(Exception):
            ids = self.docker("ps", "-aq", timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, timeout=120, check=False)
        with contextlib.suppress(Exception):
            if self.box.alive:
                self.box.signal(signal.SIGTERM)
                self.box.wait(timeout=60)
        self.box.destroy()
        poll(lambda: not self.box.ns_processes(), timeout=30,
             what=f"an empty namespace, left: {self.box.ns_processes()}")


class Dind:
    """One dind container of the image under test, in the outer dockerd."""

    def __init__(self, outer: Outer, name: str) -> None:
        self.outer = outer
        self.name = name

    @classmethod
    def run(
        cls,
        outer: Outer,
        name: str,
        image: str,
        *,
        options: Sequence[str] = (),
        dockerd_args: Sequence[str] = (),
    ) -> Dind:
        outer.docker("run", "-d", "--name", name, *DIND_PRIVILEGES, *options, image,
                     *dockerd_args)
        return cls(outer, name)

    def exec(self, *cmd: str, timeout: float = 120, check: bool = True,
             stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        return self.outer.docker("exec", *(["-i"] if stdin else []), self.name, *cmd,
                                 timeout=timeout, check=check, stdin=stdin)

    def inspect(self) -> dict[str, Any]:
        return self.outer.inspect(self.name)

    def logs(self) -> str:
        result = self.outer.docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def events(self) -> list[dict[str, Any]]:
        return json_log_events(self.logs())

    def events_named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def http(self, path: str) -> tuple[int, str]:
        """GET the agent's endpoint from inside the container (its python, no curl there)."""
        script = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen('http://127.0.0.1:9324{path}', timeout=5)\n"
            "    code, body = r.status, r.read()\n"
            "except urllib.error.HTTPError as e:\n"
            "    code, body = e.code, e.read()\n"
            "sys.stdout.write(str(code) + '\\n' + body.decode())\n"
        )
        result = self.exec("/opt/dind-supervisor/bin/python", "-c", script, check=False)
        if result.returncode != 0:
            return 0, result.stderr
        code, _, body = result.stdout.partition("\n")
        return int(code), body

    def status(self) -> dict[str, Any]:
        code, body = self.http("/status")
        assert code == 200, body
        return dict(json.loads(body))

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        code, body = self.http("/metrics")
        assert code == 200, body
        return metric_value(body, name, labels)

    def wait_ready(self, timeout: float = 90) -> None:
        """`dind-supervisor wait` inside the container: the readiness the HEALTHCHECK uses."""
        def ready() -> bool:
            state = self.inspect()["State"]
            if not state["Running"]:
                raise AssertionError(
                    f"{self.name} exited ({state['ExitCode']}):\n{self.logs()[-4000:]}"
                )
            return self.exec("dind-supervisor", "wait", "--timeout", "5",
                             check=False).returncode == 0

        try:
            poll(ready, timeout=timeout, interval=0.5, what=f"{self.name} ready")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()[-4000:]}") from None

    def docker(self, *args: str, timeout: float = 120, check: bool = True,
               stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        """The nested docker CLI, over the nested dockerd's unix socket."""
        return self.exec("docker", *args, timeout=timeout, check=check, stdin=stdin)

    def load_busybox(self, tar: Path, tag: str = "busybox:test") -> str:
        with tar.open("rb") as stdin:
            self.docker("import", "-", tag, stdin=stdin)
        return tag

    def remove(self) -> None:
        self.outer.docker("rm", "-f", self.name, check=False, timeout=120)


_NAMES = itertools.count()


def unique(prefix: str) -> str:
    """A container, volume or network name no other test of this session uses."""
    return f"{prefix}-{os.getpid()}-{next(_NAMES)}"


class Pool:
    """Everything a test (or a fixture) makes in the outer dockerd; ``close()`` removes it all."""

    def __init__(self, outer: Outer, image: str) -> None:
        self.outer = outer
        self.image = image
        self._containers: list[str] = []
        self._volumes: list[str] = []
        self._networks: list[str] = []

    def __call__(
        self,
        *,
        name: str | None = None,
        options: Sequence[str] = (),
        dockerd_args: Sequence[str] = (),
    ) -> Dind:
        """Start a dind container of the image (detached)."""
        name = name or self.name("dind")
        return Dind.run(self.outer, name, self.image, options=options,
                        dockerd_args=dockerd_args)

    def name(self, prefix: str) -> str:
        """A container name for a test to use; whatever runs under it is removed at close."""
        name = unique(prefix)
        self._containers.append(name)
        return name

    def volume(self, prefix: str) -> str:
        """The name of a volume the first `docker run -v NAME:...` creates; removed at close."""
        name = unique(prefix)
        self._volumes.append(name)
        return name

    def network(self, prefix: str) -> str:
        """A new user-defined bridge network (its embedded DNS resolves aliases)."""
        name = unique(prefix)
        self.outer.docker("network", "create", name)
        self._networks.append(name)
        return name

    def run(self, *args: str, timeout: float = 180,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker run ARGS` under a unique name, removed at close (even after a timeout)."""
        return self.outer.docker("run", "--name", self.name("client"), *args,
                                 timeout=timeout, check=check)

    def start(self, *args: str) -> str:
        """`docker run -d` a long-lived helper container; its name."""
        name = self.name("helper")
        self.outer.docker("run", "-d", "--name", name, *args)
        return name

    def close(self) -> None:
        for name in reversed(self._containers):
            self.outer.docker("rm", "-f", "-v", name, check=False, timeout=120)
        for volume in self._volumes:
            self.outer.docker("volume", "rm", "-f", volume, check=False)
        for network in self._networks:
            self.outer.docker("network", "rm", network, check=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsDaemon:
    """A dind container as the docker:dind documentation starts it, shared by client scenarios.

    It is ``docker`` on ``network`` and listens on tcp 2376 with TLS; the CA
    and the client certificates are on the volumes ``ca_volume`` and
    ``client_volume``; ``address`` is its IP on ``network``, reachable from
    the outer dockerd's network namespace.
    """

    dind: Dind
    network: str
    ca_volume: str
    client_volume: str
    address: str
    pool: Pool

    def client_certs(self) -> str:
        """The client folder's path in the outer dockerd's mount namespace (for nsenter -m)."""
        return self.pool.outer.docker(
            "volume", "inspect", "-f", "{{.Mountpoint}}", self.client_volume
        ).stdout.strip()

    def client(self, script: str, *options: str,
               timeout: float = 180) -> tuple[int, str]:
        """Run ``sh -c script`` in a client container of the image: (exit code, stdout+stderr)."""
        result = self.pool.run(
            "--rm", "--network", self.network,
            "-e", "DOCKER_HOST=tcp://docker:2376", "-e", "DOCKER_TLS_VERIFY=1",
            "-e", "DOCKER_CERT_PATH=/certs/client",
            "-v", f"{self.client_volume}:/certs/client:ro",
            *options, "--entrypoint", "sh", self.pool.image, "-c", script,
            timeout=timeout, check=False,
        )
        return result.returncode, result.stdout + result.stderr
