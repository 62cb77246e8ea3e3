"""Observability against a real dockerd: containers, readiness, `wait`, /status, commands, HTTP.

The agent runs as PID 1 of private namespaces (tests/integration/sandbox.py).
Covers: dind_containers{state} and the event counters across a live-restore
dockerd restart, OOM kills, /readyz and `wait`, the /status document against
the schema documented in docs/status.md, the `status` and `check` commands,
and the HTTP endpoint's robustness. The scrape itself (promtool, dashboard and
alert names) is in test_ops_scrape.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.prepare import STEPS
from tests.integration.conftest import import_busybox
from tests.integration.sandbox import REPO, Sandbox, poll

pytestmark = pytest.mark.integration

STATUS_DOC = REPO / "docs" / "status.md"
ROOT = ""
NO_NET = ("--network", "none")


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    path: str
    types: frozenset[str]
    present: str  # "always", "TLS on", "rootless on" or "socket"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _map_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and check(x) for k, x in v.items()
    )


TYPE_CHECKS: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "free-form": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "array of string": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "map of integer": _map_of(_is_int),
    "map of number": _map_of(_is_number),
    "map of object": _map_of(lambda x: isinstance(x, dict)),
}


def documented_fields(doc: Path = STATUS_DOC) -> dict[str, Field]:
    """Every row of the Fields table: `path` -> Field."""
    fields: dict[str, Field] = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        path, type_text, present = cells[0].strip("`"), cells[1], cells[2]
        types = frozenset(t.strip() for t in type_text.split(" or "))
        unknown = types - TYPE_CHECKS.keys()
        assert not unknown, f"docs/status.md: {path}: unknown type(s) {sorted(unknown)}"
        assert present in ("always", "TLS on", "rootless on", "socket"), (
            f"docs/status.md: {path}: presence {present!r}")
        assert path not in fields, f"docs/status.md: {path} listed twice"
        fields[path] = Field(path=path, types=types, present=present)
    return fields


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ROOT


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def schema_problems(document: dict[str, Any], fields: dict[str, Field] | None = None, *,
                    over_socket: bool = False) -> list[str]:
    """What in `document` disagrees with the documented schema; empty when it matches.
    ``over_socket``: the document was asked for over the agent's unix socket."""
    fields = fields or documented_fields()
    modes_on = {"always": True, "TLS on": bool(document.get("tls", {}).get("enabled")),
                "rootless on": bool(document.get("rootless", {}).get("enabled")),
                "socket": over_socket}
    children: dict[str, list[Field]] = {}
    for f in fields.values():
        children.setdefault(_parent(f.path), []).append(f)
    problems: list[str] = []

    def visit_object(value: dict[str, Any], schema_path: str, where: str) -> None:
        for f in children.get(schema_path, []):
            key = f.path.rsplit(".", 1)[-1]
            required = modes_on[f.present]
            if key not in value:
                if required:
                    problems.append(f"{_join(where, key)}: missing (documented as {f.present})")
            elif not required:
                problems.append(f"{_join(where, key)}: present although not {f.present}")
        for key, item in value.items():
            child = _join(schema_path, key)
            if child not in fields:
                problems.append(f"{_join(where, key)}: not documented in docs/status.md")
                continue
            visit(item, fields[child], _join(where, key))

    def visit(value: object, f: Field, where: str) -> None:
        if not any(TYPE_CHECKS[t](value) for t in f.types):
            problems.append(
                f"{where}: {type(value).__name__} {value!r:.60}"
                f" is not {' or '.join(sorted(f.types))}"
            )
            return
        if isinstance(value, dict) and "object" in f.types:
            visit_object(value, f.path, where)
        elif isinstance(value, dict) and "map of object" in f.types:
            entry = fields.get(f"{f.path}.*")
            for key, item in value.items():
                if entry is None:
                    problems.append(f"{where}.{key}: {f.path}.* is not documented")
                else:
                    visit(item, entry, f"{where}.{key}")
        elif isinstance(value, list) and f"{f.path}[]" in children:
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    problems.append(f"{where}[{index}]: {item!r:.60} is not an object")
                    continue
                visit_object(item, f"{f.path}[]", f"{where}[{index}]")

    visit_object(document, ROOT, ROOT)
    return problems


# --------------------------------------------------------------------------
# Helpers


def supervisor_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", *args]


def in_netns(box: Sandbox, *cmd: str) -> list[str]:
    """A command line running `cmd` in the sandbox's namespaces (as box.nsenter does)."""
    assert box.pid1 is not None
    return ["nsenter", "-t", str(box.pid1), "-n", "-m", "-p", "--", *cmd]


