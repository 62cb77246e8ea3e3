"""systemd/dind-supervisor.service: its settings and how they relate to the agent's defaults.

Owns: a small parser for the unit file, assertions on the settings that matter
(readiness, watchdog, restarts, timeouts, kill mode, limits) checked against
the agent's own defaults (config, policy, exit codes) so the two cannot drift
apart, and `systemd-analyze verify` of the unit. Does not own the sd_notify
client (supervisor/notify.py) nor its socket tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from supervisor.config import CONFIG_ENV, DockerdConfig, LivenessConfig, RestartConfig
from supervisor.errors import ConfigError
from supervisor.policy.spec import Policy

pytestmark = pytest.mark.unit

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "dind-supervisor.service"
# dockerd's own default --shutdown-timeout: how long it waits for containers.
DOCKERD_SHUTDOWN_TIMEOUT = 15.0
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> (key, value) pairs in order; keys may repeat, as in systemd."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):  # continuation: systemd replaces the backslash by a space
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.startswith("[") and logical.endswith("]"):
            current = sections.setdefault(logical[1:-1], [])
        else:
            assert current is not None, f"setting outside a section: {logical!r}"
            key, sep, value = logical.partition("=")
            assert sep, f"not a key=value line: {logical!r}"
            current.append((key.strip(), value.strip()))
        logical = ""
    return sections


def seconds(span: str) -> float:
    """A systemd time span such as '45s', '5min' or '1min 30s' in seconds."""
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, f"not a time span: {span!r}"
    for number, unit in parts:
        total += float(number) * _UNITS[unit or "s"]
    return total


@cache
def _unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def _all(section: str, key: str) -> list[str]:
    return [value for k, value in _unit().get(section, []) if k == key]


def _one(section: str, key: str) -> str:
    values = _all(section, key)
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times"
    return values[0]


def _environment() -> dict[str, str]:
    env = {}
    for value in _all("Service", "Environment"):
        name, _, setting = value.partition("=")
        env[name] = setting
    return env


def test_parser_handles_comments_repeats_and_continuations() -> None:
    """The unit parser keeps repeated keys and joins backslash continuations as systemd does."""
    unit = parse_unit("# c\n[A]\nK=1\n; c\nK=2\nL=a\\\n  b\n[B]\nM=\n")
    assert unit == {"A": [("K", "1"), ("K", "2"), ("L", "a b")], "B": [("M", "")]}
    assert seconds("45s") == 45
    assert seconds("5min") == 300
    assert seconds("1min 30s") == 90


def test_readiness_is_the_agents_notify_and_only_the_agent_may_notify() -> None:
    """Type=notify with NotifyAccess=main: READY=1 comes from the agent, never from dockerd."""
    assert _one("Service", "Type") == "notify"
    assert _one("Service", "NotifyAccess") == "main"


def test_execstart_runs_the_agent_itself_as_the_main_process() -> None:
    """ExecStart is the agent's absolute path with `run --`, no shell in between."""
    argv = _one("Service", "ExecStart").split()
    assert argv[0].startswith("/"), argv
    assert Path(argv[0]).name == "dind-supervisor"
    assert argv[1:3] == ["run", "--"]
    assert not any(word in {"sh", "bash", "/bin/sh", "-c"} for word in argv)


def test_watchdog_outlasts_the_agents_own_recovery_of_a_hung_dockerd() -> None:
    """WatchdogSec/2 exceeds the window in which the agent skips pings while replacing dockerd."""
    watchdog = seconds(_one("Service", "WatchdogSec"))
    liveness = LivenessConfig()
    skipped = liveness.failures * (liveness.interval + liveness.timeout) + liveness.kill_grace
    assert watchdog / 2 > skipped, (watchdog, skipped)
    assert watchdog <= 120, "a stuck agent should be caught within two minutes"


def test_stop_timeout_is_longer_than_the_agents_stop_of_dockerd() -> None:
    """systemd never SIGKILLs a clean stop: TimeoutStopSec > the agent's stop timeout + margin."""
    stop = seconds(_one("Service", "TimeoutStopSec"))
    agent_stop = DockerdConfig().stop_timeout
    assert agent_stop > DOCKERD_SHUTDOWN_TIMEOUT, "the agent must outwait dockerd's own timeout"
    assert stop >= agent_stop + 10, (stop, agent_stop)


def test_start_timeout_leaves_the_agent_a_full_retry() -> None:
    """TimeoutStartSec covers one dockerd start timeout, a backoff and a second start."""
    start = seconds(_one("Service", "TimeoutStartSec"))
    dockerd, restart = DockerdConfig(), RestartConfig()
    one_retry = 2 * dockerd.start_timeout + LivenessConfig().kill_grace + restart.backoff_max
    assert start > one_retry, (start, one_retry)


