"""grafana/'s alert rules in a real Prometheus scraping a live agent: pending, firing, resolved.

Each test runs one agent as PID 1 of a Sandbox (TLS on) and Debian's
``prometheus`` inside the sandbox's network, mount and PID namespaces
(``nsenter -n -m -p``): it listens on 127.0.0.1:9090 there, scrapes the agent
on 127.0.0.1:9324 every second as job "dind-supervisor", and evaluates
grafana/alerts.rules.yml every second. The test's copy of the rules differs
from the shipped file only in that every ``for:`` is ``FOR``; every expression
is the shipped one (checked before Prometheus starts). Prometheus' files live
in the sandbox's /run (the agent puts a tmpfs on /tmp) and Prometheus is in
the sandbox's PID namespace, so killing the sandbox ends and removes it too.

Alert states are read through Prometheus' own HTTP API: /api/v1/alerts lists
pending and firing alerts (a resolved alert leaves the list), /api/v1/rules
gives each rule's state, health and ``for:``. Each scenario prints its
timeline (seconds since Prometheus was ready) with an ``ALERTS`` prefix and
attaches it as junit properties.

DindDockerdRestartLoop counts restarts over 15 minutes and has no ``for:``:
Prometheus fires it without a pending state, and it resolves 15 minutes after
the restarts, longer than a test may take. The test loads it unchanged (it
must fire, and must still fire at the end) and beside it a twin labelled
window="30s" whose expression differs only in that range, which shows the
resolution after recovery.

DindContainerdDown needs containerd silent for longer than its for:, and the
agent restarts a killed containerd within a tenth of a second. The test stops
it instead (SIGSTOP: alive, not answering) with the agent's liveness.failures
set out of reach, so that the agent reports it down (two missed probes, /readyz
503) without replacing it, and continues it (SIGCONT) to end the outage.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.sandbox import REPO, Sandbox, poll

pytestmark = pytest.mark.integration

RULES = REPO / "grafana" / "alerts.rules.yml"
TLS_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}
JOB = "dind-supervisor"  # the scrape job name the shipped rules rely on
AGENT = "127.0.0.1:9324"
PORT = 9090  # Prometheus' web port, on the sandbox's own loopback
INSIDE = "/run/prometheus"  # box.run_dir / "prometheus", as Prometheus sees it
FOR = "3s"  # every for: of the shipped rules, in the test's copy
FOR_SECONDS = 3.0
INTERVAL_SECONDS = 1.0  # scrape and evaluation interval
RESTART_LOOP_WINDOW = "30s"  # the twin's range instead of the shipped 15m
CERT_LIFETIME = 40  # seconds: the server certificate's lifetime in the expiry scenario
# The containerd scenario's --liveness-failures: the agent replaces a containerd that
# misses this many probes in a row (about 2 s each while it is stopped): never, here.
CONTAINERD_LIVENESS_FAILURES = 100_000
RFC3339 = re.compile(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


# The rules -------------------------------------------------------------------------------


def shipped_rules() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return doc


def shipped_alert(name: str, severity: str) -> dict[str, Any]:
    for group in shipped_rules()["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name and rule["labels"]["severity"] == severity:
                return dict(rule)
    raise AssertionError(f"{RULES} has no {name} with severity {severity}")


def window_twin(name: str, severity: str, window: str) -> dict[str, Any]:
    """The shipped rule with its one range replaced by ``window``, labelled window=<window>."""
    rule = copy.deepcopy(shipped_alert(name, severity))
    ranges = re.findall(r"\[(\w+)\]", rule["expr"])
    assert len(ranges) == 1, f"{name}: expected one range, found {ranges}"
    rule["expr"] = rule["expr"].replace(f"[{ranges[0]}]", f"[{window}]")
    rule["labels"] = {**rule["labels"], "window": window}
    return rule


def rules_for_the_test(twins: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The shipped rules with every ``for:`` shortened to FOR, plus ``twins`` in their own group."""
    shipped = shipped_rules()
    doc = copy.deepcopy(shipped)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    for ours, theirs in zip(
        (r for g in doc["groups"] for r in g["rules"]),
        (r for g in shipped["groups"] for r in g["rules"]),
        strict=True,
    ):
        assert {k: v for k, v in ours.items() if k != "for"} == {
            k: v for k, v in theirs.items() if k != "for"
        }, f"the test changed more than for: in {theirs.get('alert')}"
    if twins:
        doc["groups"].append({"name": "test-only.window-twins", "rules": list(twins)})
    return doc