def scrape(box: Sandbox) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value} of one /metrics scrape."""
    code, body = box.http("/metrics")
    assert code == 200, body
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def containers_by_state(box: Sandbox) -> dict[str, float]:
    """dind_containers as {state: count}, states with 0 left out."""
    series = scrape(box).get("dind_containers", {})
    return {dict(labels)["state"]: value for labels, value in series.items() if value}


def events_by_action(box: Sandbox) -> dict[str, float]:
    series = scrape(box).get("dind_container_events_total", {})
    return {dict(labels)["action"]: value for labels, value in series.items()}


def event_time(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"]).timestamp()


def container_state(box: Sandbox, name: str) -> str:
    return box.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip()


@pytest.fixture(scope="module")
def tls_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One agent with TLS and GC on, shared by the read-only tests of this module."""
    box = Sandbox(
        tmp_path_factory.mktemp("tls-agent"),
        env={"DOCKER_TLS_CERTDIR": "/certs"},
        agent_args=["--dataroot-gc-enabled"],
    )
    try:
        box.start()
        box.wait_ready(timeout=60)
        # The first container list follows readiness by a moment: the read-only tests
        # below look at a settled agent.
        poll(lambda: box.status()["containers"] is not None, timeout=20,
             what="the first container list")
        yield box
    finally:
        box.destroy()
        poll(lambda: not box.ns_processes(), timeout=20, what="an empty namespace")


# --------------------------------------------------------------------------
# Containers