def test_restarts_always_except_configuration_errors() -> None:
    """Restart=always, but exit 2 (configuration error) is not retried."""
    assert _one("Service", "Restart") == "always"
    assert seconds(_one("Service", "RestartSec")) >= 1
    prevented = _one("Service", "RestartPreventExitStatus").split()
    assert str(ConfigError.exit_code) in prevented
    assert "1" not in prevented, "exit 1 (gave up on dockerd) must be retried"


def test_start_limit_catches_an_agent_that_keeps_giving_up() -> None:
    """StartLimit* sit in [Unit] and trip when the agent exits 1 on every run."""
    assert "StartLimitIntervalSec" not in dict(_unit()["Service"]), "belongs in [Unit]"
    interval = seconds(_one("Unit", "StartLimitIntervalSec"))
    burst = int(_one("Unit", "StartLimitBurst"))
    restart = RestartConfig()
    # Shortest agent run before it gives up: its backoffs between max_failures starts.
    delays = [
        min(restart.backoff_initial * restart.backoff_factor**n, restart.backoff_max)
        for n in range(restart.max_failures - 1)
    ]
    cycle = seconds(_one("Service", "RestartSec")) + sum(delays)
    assert 3 <= burst <= 10
    assert burst * cycle < interval, (burst, cycle, interval)


def test_kill_mode_is_mixed_and_explained() -> None:
    """KillMode=mixed (TERM to the agent only, KILL to leftovers), with the reason in a comment."""
    assert _one("Service", "KillMode") == "mixed"
    text = UNIT.read_text(encoding="utf-8")
    comment = text[: text.index("\nKillMode=")].rsplit("\n\n", 1)[-1]
    for word in ("live-restore", "KillMode=process", "docker.service", "orphan"):
        assert word in comment, f"the KillMode comment should discuss {word}"


def test_delegation_and_limits_match_docker_service_and_the_policy() -> None:
    """Delegate=yes, unlimited tasks/procs/core, and a nofile ceiling the dockerd policy fits in."""
    assert _one("Service", "Delegate") == "yes"
    assert _one("Service", "TasksMax") == "infinity"
    assert _one("Service", "LimitNPROC") == "infinity"
    assert _one("Service", "LimitCORE") == "infinity"
    nofile = int(_one("Service", "LimitNOFILE"))  # a number: "infinity" means fs.nr_open
    wanted = {r.rlimit.name.lower(): r for r in Policy().rlimits("dockerd")}
    request = next(r for name, r in wanted.items() if "nofile" in name)
    assert nofile >= request.hard, "dockerd's nofile policy would need CAP_SYS_RESOURCE"


def test_oom_score_keeps_the_agent_below_dockerd_and_dockerd_below_containers() -> None:
    """OOMScoreAdjust is the agent's policy value, lower than dockerd's, which is lower than 0."""
    adj = int(_one("Service", "OOMScoreAdjust"))
    policy = Policy()
    assert adj == policy.agent_oom_score_adj
    assert policy.dockerd_oom_score_adj is not None
    assert -1000 < adj < policy.dockerd_oom_score_adj < 0


def test_environment_names_the_config_file_and_python_tracebacks() -> None:
    """The config file path is passed the way the agent reads it; SIGABRT prints tracebacks."""
    env = _environment()
    assert env[CONFIG_ENV].startswith("/etc/")
    assert env["PYTHONFAULTHANDLER"] == "1"
    assert _all("Service", "EnvironmentFile") == ["-/etc/default/dind-supervisor"]


def test_unit_conflicts_with_docker_service_and_installs_for_multi_user() -> None:
    """It replaces docker.service (same data root and socket) and starts at boot when enabled."""
    conflicts = " ".join(_all("Unit", "Conflicts")).split()
    assert {"docker.service", "docker.socket"} <= set(conflicts)
    assert "network-online.target" in _one("Unit", "After").split()
    assert _one("Install", "WantedBy") == "multi-user.target"


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """systemd's own parser accepts every line (no unknown key, no bad value, executable found)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install Debian's `systemd` package"
    # verify also checks that ExecStart's binary exists: point it at a stand-in.
    stub = tmp_path / "dind-supervisor"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    original = _one("Service", "ExecStart").split()[0]
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(f"ExecStart={original} ", f"ExecStart={stub} "))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ours = [
        line for line in (result.stdout + result.stderr).splitlines()
        if UNIT.name in line or str(unit) in line
    ]  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Warnings (an unknown key, a value systemd ignores) do not change the exit code.
    assert not ours, ours


def test_systemd_analyze_verify_would_catch_a_bad_setting(tmp_path: Path) -> None:
    """The verify check is not vacuous: a misspelt key in a copy of the unit is reported."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install Debian's `systemd` package"
    stub = tmp_path / "dind-supervisor"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    original = _one("Service", "ExecStart").split()[0]
    text = UNIT.read_text(encoding="utf-8").replace(f"ExecStart={original} ", f"ExecStart={stub} ")
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("KillMode=mixed", "KillMode=mixd"))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "kill mode" in (result.stdout + result.stderr).lower()
