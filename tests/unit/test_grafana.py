"""The operations kit under grafana/: dashboard JSON, alert rules and their promtool tests.

Owns: static checks of grafana/dind-supervisor.dashboard.json, running
`promtool check rules` / `promtool test rules` on grafana/alerts.rules.yml and
grafana/alerts.test.yml, and ``metric_names_used()``: every series name the
dashboard and the rules read, for comparison with a real scrape of the agent
(the integration test that scrapes a live agent does that comparison). Does not
own the metrics themselves (supervisor/metrics.py and the collectors).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARD = GRAFANA / "dind-supervisor.dashboard.json"
RULES = GRAFANA / "alerts.rules.yml"
RULE_TESTS = GRAFANA / "alerts.test.yml"

# Grafana migrates older dashboards on load; pinning the version we wrote makes
# an accidental re-export from a newer Grafana visible in review.
SCHEMA_VERSION = 39
# The scrape job name the target alerts rely on (documented in grafana/README.md).
JOB = "dind-supervisor"

# The metric contract (DESIGN.md), by family name. Histograms expose
# _bucket/_sum/_count series; counters are named with their _total suffix.
CONTRACT_GAUGES = frozenset({
    "dind_build_info",
    "dind_dockerd_up",
    "dind_dockerd_state",
    "dind_dockerd_last_exit_code",
    "dind_dockerd_start_time_seconds",
    "dind_dockerd_process_resident_memory_bytes",
    "dind_dockerd_process_open_fds",
    "dind_containerd_up",
    "dind_tls_cert_not_after_timestamp_seconds",
    "dind_tls_cert_not_before_timestamp_seconds",
    "dind_rlimit",
    "dind_oom_score_adj",
    "dind_data_root_size_bytes",
    "dind_data_root_free_bytes",
    "dind_data_root_inodes",
    "dind_data_root_free_inodes",
    "dind_data_root_info",
    "dind_containers",
})
CONTRACT_COUNTERS = frozenset({
    "dind_dockerd_restarts_total",
    "dind_dockerd_ping_failures_total",
    "dind_dockerd_process_cpu_seconds_total",
    "dind_containerd_restarts_total",
    "dind_tls_rotations_total",
    "dind_tls_rotation_failures_total",
    "dind_tls_client_handshake_failures_total",
    "dind_policy_errors_total",
    "dind_rlimit_errors_total",
    "dind_unclean_shutdowns_total",
    "dind_container_oom_kills_total",
    "dind_container_events_total",
    "dind_gc_runs_total",
    "dind_gc_reclaimed_bytes_total",
})
CONTRACT_HISTOGRAMS = frozenset({
    "dind_dockerd_ready_duration_seconds",
    "dind_dockerd_ping_duration_seconds",
})
CONTRACT = CONTRACT_GAUGES | CONTRACT_COUNTERS | CONTRACT_HISTOGRAMS
# prometheus_client's process collector for the agent itself (it must be
# registered on the agent's own registry for these to appear).
CLIENT_PROCESS_METRICS = frozenset({
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_start_time_seconds",
})
# Series Prometheus makes itself; they never appear in the agent's /metrics.
PROMETHEUS_SYNTHETIC = frozenset({"up"})

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
})  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"(?<![\w:$.])[A-Za-z_:][\w:]*")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*),\s*\w+\s*\)\s*$", re.DOTALL)


# --------------------------------------------------------------------------
# Loading and PromQL helpers


@cache
def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


@cache
def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _panels() -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in _dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _visual_panels() -> list[dict[str, Any]]:
    return [p for p in _panels() if p["type"] != "row"]


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query["query"] if isinstance(query, dict) else query)


def _dashboard_exprs() -> Iterator[str]:
    """The PromQL of every panel target, annotation and query variable."""
    for panel in _visual_panels():
        for target in panel.get("targets", []):
            yield target["expr"]
    for annotation in _dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            yield annotation["expr"]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(_variable_query(variable))
            assert match, f"variable {variable['name']}: expected label_values(<selector>, <label>)"
            yield match.group(1)


def _rule_exprs() -> Iterator[str]:
    for rule in _rules():
        yield rule["expr"]


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords, labels or durations)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)  # label lists of by/on/... clauses
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or aggregation call, or an operator keyword
        names.add(match.group())
    return names


def metric_names_used() -> set[str]:
    """Every series name the dashboard and the alert rules read from the agent's /metrics.

    Names are as exposed (histograms with _bucket, counters with _total), so a
    caller can compare them with the sample names of a real scrape. Series that
    Prometheus makes itself (``up``) are left out.
    """
    names: set[str] = set()
    for expr in (*_dashboard_exprs(), *_rule_exprs()):
        names |= promql_metric_names(expr)
    return names - PROMETHEUS_SYNTHETIC


def _family(name: str) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in CONTRACT_HISTOGRAMS:
            return base
    return name


def _calls(expr: str, function: str) -> Iterator[str]:
    """The argument text of each call of `function` in expr (balanced parentheses)."""
    for match in re.finditer(rf"\b{function}\s*\(", expr):
        depth, start = 1, match.end()
        for i in range(start, len(expr)):
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            if depth == 0:
                yield expr[start:i]
                break
        else:
            raise AssertionError(f"unbalanced parentheses after {function}( in {expr!r}")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's `prometheus` package"
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# --------------------------------------------------------------------------
# The extractor itself


def test_promql_metric_names_skips_functions_labels_and_durations() -> None:
    """The extractor returns metric names only, never functions, labels, keywords or numbers."""
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job=~"$job", x="y z"}[5m])))'
        " > 1e3 and on (instance) b_total offset 1h unless absent(up{job=\"j\"})"
        " or time() - c_seconds * 4 * 3600 > bool 0"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "up", "c_seconds"}


# --------------------------------------------------------------------------
# Dashboard


def test_dashboard_pins_schema_version_and_uid() -> None:
    """The dashboard keeps the schemaVersion it was written for and a stable uid for links."""
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["uid"] == "dind-supervisor"
    assert dashboard["title"]


def test_dashboard_has_datasource_job_and_instance_variables() -> None:
    """A Prometheus datasource variable and job/instance query variables drive every query."""
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert f", {name})" in _variable_query(variables[name])
    assert '"$job"' in _variable_query(variables["instance"]), "instance must follow job"


def test_every_panel_has_unit_description_and_the_datasource_variable() -> None:
    """Each visual panel states its unit and what it shows, and queries the chosen datasource."""
    problems = []
    for panel in _visual_panels():
        title = panel.get("title", "?")
        if not panel.get("description", "").strip():
            problems.append(f"{title}: no description")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{title}: no unit")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{title}: datasource is not ${{datasource}}")
        if not panel.get("targets"):
            problems.append(f"{title}: no query")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{title} {target['refId']}: datasource is not ${{datasource}}")
    assert not problems, problems


def test_every_rate_and_increase_uses_rate_interval() -> None:
    """rate/irate/increase windows are $__rate_interval, so they adapt to the scrape interval."""
    problems = []
    for expr in _dashboard_exprs():
        for function in ("rate", "irate", "increase"):
            for argument in _calls(expr, function):
                ranges = re.findall(r"\[([^\]]*)\]", argument)
                if ranges != ["$__rate_interval"]:
                    problems.append(f"{function}(...{ranges}) in {expr}")
    assert not problems, problems
    # Other range functions (changes() in the restart annotation) follow the same rule.
    windows = {w for expr in _dashboard_exprs() for w in re.findall(r"\[([^\]]*)\]", expr)}
    assert windows == {"$__rate_interval"}, windows


def test_every_dashboard_selector_filters_on_job_and_instance() -> None:
    """Every metric selector in a panel honours the job and instance variables."""
    problems = []
    for panel in _visual_panels():
        for target in panel["targets"]:
            expr = _STRING.sub(lambda m: m.group().replace("{", "(").replace("}", ")"),
                               target["expr"])
            for name in promql_metric_names(target["expr"]):
                for match in re.finditer(rf"(?<![\w:]){re.escape(name)}(\{{[^}}]*\}})?", expr):
                    original = target["expr"][match.start():match.end()]
                    if 'job=~"$job"' not in original or 'instance=~"$instance"' not in original:
                        problems.append(f"{panel['title']}: {original or name}")
    assert not problems, problems


def test_dashboard_panels_are_grouped_in_rows_and_fit_the_grid() -> None:
    """Panels sit under titled rows, ids are unique and every panel fits the 24-column grid."""
    top = _dashboard()["panels"]
    assert top[0]["type"] == "row", "the first panel must be a row"
    titles = [p["title"] for p in top if p["type"] == "row"]
    assert titles == [
        "Overview", "Restarts and readiness", "Liveness pings", "TLS certificates",
        "Resource policy", "Data root", "Containers", "Processes: agent and dockerd",
    ]  # fmt: skip
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["w"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    occupied: set[tuple[int, int]] = set()
    for panel in _panels():
        grid = panel["gridPos"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells


def test_dashboard_covers_every_topic_of_the_issue() -> None:
    """The dashboard covers state, containerd, restarts, pings, certs, policy, disk, containers."""
    used: set[str] = set()
    for expr in _dashboard_exprs():
        used |= promql_metric_names(expr)
    wanted = {
        "dind_dockerd_up", "dind_dockerd_state", "dind_dockerd_restarts_total",
        "dind_containerd_up", "dind_containerd_restarts_total",
        "dind_dockerd_ready_duration_seconds_bucket", "dind_dockerd_ping_duration_seconds_bucket",
        "dind_dockerd_ping_failures_total", "dind_tls_cert_not_after_timestamp_seconds",
        "dind_tls_rotations_total", "dind_tls_rotation_failures_total", "dind_rlimit",
        "dind_oom_score_adj", "dind_rlimit_errors_total", "dind_data_root_size_bytes",
        "dind_data_root_free_bytes", "dind_data_root_inodes", "dind_data_root_free_inodes",
        "dind_containers", "dind_container_oom_kills_total", "process_resident_memory_bytes",
        "dind_dockerd_process_resident_memory_bytes", "process_cpu_seconds_total",
        "dind_dockerd_process_cpu_seconds_total",
    }  # fmt: skip
    assert wanted <= used, sorted(wanted - used)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query parses: promtool checks each one as a recording rule."""
    fill = {"$__rate_interval": "5m", "$job": JOB, "$instance": ".+"}
    rules = []
    for n, expr in enumerate(_dashboard_exprs()):
        filled = expr
        for variable, value in fill.items():
            filled = filled.replace(variable, value)
        assert "$" not in filled, f"unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{n}", "expr": filled})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------