def test_container_states_and_events_are_right_across_a_live_restore_restart(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """created/running/paused/exited counted, kept across kill -9 dockerd; events counted once."""
    box = sandboxes(dockerd_args=["--bridge=none", "--live-restore"])
    box.wait_ready()
    image = import_busybox(box, busybox_tar)
    box.docker("create", *NO_NET, "--name", "c-created", image, "sleep", "600")
    box.docker("run", "-d", *NO_NET, "--name", "c-running", image, "sleep", "600")
    box.docker("run", "-d", *NO_NET, "--name", "c-paused", image, "sleep", "600")
    box.docker("pause", "c-paused")
    box.docker("run", *NO_NET, "--name", "c-exited", image, "true")
    expected = {"created": 1, "running": 1, "paused": 1, "exited": 1}
    poll(lambda: containers_by_state(box) == expected, timeout=10,
         what=f"dind_containers == {expected}")
    events = events_by_action(box)
    assert {k: events.get(k) for k in ("create", "start", "pause", "die")} == {
        "create": 4, "start": 3, "pause": 1, "die": 1,
    }
    first_start = scrape(box)["dind_dockerd_process_start_time_seconds"][()]

    old = box.dockerd_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    poll(lambda: box.http("/readyz")[0] == 503, timeout=5, interval=0.02, what="/readyz 503")
    box.wait_ready()

    # live-restore: the containers outlived dockerd and are listed again as they are.
    assert container_state(box, "c-running") == "running"
    assert container_state(box, "c-paused") == "paused"
    poll(lambda: containers_by_state(box) == expected, timeout=10,
         what=f"dind_containers == {expected} after the restart")
    after = events_by_action(box)
    assert {k: after.get(k) for k in ("create", "start", "pause")} == {
        "create": 4, "start": 3, "pause": 1,
    }
    # The process figures follow the new dockerd.
    samples = scrape(box)
    assert samples["dind_dockerd_process_start_time_seconds"][()] > first_start
    assert samples["dind_dockerd_restarts_total"][(("reason", "exit"),)] == 1

    # The new events subscription moves states again.
    box.docker("unpause", "c-paused")
    box.docker("kill", "c-running")
    box.docker("rm", "c-created")
    expected = {"running": 1, "exited": 2}
    poll(lambda: containers_by_state(box) == expected, timeout=10,
         what=f"dind_containers == {expected} from events after the restart")
    assert events_by_action(box)["destroy"] == 1


def test_container_killed_by_its_memory_limit_is_counted_as_oom_kill(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """A container over its --memory limit dies with 137 and dind_container_oom_kills_total is 1."""
    box = sandboxes()
    box.wait_ready()
    image = import_busybox(box, busybox_tar)
    assert scrape(box)["dind_container_oom_kills_total"][()] == 0
    hog = box.docker(
        "run", *NO_NET, "--name", "hog", "--memory", "16m", "--memory-swap", "16m",
        image, "sh", "-c", "tail /dev/zero", check=False, timeout=120,
    )
    assert hog.returncode == 137, hog.stderr
    assert box.docker("inspect", "-f", "{{.State.OOMKilled}}", "hog").stdout.strip() == "true"
    poll(lambda: scrape(box)["dind_container_oom_kills_total"][()] == 1, timeout=10,
         what="dind_container_oom_kills_total == 1")
    assert events_by_action(box)["oom"] == 1
    assert containers_by_state(box) == {"exited": 1}


# --------------------------------------------------------------------------
# Readiness and `wait`


def test_wait_returns_0_within_a_second_of_readiness(sandboxes: Callable[..., Sandbox]) -> None:
    """`wait`, started before the agent listens, exits 0 less than 1 s after dockerd is ready."""
    box = sandboxes()
    with subprocess.Popen(
        in_netns(box, *supervisor_cmd("wait", "--timeout", "30", "--url",
                                      "http://127.0.0.1:9324")),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as waiter:
        try:
            _out, err = waiter.communicate(timeout=60)
        finally:
            waiter.kill()
        returned_at = time.time()
    assert waiter.returncode == 0, err
    became_ready = [
        event_time(e) for e in box.events_named("dockerd_state_changed")
        if e.get("state") == "running"
    ]
    assert len(became_ready) == 1
    lag = returned_at - became_ready[0]
    assert -0.05 < lag < 1.0, f"wait returned {lag:.3f} s after dockerd became ready"
    assert box.http("/readyz")[0] == 200


def test_wait_exits_1_on_timeout_while_dockerd_cannot_start(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """dockerd keeps failing: `wait --timeout 3` exits 1 after 3 s while the agent keeps trying."""
    box = sandboxes(
        agent_args=["--restart-backoff-initial", "0.2", "--restart-backoff-max", "0.5",
                    "--restart-max-failures", "100"],
        dockerd_args=["--bridge=none", "--storage-driver=btrfs"],  # fails, and not for good
    )
    poll(lambda: box.http("/healthz")[0] == 200, timeout=20, what="the agent's endpoint")
    started = time.monotonic()
    result = box.nsenter(*supervisor_cmd("wait", "--timeout", "3", "--url",
                                         "http://127.0.0.1:9324"), cwd=REPO)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "dockerd not ready after 3 s" in result.stderr
    assert 3.0 <= elapsed < 3.0 + 3.0
    assert box.alive
    assert box.http("/readyz")[0] == 503
    status = box.status()
    assert status["dockerd"]["ready"] is False
    assert status["dockerd"]["restarts"].get("exit", 0) >= 2
    # A not-ready daemon's document has the documented shape too.
    assert schema_problems(status) == []


# --------------------------------------------------------------------------
# /status and the commands


def test_status_document_matches_the_documented_schema(tls_box: Sandbox) -> None:
    """A real /status (TLS on, prepared, ready) has exactly the keys and types of docs/status.md."""
    status = tls_box.status()
    assert schema_problems(status) == []
    fields = documented_fields()
    # Every documented key was checked against a real value at least once.
    assert {"tls.certificates[].renew_at", "prepare.steps.*.outcome", "dockerd.pid"} <= set(fields)
    assert status["schema"] == 1
    assert status["dockerd"]["ready"] is True
    assert status["dockerd"]["state"] == "running"
    assert [c["name"] for c in status["tls"]["certificates"]] == ["ca", "server", "client"]
    assert set(status["containers"]) >= {"created", "running", "paused", "exited"}


def test_settings_are_shown_over_the_unix_socket_only(tls_box: Sandbox) -> None:
    """The agent's full settings (dockerd's arguments included) are in /status over the
    0600 unix socket, which `check` and `status --socket` use, and never on the TCP port."""
    local = tls_box.nsenter("curl", "-s", "--unix-socket", "/run/dind-supervisor/agent.sock",
                            "http://agent/status")
    assert local.returncode == 0, local.stderr
    document = json.loads(local.stdout)
    assert schema_problems(document, over_socket=True) == []
    assert document["settings"]["tls"]["certdir"] == "/certs"
    assert document["settings"]["dockerd"]["args"] == ["--bridge=none"]
    assert "settings" not in tls_box.status()


def test_status_command_readable_and_json_against_a_real_agent(tls_box: Sandbox) -> None:
    """`status` summarises the live agent (dockerd pid, certs, data root); `--json` is /status."""
    readable = tls_box.nsenter(*supervisor_cmd("status"), cwd=REPO)
    assert readable.returncode == 0, readable.stderr
    document = tls_box.status()
    pid = document["dockerd"]["pid"]
    assert f"dockerd    running (pid {pid})" in readable.stdout
    for cert in ("ca", "server", "client"):
        assert f"           {cert}: not after " in readable.stdout
    assert "data root  /var/lib/docker" in readable.stdout

    as_json = tls_box.nsenter(*supervisor_cmd("status", "--json"), cwd=REPO)
    assert as_json.returncode == 0, as_json.stderr
    parsed = json.loads(as_json.stdout)
    assert parsed["dockerd"]["pid"] == pid
    # `status` asks over the agent's unix socket when it is there: the settings come too.
    assert set(parsed) == set(document) | {"settings"}

    unreachable = tls_box.nsenter(
        *supervisor_cmd("status", "--url", "http://127.0.0.1:1"), cwd=REPO
    )
    assert unreachable.returncode == 1
    assert "cannot reach the agent at http://127.0.0.1:1" in unreachable.stderr


def test_check_exits_0_when_fine_and_1_when_dockerd_would_break(tls_box: Sandbox) -> None:
    """`check` exits 0 with dockerd on PATH, and 1 naming the problem when the binary is missing."""
    good = tls_box.nsenter(*supervisor_cmd("check"), cwd=REPO)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "[ok     ] dockerd: dockerd executable: " in good.stdout

    bad = tls_box.nsenter(
        *supervisor_cmd("check", "--json"), cwd=REPO,
        env={**os.environ, "DIND_SUPERVISOR_DOCKERD_BINARY": "/no/such/dockerd"},
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    findings = json.loads(bad.stdout)
    errors = [f for f in findings if f["severity"] == "error"]
    assert errors
    assert "/no/such/dockerd" in errors[0]["message"]
    assert errors[0]["remedy"]


_CHECKS = r"""
import json, os
from supervisor import config
from supervisor.checks import check_data_root, check_preparation, check_tls_files
cfg = config.load(env=os.environ, config_file=None, flags={}, dockerd_args=[])
found = [f.as_dict() for c in (check_data_root, check_preparation, check_tls_files) for f in c(cfg)]
print(json.dumps(found))
"""


def test_extra_check_topics_report_a_healthy_prepared_namespace(tls_box: Sandbox) -> None:
    """supervisor.checks: data root, preparation dry run and TLS files give no error here."""
    env = {**os.environ, "DOCKER_TLS_CERTDIR": "/certs"}
    result = tls_box.nsenter(sys.executable, "-c", _CHECKS, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)  # nothing but the JSON on stdout
    topics = {f["topic"].split(".")[0] for f in findings}
    assert topics == {"dataroot", "prepare", "tls"}
    assert [f for f in findings if f["severity"] == "error"] == []
    steps = {f["topic"] for f in findings if f["topic"].startswith("prepare.")}
    assert steps == {f"prepare.{s}" for s in STEPS}
    assert any("can write and renew" in f["message"] for f in findings)


# --------------------------------------------------------------------------
# HTTP robustness

_ABUSE = r"""
import json, socket, sys, time, urllib.request

def first_line(payload):
    s = socket.create_connection(("127.0.0.1", 9324), timeout=5)
    try:
        s.sendall(payload)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0].decode(errors="replace")
    finally:
        s.close()

def healthz():
    started = time.monotonic()
    with urllib.request.urlopen("http://127.0.0.1:9324/healthz", timeout=5) as response:
        return response.status, time.monotonic() - started

out = {}
out["malformed"] = first_line(b"THIS IS NOT HTTP\r\n\r\n")
out["binary"] = first_line(bytes(range(256)) + b"\r\n\r\n")
out["huge_header"] = first_line(
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
out["many_headers"] = first_line(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
    b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(200)) + b"\r\n")
out["huge_line"] = first_line(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
idle = [socket.create_connection(("127.0.0.1", 9324), timeout=5) for _ in range(200)]
try:
    out["healthz_with_idle"] = healthz()
finally:
    for s in idle:
        s.close()
out["healthz_after"] = healthz()
print(json.dumps(out))
"""


def test_http_endpoint_survives_garbage_huge_headers_and_200_idle_connections(
    tls_box: Sandbox,
) -> None:
    """Bad request line and >8 KiB headers get 4xx; 200 idle connections do not block /healthz."""
    agent = tls_box.agent_pid()
    result = tls_box.nsenter(sys.executable, "-c", _ABUSE, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for case in ("malformed", "binary", "huge_header", "many_headers", "huge_line"):
        status_line = out[case]
        assert status_line.startswith("HTTP/1."), f"{case}: {status_line!r}"
        assert status_line.split()[1].startswith("4"), f"{case}: {status_line!r}"
    status, seconds = out["healthz_with_idle"]
    assert status == 200
    assert seconds < 2.0
    assert out["healthz_after"][0] == 200
    assert tls_box.agent_pid() == agent
    assert tls_box.http("/readyz")[0] == 200
