"""Chaos: a seeded sequence of faults against a real dockerd supervised by the agent as PID 1.

One sandbox (private pid/mount/net namespaces), TLS on (DOCKER_TLS_CERTDIR=/certs, a
server certificate of 30 s, so the agent renews it about every 20 s), dockerd with
--live-restore, fast liveness settings, a small tmpfs as the data root, three
running containers and a named volume holding a checksummed file. After every
fault: the agent is alive (same pid), dockerd is ready again within the fault's
budget, the containers run on with the same pids, the checksum is unchanged, no
zombie is left in the namespace, the agent's fd count has not grown, and
dind_dockerd_restarts_total{reason} equals exactly what the faults so far (and the
certificate renewals observed) should have caused.

Replay a run with CHAOS_SEED=<seed> (printed at the end); CHAOS_FAULTS sets the
number of faults (default 50).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import signal
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.plan import SPECS, Fault, describe, expected_restarts, plan
from tests.conftest import ReliabilityTally
from tests.integration.clientloop import ClientLoop, tally
from tests.integration.sandbox import PYTHON, REPO, Sandbox, poll

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

TIME_LIMIT = 360.0  # seconds for the faults and the final checks
SERVER_LIFETIME = 30.0
AGENT_ARGS = [
    "--liveness-interval", "0.3", "--liveness-timeout", "0.25",
    "--liveness-failures", "2", "--liveness-kill-grace", "1",
    "--restart-healthy-after", "1", "--restart-backoff-initial", "0.2",
    "--restart-backoff-max", "1", "--restart-max-failures", "20",
    "--restart-failure-window", "10s", "--restart-max-crashes", "200",
    "--restart-crash-window", "10s", "--dockerd-stop-timeout", "5",
    "--tls-server-lifetime", f"{SERVER_LIFETIME:g}s",
    # The data root is a 64 MiB tmpfs, below the default 256 MiB a start needs.
    "--dataroot-min-free", "8MiB",
]
DATA_ROOT_SIZE = "64m"
CONTAINERS = ("chaos0", "chaos1", "chaos2")
VOLUME = "chaos-data"
BLOB = f"/var/lib/docker/volumes/{VOLUME}/_data/blob"
FILL = "/var/lib/docker/chaos-fill"
FD_NOISE = 8
ROTATION_MARGIN = 2.0  # added to each fault's span (plan.FaultSpec.span)
BURST_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def seed_from_env() -> int:
    raw = os.environ.get("CHAOS_SEED", "")
    return int(raw) if raw else random.SystemRandom().randrange(1, 2**31)


class LogTail:
    """The agent's JSON log events written since the last call (no re-reading)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def skip(self) -> None:
        self._offset = self._path.stat().st_size
        self._partial = b""

    def new(self) -> list[dict[str, Any]]:
        with self._path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