# Alert rules


def test_promtool_check_rules_passes() -> None:
    """The rules file is valid Prometheus 2.x rule syntax."""
    result = _promtool("check", "rules", RULES.name, cwd=GRAFANA)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """Every alert fires on its failing series and stays quiet on the healthy ones."""
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=GRAFANA)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    """On-call gets a severity, a one-line summary, an explanation and concrete steps per alert."""
    problems = []
    for alert in _alerts():
        name = alert["alert"]
        if alert.get("labels", {}).get("severity") not in {"critical", "warning", "info"}:
            problems.append(f"{name}: severity must be critical, warning or info")
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        runbook = str(annotations.get("runbook", ""))
        if not re.search(r"`(dind-supervisor|docker|journalctl|systemctl|curl)[^`]*`", runbook):
            problems.append(f"{name}: runbook names no command to run")
    assert not problems, problems


def test_each_alert_is_shown_to_fire_and_not_to_fire() -> None:
    """alerts.test.yml shows every alert and severity firing, and every alert staying quiet."""
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    doc = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            if not expected:
                quiet.add(check["alertname"])
            for alert in expected:
                fired.add((check["alertname"], alert["exp_labels"]["severity"]))
    wanted = {(a["alert"], a["labels"]["severity"]) for a in _alerts()}
    assert wanted <= fired, f"never shown to fire: {sorted(wanted - fired)}"
    assert {name for name, _ in wanted} <= quiet, "some alerts are never shown to stay quiet"


