"""A real scrape of the agent against its consumers: prometheus_client's parser, promtool, Grafana.

One agent runs with TLS on and disk GC enabled (so every family of the
contract is exported) and has run a container. Checks: the exposition parses
and every family has HELP text; `promtool check metrics` is clean; every
metric name the dashboard and the alert rules read exists in the scrape (no
dangling queries); a scrape stays fast and does not need dockerd's API.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import import_busybox
from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, poll
from tests.unit.test_grafana import CONTRACT, metric_names_used

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """An agent with TLS and GC on whose dockerd ran one container."""
    root = tmp_path_factory.mktemp("scrape-agent")
    box = Sandbox(
        root,
        env={"DOCKER_TLS_CERTDIR": "/certs"},
        agent_args=["--dataroot-gc-enabled"],
    )
    try:
        box.start()
        box.wait_ready(timeout=60)
        image = import_busybox(box, busybox_rootfs_tar(root))
        box.docker("run", "--network", "none", image, "true")
        poll(lambda: (box.metric("dind_containers", {"state": "exited"}) or 0) == 1,
             timeout=10, what="the container counted")
        yield box
    finally:
        box.destroy()
        poll(lambda: not box.ns_processes(), timeout=20, what="an empty namespace")


@pytest.fixture(scope="module")
def exposition(agent: Sandbox) -> str:
    code, body = agent.http("/metrics")
    assert code == 200, body
    return body


def exposed_names(text: str) -> set[str]:
    """Names a query can select: every sample name, plus X_total / X_bucket for typed families."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
        names |= {sample.name for sample in family.samples}
    return names


def contract_names(text: str) -> set[str]:
    """Family names as the contract spells them: counters with _total, histograms bare."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(text)
    }


def test_exposition_parses_and_every_family_has_help(exposition: str) -> None:
    """prometheus_client parses the scrape; each family has HELP text and a known type."""
    families = list(text_string_to_metric_families(exposition))
    assert len(families) > 30
    for family in families:
        assert family.documentation.strip(), f"{family.name} has no HELP text"
        assert family.type in ("counter", "gauge", "histogram", "info"), family.name
    ours = {f.name for f in families if f.name.startswith("dind_")}
    assert len(ours) == len([f for f in families if f.name.startswith("dind_")])  # no duplicates


def test_promtool_check_metrics_is_clean(exposition: str) -> None:
    """`promtool check metrics` reports nothing on a real scrape."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's `prometheus` package"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_every_metric_the_dashboard_and_rules_use_is_scraped(exposition: str) -> None:
    """No dangling query: each name in the dashboard and the alert rules is in a real scrape."""
    used = metric_names_used()
    assert len(used) > 20
    missing = sorted(used - exposed_names(exposition))
    assert missing == [], f"used by grafana/ but not exported by the agent: {missing}"


def test_every_contract_metric_is_scraped(exposition: str) -> None:
    """Each family of DESIGN.md's metric contract is exported by the running agent."""
    missing = sorted(CONTRACT - contract_names(exposition))
    assert missing == [], f"contract metrics missing from a real scrape: {missing}"


def test_tls_and_process_series_have_values(agent: Sandbox, exposition: str) -> None:
    """With TLS on, each cert has an expiry in the future; dockerd's own figures are non-zero."""
    now = time.time()
    for cert in ("ca", "server", "client"):
        not_after = agent.metric("dind_tls_cert_not_after_timestamp_seconds", {"cert": cert})
        assert not_after is not None, cert
        assert not_after > now + 86400
    rss = agent.metric("dind_dockerd_process_resident_memory_bytes")
    assert rss is not None
    assert rss > 10 * 2**20
    assert (agent.metric("dind_dockerd_process_open_fds") or 0) > 5
    assert agent.metric("dind_containers", {"state": "exited"}) == 1
    assert agent.metric("dind_container_events_total", {"action": "create"}) == 1


def test_scrape_answers_fast_while_dockerd_is_frozen(agent: Sandbox) -> None:
    """A scrape never calls the Docker API: it answers within a second while dockerd is stopped."""
    pid = agent.dockerd_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, body = agent.http("/metrics", timeout=3)
        elapsed = time.monotonic() - started
        status_code, _ = agent.http("/status", timeout=3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert code == 200
    assert status_code == 200
    assert "dind_dockerd_up" in body
    # nsenter + curl start-up included; the handler itself takes milliseconds.
    assert elapsed < 1.0