def cert_thresholds() -> tuple[float, float]:
    """The shipped DindTLSCertificateExpiring thresholds: (warning fraction, critical seconds)."""
    warning = shipped_alert("DindTLSCertificateExpiring", "warning")["expr"]
    critical = shipped_alert("DindTLSCertificateExpiring", "critical")["expr"]
    fraction = re.search(r"<\s*([0-9.]+)\s*\*", warning)
    seconds = re.search(r"<\s*([0-9]+)\s*$", critical.strip())
    assert fraction, warning
    assert seconds, critical
    return float(fraction.group(1)), float(seconds.group(1))


# Prometheus ------------------------------------------------------------------------------


def parse_time(text: str) -> float:
    """Prometheus' RFC 3339 time (nanoseconds, Z) as Unix seconds."""
    match = RFC3339.match(text)
    assert match, text
    head, fraction, zone = match.groups()
    stamp = dt.datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass
class Prometheus:
    """A prometheus process in a sandbox's namespaces, asked through its HTTP API."""

    box: Sandbox
    folder: Path  # host path of INSIDE
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 30) -> str:
        path = self.folder / "prometheus.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, **params: str) -> Any:
        """GET ``path`` from inside the sandbox's network; the ``data`` of a success answer."""
        assert self.box.pid1 is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"prometheus exited ({self.process.returncode}):\n{self.log_tail()}"
            )
        args = ["nsenter", "-t", str(self.box.pid1), "-n", "--", "curl", "-sS", "-m", "3", "--get"]
        for key, value in params.items():
            args += ["--data-urlencode", f"{key}={value}"]
        result = subprocess.run(
            [*args, f"http://127.0.0.1:{PORT}{path}"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ConnectionError(f"GET {path}: {result.stderr.strip()}")
        body = json.loads(result.stdout)
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def rule(self, name: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
        found = [
            r for r in self.rules() if r["name"] == name and _labels_match(r["labels"], labels)
        ]
        assert len(found) == 1, f"{name} {dict(labels)}: {len(found)} rules"
        return found[0]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The value of a one-series instant query, None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_ready(self, rules: Mapping[str, Any]) -> None:
        """Up, scraping the agent, and every rule of ``rules`` loaded and evaluated once."""

        def answers() -> bool:
            with contextlib.suppress(ConnectionError):
                self.get("/api/v1/status/buildinfo")
                return True
            return False

        def scraping() -> bool:
            targets = self.get("/api/v1/targets")["activeTargets"]
            return any(t["labels"]["job"] == JOB and t["health"] == "up" for t in targets)

        def evaluated() -> bool:
            loaded = self.rules()
            bad = [r for r in loaded if r["health"] == "err"]
            assert not bad, [(r["name"], r["lastError"]) for r in bad]
            return len(loaded) == want and all(r["health"] == "ok" for r in loaded)

        want = sum(len(group["rules"]) for group in rules["groups"])
        try:
            poll(answers, timeout=30, interval=0.2, what="prometheus answering")
            # Service discovery hands the static target over after up to 5 s.
            poll(scraping, timeout=30, interval=0.2, what="prometheus scraping the agent")
            poll(evaluated, timeout=15, interval=0.2, what="every rule evaluated")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; prometheus log:\n{self.log_tail()}") from None

    def stop(self) -> None:
        """TERM prometheus (nsenter does not forward signals), KILL it if it lingers."""
        for pid in self.box.host_pids("prometheus"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in self.box.host_pids("prometheus"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(timeout=20)


@contextlib.contextmanager
def prometheus(box: Sandbox, *, twins: Sequence[dict[str, Any]] = ()) -> Iterator[Prometheus]:
    """Prometheus in ``box``'s namespaces with the test's copy of the rules; stopped at exit."""
    assert box.pid1 is not None
    folder = box.run_dir / "prometheus"
    folder.mkdir()
    rules = rules_for_the_test(twins)
    (folder / "rules.yml").write_text(
        yaml.safe_dump(rules, sort_keys=False, width=1_000_000), encoding="utf-8"
    )
    seconds = f"{INTERVAL_SECONDS:g}s"
    config = {
        "global": {"scrape_interval": seconds, "scrape_timeout": seconds,
                   "evaluation_interval": seconds},
        "rule_files": [f"{INSIDE}/rules.yml"],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [AGENT]}]}],
    }  # fmt: skip
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            ["nsenter", "-t", str(box.pid1), "-n", "-m", "-p", "--", "prometheus",
             f"--config.file={INSIDE}/prometheus.yml", f"--storage.tsdb.path={INSIDE}/data",
             f"--web.listen-address=127.0.0.1:{PORT}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    prom = Prometheus(box, folder, process)
    try:
        prom.wait_ready(rules)
        # What Prometheus runs: FOR where the shipped rule has a for:, none elsewhere.
        wanted = [FOR_SECONDS if "for" in r else 0 for g in rules["groups"] for r in g["rules"]]
        assert sorted(r["duration"] for r in prom.rules()) == sorted(wanted)
        yield prom
    finally:
        prom.stop()


# Watching alerts --------------------------------------------------------------------------


def _labels_match(labels: Mapping[str, str], wanted: Mapping[str, str | None]) -> bool:
    """``wanted`` values must be equal; None means the label must be absent."""
    return all(labels.get(key) == value for key, value in wanted.items())


@dataclass
class Watch:
    """One alert (its name and labels; a None label must be absent) and what was seen of it."""

    name: str
    labels: dict[str, str | None]
    seen: dict[str, float] = field(default_factory=dict)  # state -> first seen, seconds
    current: str | None = None  # "pending", "firing", or None (not in /api/v1/alerts)
    alert: dict[str, Any] = field(default_factory=dict)  # the last active entry

    @property
    def title(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in self.labels.items() if v is not None)
        return f"{self.name}{{{labels}}}"

    def matches(self, alert: Mapping[str, Any]) -> bool:
        return bool(alert["labels"]["alertname"] == self.name) and _labels_match(
            alert["labels"], self.labels
        )


class Timeline:
    """Samples /api/v1/alerts and keeps, per watched alert, when each state was first seen."""

    def __init__(self, prom: Prometheus, *watches: Watch) -> None:
        self.prom = prom
        self.watches = watches
        self.started = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def note(self, what: str) -> None:
        self.events.append((self.now(), what))

    def sample(self) -> None:
        alerts = self.prom.alerts()
        now = self.now()
        for watch in self.watches:
            found = [a for a in alerts if watch.matches(a)]
            assert len(found) <= 1, found
            if found:
                watch.alert = found[0]
                watch.current = found[0]["state"]
                watch.seen.setdefault(found[0]["state"], now)
            else:
                if watch.current is not None:
                    watch.seen.setdefault("resolved", now)
                watch.current = None

    def wait(
        self,
        watch: Watch,
        state: str,
        *,
        timeout: float,
        between: Callable[[], None] | None = None,
    ) -> float:
        """Sample until ``watch`` has been seen in ``state`` (or resolved); when, in seconds."""

        def seen() -> bool:
            if between is not None:
                between()
            self.sample()
            return state in watch.seen

        try:
            poll(seen, timeout=timeout, interval=0.2, what=f"{watch.title} {state}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from None
        return watch.seen[state]

    def report(self) -> str:
        lines = [f"  +{t:6.2f}s {what}" for t, what in self.events]
        for watch in self.watches:
            states = ", ".join(f"{s} +{t:.2f}s" for s, t in watch.seen.items()) or "never active"
            active_at = watch.alert.get("activeAt", "-")
            lines.append(f"  {watch.title}: {states} (activeAt {active_at})")
        return "\n".join(lines)

    def publish(self, record_property: Callable[[str, object], None], scenario: str) -> None:
        print(f"ALERTS {scenario}\n{self.report()}")
        record_property(f"alerts_{scenario}", self.report())


def agent_counter(box: Sandbox, name: str, labels: Mapping[str, str] | None = None) -> float:
    return box.metric(name, labels) or 0.0


# Scenarios --------------------------------------------------------------------------------


def test_crash_looping_dockerd_fires_the_restart_loop_alert_and_it_resolves(
    sandboxes: Callable[..., Sandbox],
    record_property: Callable[[str, object], None],
) -> None:
    """kill -9 dockerd until DindDockerdRestartLoop fires; after recovery the 30 s twin resolves."""
    box = sandboxes(env=TLS_ENV)
    box.wait_ready(timeout=60)
    twin = window_twin("DindDockerdRestartLoop", "warning", RESTART_LOOP_WINDOW)
    with prometheus(box, twins=[twin]) as prom:
        shipped = Watch("DindDockerdRestartLoop", {"job": JOB, "instance": AGENT, "window": None})
        scaled = Watch("DindDockerdRestartLoop", {"instance": AGENT, "window": RESTART_LOOP_WINDOW})
        timeline = Timeline(prom, shipped, scaled)
        # The shipped rule has no for: Prometheus fires it at the first true evaluation.
        assert prom.rule(shipped.name, {"window": None})["duration"] == 0
        # increase() needs the counter's 0 before the first restart.
        poll(
            lambda: (
                prom.value(f'dind_dockerd_restarts_total{{reason="exit",instance="{AGENT}"}}') == 0
            ),
            timeout=10,
            interval=0.2,
            what="the restart counter at 0 in prometheus",
        )

        kills = 0
        while "firing" not in shipped.seen:
            assert kills < 6, f"no alert after {kills} kills\n{timeline.report()}"
            dockerd = box.dockerd_pid()
            assert dockerd is not None
            os.kill(dockerd, signal.SIGKILL)
            kills += 1
            timeline.note(f"kill -9 dockerd #{kills}")

            # Ready again (a new process): the next kill is a crash, not a failed start.
            def restarted(old: int = dockerd) -> bool:
                return box.dockerd_pid() not in (None, old) and box.http("/readyz")[0] == 200

            poll(restarted, timeout=30, interval=0.1, what="dockerd restarted and ready")
            restarts = agent_counter(box, "dind_dockerd_restarts_total", {"reason": "exit"})
            timeline.note(f"dockerd ready again (restarts, reason exit: {restarts:g})")
            if kills >= 3:
                with contextlib.suppress(AssertionError):
                    timeline.wait(shipped, "firing", timeout=4 * INTERVAL_SECONDS + 2)

        timeline.wait(scaled, "firing", timeout=10)
        assert "pending" not in shipped.seen, "a rule without for: is never pending"
        # increase() extrapolates (3 restarts read as 3.2 or so); the summary says 3.
        assert float(shipped.alert["value"]) >= 3
        assert shipped.alert["annotations"]["summary"] == (
            f"dockerd on {AGENT} restarted {kills} times in 15 minutes"
        ), shipped.alert
        timeline.note(f"summary: {shipped.alert['annotations']['summary']}")
        # Recovery: dockerd stays up; the 30 s window slides past the restarts.
        timeline.note("no more kills")
        timeline.wait(scaled, "resolved", timeout=45)
        assert prom.rule(scaled.name, {"window": RESTART_LOOP_WINDOW})["state"] == "inactive"
        assert box.http("/readyz")[0] == 200
        assert prom.value(f'dind_dockerd_up{{instance="{AGENT}"}}') == 1
        # The shipped 15-minute window still holds the restarts: it keeps firing, as it must.
        timeline.sample()
        assert shipped.current == "firing", timeline.report()
        timeline.publish(record_property, "restart_loop")
    assert kills == agent_counter(box, "dind_dockerd_restarts_total", {"reason": "exit"})


def test_server_certificate_near_expiry_fires_and_resolves_after_renewal(
    sandboxes: Callable[..., Sandbox],
    record_property: Callable[[str, object], None],
) -> None:
    """Renewal blocked, a short-lived server cert nears expiry: the warning fires, then clears."""
    fraction, critical_seconds = cert_thresholds()
    box = sandboxes(env=TLS_ENV, agent_args=["--tls-server-lifetime", f"{CERT_LIFETIME}s"])
    box.wait_ready(timeout=60)
    # Block renewal, as in test_tls: the certificate really approaches its expiry.
    remount = box.nsenter("mount", "-o", "remount,bind,ro", "/certs")
    assert remount.returncode == 0, remount.stderr
    server = {"cert": "server"}
    not_before = box.metric("dind_tls_cert_not_before_timestamp_seconds", server)
    not_after = box.metric("dind_tls_cert_not_after_timestamp_seconds", server)
    assert not_before is not None
    assert not_after is not None
    lifetime = not_after - not_before
    # The critical rule is an absolute time left: any certificate this short is under it.
    assert lifetime < critical_seconds
    boundary = not_after - fraction * lifetime  # the warning's expression turns true here
    assert boundary - time.time() > 15, "too little time left to see the warning start"

    with prometheus(box) as prom:
        name = "DindTLSCertificateExpiring"
        warning = Watch(name, {"severity": "warning", "cert": "server", "instance": AGENT})
        critical = Watch(name, {"severity": "critical", "cert": "server", "instance": AGENT})
        failing = Watch("DindTLSRotationFailing", {"instance": AGENT})
        timeline = Timeline(prom, warning, critical, failing)
        left, due = not_after - time.time(), boundary - time.time()
        timeline.note(
            f"server certificate: {lifetime:.1f} s lifetime, {left:.1f} s left;"
            f" warning due in {due:.1f} s"
        )
        timeline.wait(critical, "pending", timeout=10)
        timeline.wait(critical, "firing", timeout=FOR_SECONDS + 10)
        assert "pending" not in warning.seen, timeline.report()

        timeline.wait(failing, "firing", timeout=boundary - time.time() + 10)
        timeline.note(
            f"rotation failures: {agent_counter(box, 'dind_tls_rotation_failures_total'):g}"
        )
        timeline.wait(warning, "pending", timeout=boundary - time.time() + 10)
        active_at = parse_time(warning.alert["activeAt"])
        # Pending from the first evaluation after the boundary: the threshold as shipped.
        assert boundary <= active_at <= boundary + 2 * INTERVAL_SECONDS + 1, active_at - boundary
        timeline.wait(warning, "firing", timeout=FOR_SECONDS + 10)
        assert "rotation is failing" in warning.alert["annotations"]["summary"]

        remount = box.nsenter("mount", "-o", "remount,bind,rw", "/certs")
        assert remount.returncode == 0, remount.stderr
        timeline.note("certdir writable again")
        # The agent retries with backoff (a twentieth of the lifetime, doubling).
        timeline.wait(warning, "resolved", timeout=CERT_LIFETIME)
        renewed = box.metric("dind_tls_cert_not_after_timestamp_seconds", server)
        assert renewed is not None
        assert renewed > not_after
        timeline.note(f"renewed: {renewed - time.time():.1f} s left")
        assert agent_counter(box, "dind_tls_rotations_total", server) >= 1
        assert prom.rule(name, {"severity": "warning"})["state"] == "inactive"
        # The renewed certificate is as short-lived: still under the critical threshold.
        timeline.sample()
        assert critical.current == "firing", timeline.report()
        timeline.publish(record_property, "certificate_expiry")


def test_stopped_containerd_fires_containerd_down_and_it_resolves_when_continued(
    sandboxes: Callable[..., Sandbox],
    record_property: Callable[[str, object], None],
) -> None:
    """SIGSTOP containerd: DindContainerdDown goes pending and fires; SIGCONT resolves it.

    A kill -9 would not do: the agent restarts a dead containerd within a tenth of a
    second, far shorter than any for:. A stopped containerd stays alive and silent: the
    agent reports it down after two missed probes and, with ``liveness.failures`` out of
    reach, never replaces it, so the outage lasts exactly until SIGCONT.
    """
    box = sandboxes(
        env=TLS_ENV, agent_args=["--liveness-failures", str(CONTAINERD_LIVENESS_FAILURES)]
    )
    box.wait_ready(timeout=60)
    assert box.status()["containerd"]["managed_by"] == "agent"
    containerd = poll(lambda: box.host_pids("containerd"), timeout=10, what="containerd")
    assert len(containerd) == 1, containerd
    pid = containerd[0]
    restarts = agent_counter(box, "dind_containerd_restarts_total")
    with prometheus(box) as prom:
        down = Watch("DindContainerdDown", {"job": JOB, "instance": AGENT})
        dockerd_down = Watch("DindDockerdDown", {"instance": AGENT})
        timeline = Timeline(prom, down, dockerd_down)
        up = f'dind_containerd_up{{instance="{AGENT}"}}'
        dockerd_up = f'dind_dockerd_up{{instance="{AGENT}"}}'
        try:  # prometheus has scraped the agent already (wait_ready)
            poll(lambda: prom.value(up) == 1, timeout=3, interval=0.2, what=f"{up} == 1")
        except TimeoutError:
            pytest.fail(f"prometheus reads {up} = {prom.value(up)} from the agent, not 1")

        os.kill(pid, signal.SIGSTOP)
        stopped = timeline.now()
        timeline.note("kill -STOP containerd")
        try:
            # Two missed probes (each waits a second for an answer): down in the agent.
            poll(
                lambda: box.metric("dind_containerd_up") == 0,
                timeout=10, interval=0.2, what="dind_containerd_up 0 in the agent",
            )  # fmt: skip
            readyz = box.http("/readyz")[0]
            timeline.note(f"agent: dind_containerd_up 0, /readyz {readyz}")
            # Containers cannot be started or exec'd: not ready, by design.
            assert readyz == 503
            timeline.wait(down, "pending", timeout=10)
            timeline.wait(down, "firing", timeout=FOR_SECONDS + 10)
            assert down.seen["pending"] <= down.seen["firing"]
            assert down.alert["labels"]["severity"] == "critical"
            assert down.alert["annotations"]["summary"].startswith(f"containerd on {AGENT} ")
            # dockerd stays ready throughout: the alert names containerd, DindDockerdDown
            # stays quiet (the rule's "and on (job, instance) dind_dockerd_up == 1").
            assert prom.value(dockerd_up) == 1
            assert box.http("/readyz")[0] == 503
            assert box.host_pids("containerd") == [pid]  # stopped, not replaced
        finally:
            os.kill(pid, signal.SIGCONT)
        continued = timeline.now()
        timeline.note("kill -CONT containerd")
        timeline.wait(down, "resolved", timeout=20)
        poll(lambda: box.http("/readyz")[0] == 200, timeout=10, interval=0.2, what="/readyz 200")
        timeline.note("agent: /readyz 200")
        assert prom.value(up) == 1
        assert prom.rule(down.name, {})["state"] == "inactive"
        assert not dockerd_down.seen, timeline.report()
        # The same containerd answers again: the agent neither counted nor replaced one.
        assert box.host_pids("containerd") == [pid]
        assert agent_counter(box, "dind_containerd_restarts_total") == restarts
        seen = down.seen
        timeline.note(
            f"DindContainerdDown: pending {seen['pending'] - stopped:.2f} s and firing"
            f" {seen['firing'] - stopped:.2f} s after the STOP, resolved"
            f" {seen['resolved'] - continued:.2f} s after the CONT"
        )
        timeline.publish(record_property, "containerd_down")