def test_the_alerts_the_issue_asks_for_exist() -> None:
    """Targets, dockerd/containerd down, restart loop, pings, certs, rotation, disk, policy, OOM."""
    names = {a["alert"] for a in _alerts()}
    assert names >= {
        "DindSupervisorTargetDown", "DindSupervisorTargetAbsent", "DindDockerdDown",
        "DindContainerdDown", "DindDockerdRestartLoop", "DindDockerdPingSlow",
        "DindDockerdPingFailing",
        "DindTLSCertificateExpiring", "DindTLSRotationFailing", "DindDataRootAlmostFull",
        "DindDataRootFillingUp", "DindDataRootNotPersistent", "DindRlimitErrors",
        "DindContainerOOMKilled",
    }  # fmt: skip


def test_target_alerts_use_the_documented_job_label() -> None:
    """Alerts on `up` select job="dind-supervisor", the scrape job name the README documents."""
    up_rules = [r for r in _alerts() if "up" in promql_metric_names(r["expr"])]
    names = {r["alert"] for r in up_rules}
    assert names == {"DindSupervisorTargetDown", "DindSupervisorTargetAbsent"}
    for rule in up_rules:
        assert f'up{{job="{JOB}"}}' in rule["expr"], rule["expr"]
    readme = (GRAFANA / "README.md").read_text(encoding="utf-8")
    assert f"job_name: {JOB}" in readme