class Chaos:
    """The sandbox under test, what it should look like, and the faults."""

    def __init__(self, box: Sandbox, rng: random.Random) -> None:
        self.box = box
        self.rng = rng
        self.tail = LogTail(box.log_path)
        self.done: list[Fault] = []
        self.rotations_at_start = 0
        self.container_pids: dict[str, int] = {}
        self.starts: dict[int, str] = {}
        self.checksum = ""
        self.agent = 0
        self.fd_baseline = 0
        self.fd_max = 0
        self.client_deleted = False
        self.allowed_rotation_failures = 0.0
        self.injected_at = 0.0
        # Instants (time.monotonic) dockerd was killed with -9, or stopped for the agent to
        # kill: a client call in flight then is cut, counted apart from failed ones.
        self.kills: list[float] = []
        self.loop: ClientLoop | None = None

    # Looking --------------------------------------------------------------

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        code, body = self.box.http("/metrics")
        assert code == 200, f"/metrics answered {code}"
        samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples[sample.name, frozenset(sample.labels.items())] = sample.value
        return samples

    def restarts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (name, labels), value in self.scrape().items():
            if name == "dind_dockerd_restarts_total" and value:
                counts[dict(labels)["reason"]] += int(value)
        return counts

    def value(self, name: str, **labels: str) -> float:
        wanted = frozenset(labels.items())
        return sum(
            v for (n, ls), v in self.scrape().items() if n == name and wanted <= ls
        )

    def server_rotations(self) -> int:
        return int(self.value("dind_tls_rotations_total", cert="server"))

    def expected(self) -> Counter[str]:
        rotations = self.server_rotations() - self.rotations_at_start
        return expected_restarts(self.done, rotations)

    def ready(self) -> bool:
        return self.box.http("/readyz")[0] == 200

    def seconds_to_rotation(self) -> float:
        nxt = self.box.status()["tls"]["next_rotation"]
        if nxt is None:
            return float("inf")
        return (dt.datetime.fromisoformat(nxt) - dt.datetime.now(dt.UTC)).total_seconds()

    def agent_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.agent}/fd"))

    def volume_checksum(self) -> str:
        result = self.box.nsenter("sha256sum", BLOB)
        return result.stdout.split()[0] if result.returncode == 0 else f"missing: {result.stderr}"

    def dockerd_children(self) -> list[int]:
        """dockerd processes among the agent's children (fast: no /proc walk)."""
        found = []
        for task in Path(f"/proc/{self.agent}/task").iterdir():
            with contextlib.suppress(OSError):
                for pid in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        if Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd":
                            found.append(int(pid))
        return found

    def inspect_containers(self) -> dict[str, int]:
        out = self.box.docker(
            "inspect", "-f", "{{.Name}} {{.State.Pid}} {{.State.Running}}", *CONTAINERS,
            timeout=30, check=False,
        )
        pids = {}
        for line in out.stdout.splitlines():
            name, pid, running = line.split()
            pids[name.lstrip("/")] = int(pid) if running == "true" else -1
        return pids

    def container_starts(self) -> dict[int, str]:
        """Start time of each container's process, read inside the namespace (pids are the
        namespace's): a process replaced under the same pid would show a new start time."""
        pids = " ".join(str(pid) for pid in self.container_pids.values())
        script = f"for p in {pids}; do echo $p $(cut -d' ' -f22 /proc/$p/stat); done"
        out = self.box.nsenter("sh", "-c", script).stdout
        return {int(p): start for p, _, start in (line.partition(" ") for line in out.splitlines())}

    # Setting up -------------------------------------------------------------

    def setup(self, busybox_tar: Path) -> None:
        box = self.box
        box.wait_ready(timeout=60)
        box.docker("import", str(busybox_tar), "busybox:test")
        for name in CONTAINERS:
            box.docker("run", "-d", "--network", "none", "--name", name,
                       "busybox:test", "sleep", "100000")
        box.docker("volume", "create", VOLUME)
        made = box.docker(
            "run", "--rm", "--network", "none", "-v", f"{VOLUME}:/data", "busybox:test",
            "sh", "-c", "head -c 1048576 /dev/urandom > /data/blob && sha256sum /data/blob",
        )
        self.checksum = made.stdout.split()[0]
        assert self.volume_checksum() == self.checksum
        self.container_pids = self.inspect_containers()
        assert all(pid > 0 for pid in self.container_pids.values()), self.container_pids
        self.starts = self.container_starts()
        assert all(self.starts.values()), self.starts
        agent = box.agent_pid()
        assert agent is not None
        self.agent = agent
        self.rotations_at_start = self.server_rotations()
        assert not self.restarts(), "dockerd restarted before the first fault"
        self.fd_baseline = self.fd_max = self.agent_fds()
        self.tail.skip()

    # Rotations --------------------------------------------------------------

    def wait_for_rotation(self, timeout: float) -> None:
        """Let the agent renew the server certificate and finish the restart it causes."""
        before = self.server_rotations()
        poll(lambda: self.server_rotations() > before, timeout=timeout, interval=0.2,
             what="the agent's next rotation")
        expected = self.expected()
        poll(lambda: self.restarts() == expected and self.ready(), timeout=30, interval=0.1,
             what=f"dockerd ready after the rotation with restarts {dict(expected)}")

    def keep_clear_of_rotation(self, fault: Fault) -> None:
        """Faults other than the rotation kill must not overlap a rotation restart."""
        seconds = self.seconds_to_rotation()
        if seconds < SPECS[fault].span + ROTATION_MARGIN:
            self.wait_for_rotation(timeout=max(seconds, 0) + 30)

    # Faults -----------------------------------------------------------------

    def dockerd(self) -> int:
        pid = self.box.dockerd_pid()
        assert pid is not None, "no dockerd"
        return pid

    def inject(self, fault: Fault) -> Callable[[], bool]:
        """Inject ``fault``; return a predicate that is true once it has played out."""
        box = self.box
        self.injected_at = time.monotonic()
        match fault:
            case Fault.KILL_DOCKERD:
                old = self.dockerd()
                self.kills.append(time.monotonic())
                os.kill(old, signal.SIGKILL)
                return lambda: box.dockerd_pid() not in (None, old)
            case Fault.KILL_DOCKERD_STARTING:
                old = self.dockerd()
                self.kills.append(time.monotonic())
                os.kill(old, signal.SIGKILL)
                new = poll(lambda: [p for p in self.dockerd_children() if p != old],
                           timeout=15, interval=0.002, what="the replacement dockerd")[0]
                self.kills.append(time.monotonic())
                os.kill(new, signal.SIGKILL)
                return lambda: box.dockerd_pid() not in (None, old, new)
            case Fault.KILL_DOCKERD_ROTATING:
                old = self.dockerd()
                wait = max(self.seconds_to_rotation(), 0) + 30
                self.tail.skip()
                poll(lambda: any(e.get("event") == "dockerd_terminating"
                                 for e in self.tail.new()),
                     timeout=wait, interval=0.005, what="the rotation's TERM to dockerd")
                self.injected_at = time.monotonic()
                self.kills.append(self.injected_at)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old, signal.SIGKILL)
                return lambda: box.dockerd_pid() not in (None, old)
            case Fault.STOP_DOCKERD:
                old = self.dockerd()
                self.kills.append(time.monotonic())  # found hung, it ends with the agent's KILL
                os.kill(old, signal.SIGSTOP)
                return lambda: box.dockerd_pid() not in (None, old)
            case Fault.KILL_CONTAINERD:
                old_pids = box.host_pids("containerd")
                assert old_pids, "no containerd"
                os.kill(old_pids[0], signal.SIGKILL)

                def containerd_back() -> bool:
                    pids = box.host_pids("containerd")
                    return bool(pids) and pids != old_pids and box.docker(
                        "exec", CONTAINERS[0], "true", timeout=10, check=False
                    ).returncode == 0

                return containerd_back
            case Fault.SIGNAL_BURST:
                self.tail.skip()
                count = self.rng.randint(3, 12)
                for _ in range(count):
                    box.signal(self.rng.choice(BURST_SIGNALS))
                return lambda: any(e.get("event") == "signal_received" for e in self.tail.new())
            case Fault.FILL_DATA_ROOT:
                filled = box.nsenter("sh", "-c", f"dd if=/dev/zero of={FILL} bs=1M 2>&1",
                                     timeout=60)
                assert "No space left on device" in filled.stdout, filled.stdout
                assert self.value("dind_data_root_free_bytes") < 1 << 20
                assert box.http("/healthz")[0] == 200
                assert self.ready()
                assert box.docker("ps", "-q", timeout=20).stdout.split()
                removed = box.nsenter("rm", "-f", FILL)
                assert removed.returncode == 0, removed.stderr
                return lambda: self.value("dind_data_root_free_bytes") > 32 << 20
            case Fault.CERTDIR_READONLY:
                before = tree_hashes(box.certs)
                ro = box.nsenter("mount", "-o", "remount,bind,ro", "/certs")
                assert ro.returncode == 0, ro.stderr
                try:
                    rotated = box.nsenter(PYTHON, "-m", "supervisor", "certs", "rotate",
                                          "--certdir", "/certs", cwd=REPO, timeout=60)
                    assert rotated.returncode == 2, (rotated.returncode, rotated.stderr)
                    assert "/certs/" in rotated.stderr, rotated.stderr
                    assert "Read-only file system" in rotated.stderr, rotated.stderr
                    old = self.dockerd()
                    self.kills.append(time.monotonic())
                    os.kill(old, signal.SIGKILL)
                    poll(lambda: box.dockerd_pid() not in (None, old) and self.ready(),
                         timeout=SPECS[fault].budget, what="dockerd ready on a read-only certdir")
                finally:
                    rw = box.nsenter("mount", "-o", "remount,bind,rw", "/certs")
                assert rw.returncode == 0, rw.stderr
                assert tree_hashes(box.certs) == before, "the read-only certdir changed"
                return self.ready
            case Fault.DELETE_CLIENT_CERTS:
                for name in ("ca.pem", "cert.pem", "key.pem"):
                    with contextlib.suppress(FileNotFoundError):
                        (box.certs / "client" / name).unlink()
                self.client_deleted = True
                # The agent notices at its next look at the certdir and issues new ones.
                return lambda: all(
                    (box.certs / "client" / name).exists()
                    for name in ("ca.pem", "cert.pem", "key.pem")
                )
        raise AssertionError(f"unknown fault {fault}")  # pragma: no cover

    # Checking ---------------------------------------------------------------

    def check(self, fault: Fault) -> list[str]:
        """Every invariant after a fault; the list of what does not hold."""
        box = self.box
        problems = []
        if not box.alive:
            return [f"the agent exited ({box.process and box.process.returncode})"]
        if box.agent_pid() != self.agent:
            problems.append(f"the agent was replaced: pid {box.agent_pid()} != {self.agent}")
        expected = self.expected()
        try:
            poll(lambda: self.restarts() == expected and self.ready(), timeout=10,
                 interval=0.1, what="the restart counter to settle")
        except TimeoutError:
            problems.append(f"restarts {dict(self.restarts())} != expected {dict(expected)}"
                            f" or not ready")
        pids = self.inspect_containers()
        if pids != self.container_pids:
            problems.append(f"containers changed: {pids} != {self.container_pids}")
        if self.container_starts() != self.starts:
            problems.append(f"container processes replaced: {self.container_starts()}"
                            f" != {self.starts}")
        if self.volume_checksum() != self.checksum:
            problems.append("DATA LOST: the volume's checksum changed")
        try:
            poll(lambda: not [p for p in box.ns_processes().values() if p[2] == "Z"],
                 timeout=5, interval=0.1, what="no zombie")
        except TimeoutError:
            zombies = [p for p in box.ns_processes().values() if p[2] == "Z"]
            problems.append(f"zombies left: {zombies}")
        try:
            poll(lambda: self.agent_fds() <= self.fd_baseline + FD_NOISE, timeout=5,
                 interval=0.1, what="the agent's fds to settle")
        except TimeoutError:
            problems.append(f"agent fds grew: {self.agent_fds()} > {self.fd_baseline} + noise")
        self.fd_max = max(self.fd_max, self.agent_fds())
        # A renewal may fail only while the certdir is read-only (the agent looks
        # at it every second or so); once writable again, the retry succeeds.
        failures = self.value("dind_tls_rotation_failures_total")
        if fault is Fault.CERTDIR_READONLY:
            self.allowed_rotation_failures = failures
            try:
                poll(lambda: self.box.status()["tls"]["rotation_failures"] == 0, timeout=15,
                     interval=0.2, what="a successful renewal after the certdir is writable")
            except TimeoutError:
                problems.append("renewals still failing after the certdir is writable again")
        elif failures != self.allowed_rotation_failures:
            problems.append(f"{failures:g} rotation failures counted"
                            f" ({self.allowed_rotation_failures:g} while read-only)")
        return problems