def test_certificate_thresholds_follow_the_rotation_schedule() -> None:
    """Healthy rotation never trips the warning, which comes well before the last-day page."""
    leaf_lifetime_days, renew_at = 30.0, 2 / 3
    expiring = [a for a in _alerts() if a["alert"] == "DindTLSCertificateExpiring"]
    by_severity = {a["labels"]["severity"]: a["expr"] for a in expiring}
    fraction = float(re.search(r"<\s*([0-9.]+)\s*\*", by_severity["warning"]).group(1))  # type: ignore[union-attr]
    critical_seconds = float(re.search(r"<\s*([0-9]+)\s*$", by_severity["critical"]).group(1))  # type: ignore[union-attr]
    assert fraction < 1 - renew_at, "a certificate awaiting its normal renewal would warn"
    warning_days = fraction * leaf_lifetime_days
    # About a week: days of failed rotation before it, days to fix after it.
    assert 5 <= warning_days <= 8, warning_days
    assert critical_seconds / 86400 < warning_days / 4


# --------------------------------------------------------------------------
# Metric names against the contract


def test_every_metric_used_is_in_the_contract() -> None:
    """No query or rule reads a metric the agent does not promise to export (no dangling query)."""
    used = metric_names_used()
    assert used, "the extractor found no metric at all"
    unknown = sorted(
        name for name in used
        if _family(name) not in CONTRACT and name not in CLIENT_PROCESS_METRICS
    )  # fmt: skip
    assert not unknown, f"not in the metric contract: {unknown}"


def test_histograms_are_read_through_buckets_and_counters_through_total() -> None:
    """Histograms are read as _bucket/_sum/_count, never bare; counters end in _total."""
    used = metric_names_used()
    assert not used & CONTRACT_HISTOGRAMS, "a histogram queried by its bare family name"
    for name in used:
        if name.endswith("_total"):
            assert name in CONTRACT_COUNTERS | CLIENT_PROCESS_METRICS, name