@pytest.fixture
def chaos(
    chaos_sandbox: Callable[..., Sandbox], chaos_busybox_tar: Path
) -> Iterator[tuple[Chaos, int]]:
    """The sandbox set up, with a TLS client calling dockerd every 100 ms throughout."""
    seed = seed_from_env()
    print(f"chaos seed {seed} (replay: CHAOS_SEED={seed})")
    box = chaos_sandbox(
        agent_args=AGENT_ARGS,
        env={"DOCKER_TLS_CERTDIR": "/certs"},
        setup=f"mount -t tmpfs -o size={DATA_ROOT_SIZE} chaos-data-root /var/lib/docker",
    )
    state = Chaos(box, random.Random(seed))
    state.setup(chaos_busybox_tar)
    assert box.pid1 is not None
    # The client certificates as the loop starts: the client keeps them in memory, as a
    # CI job does, so deleting them from disk later does not change what it presents.
    with ClientLoop(box.pid1, box.certs / "client", box.root / "client-calls.jsonl",
                    limit=TIME_LIMIT + 120) as loop:
        state.loop = loop
        yield state, seed


def test_seeded_faults_are_survived_without_losing_data(
    chaos: tuple[Chaos, int], reliability_tally: ReliabilityTally
) -> None:
    """Every fault of a seeded sequence is survived: dockerd back, containers and data intact."""
    state, seed = chaos
    count = int(os.environ.get("CHAOS_FAULTS", "50"))
    faults = plan(seed, count)
    started = time.monotonic()
    recovery: dict[Fault, list[float]] = defaultdict(list)
    failed: list[str] = []
    reliability_tally.notes.append(
        f"chaos seed {seed} (replay: CHAOS_SEED={seed}); faults: {describe(faults)}"
    )
    for index, fault in enumerate(faults, 1):
        problems: list[str] = []
        if fault is not Fault.KILL_DOCKERD_ROTATING:
            state.keep_clear_of_rotation(fault)
        try:
            played_out = state.inject(fault)
            state.done.append(fault)
            reliability_tally.faults += 1
            poll(played_out, timeout=SPECS[fault].budget, interval=0.05,
                 what=f"{fault.value} to play out")
            poll(state.ready, timeout=SPECS[fault].budget, interval=0.05,
                 what="dockerd ready again")
            recovery[fault].append(time.monotonic() - state.injected_at)
        except (AssertionError, TimeoutError) as exc:
            if fault not in state.done:
                state.done.append(fault)
                reliability_tally.faults += 1
            problems.append(f"{type(exc).__name__}: {exc}")
        problems += state.check(fault)
        if any(p.startswith("DATA LOST") for p in problems):
            reliability_tally.data_lost += 1
        if problems:
            failed.append(f"#{index} {fault.value}: " + "; ".join(problems))
        else:
            reliability_tally.survived += 1
        if not state.box.alive or not state.ready():
            failed.append(f"stopped after #{index}: the agent or dockerd did not come back")
            break

    # The end state: client certificates issued again, TLS works, data intact.
    if state.client_deleted and not (state.box.certs / "client" / "cert.pem").exists():
        state.wait_for_rotation(timeout=state.seconds_to_rotation() + 30)
    tls = state.box.nsenter(
        "env", f"DOCKER_CONFIG={state.box.root / 'docker-config'}",
        "docker", "--tlsverify", "--tlscacert=/certs/client/ca.pem",
        "--tlscert=/certs/client/cert.pem", "--tlskey=/certs/client/key.pem",
        "-H", "tcp://127.0.0.1:2376", "version", "--format", "{{.Server.Version}}",
    )
    if tls.returncode != 0:
        failed.append(f"the docker CLI over TLS failed at the end: {tls.stderr}")
    read_back = state.box.docker(
        "run", "--rm", "--network", "none", "-v", f"{VOLUME}:/data", "busybox:test",
        "sha256sum", "/data/blob", check=False,
    )
    if read_back.stdout.split()[:1] != [state.checksum]:
        reliability_tally.data_lost += 1
        failed.append(f"DATA LOST: the volume read back through docker: {read_back.stdout}")
    elapsed = time.monotonic() - started
    assert state.loop is not None
    calls = tally(state.loop.stop(), state.kills)
    reliability_tally.client_calls += calls.calls
    reliability_tally.client_failed += len(calls.failed)
    reliability_tally.client_cut_by_kill += len(calls.cut_by_kill)
    if calls.failed:
        failed.append("client calls failed: " + calls.describe() + "; first: "
                      + ", ".join(f"{c.error} at {c.start - started:+.1f} s"
                                  for c in calls.failed[:5]))

    timing = ", ".join(
        f"{kind.value} {statistics.median(times):.1f}/{max(times):.1f}"
        for kind, times in recovery.items()
    )
    restarts = state.restarts()
    reliability_tally.notes.append(
        f"chaos: {len(state.done)} faults in {elapsed:.0f} s; seconds to ready (median/max):"
        f" {timing}; restarts {dict(restarts)}; agent fds {state.fd_baseline}"
        f" -> max {state.fd_max}; client calls: {calls.describe()}"
    )
    print(reliability_tally.notes[-1])
    assert not failed, f"seed {seed}:\n" + "\n".join(failed)
    assert len(state.done) >= 50 or count < 50
    assert restarts == state.expected()
    assert elapsed < TIME_LIMIT, f"the chaos run took {elapsed:.0f} s (limit {TIME_LIMIT:g} s)"
