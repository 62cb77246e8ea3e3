"""The deployment artefacts: the Dockerfile, its e2e twin, the Kubernetes manifests.

The Dockerfile cannot be built here (no registry), so its instructions are
parsed and checked against the contract. Core Kubernetes objects are
validated strictly with kubernetes-validate; the Prometheus Operator's CRDs
structurally, and the PrometheusRule must be the generator's output.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from supervisor.config import section_fields
from tests.e2e.image import apt_mirror

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
# The oldest release with native sidecars on by default, and the newest known.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_KINDS = {"PodMonitor", "PrometheusRule"}



def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_prometheusrule", REPO / "scripts" / "gen_prometheusrule.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_prometheusrule = _load_generator()


# Dockerfile -------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        found.append((keyword.upper(), " ".join(rest.split())))
    assert not pending, f"{path}: dangling line continuation"
    return found


def last(found: list[tuple[str, str]], keyword: str) -> str:
    values = [args for kw, args in found if kw == keyword]
    assert values, f"no {keyword}"
    return values[-1]


def final_stage(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (kw, _) in enumerate(found) if kw == "FROM"]
    return found[starts[-1]:]


def metadata(found: list[tuple[str, str]]) -> dict[str, Any]:
    """What a user of the image relies on, from its final stage."""
    stage = final_stage(found)
    return {
        "ENV": sorted(args for kw, args in stage if kw == "ENV"),
        "VOLUME": sorted(args for kw, args in stage if kw == "VOLUME"),
        "EXPOSE": sorted(port for kw, args in stage if kw == "EXPOSE" for port in args.split()),
        "ENTRYPOINT": json.loads(last(stage, "ENTRYPOINT")),
        "CMD": json.loads(last(stage, "CMD")),
        "HEALTHCHECK": last(stage, "HEALTHCHECK"),
    }


DOCKERFILE = instructions(REPO / "Dockerfile")


# docker:dind's current major; a newer major needs the e2e suite to pass first.
CURRENT_DIND_MAJOR = 29


def test_every_stage_starts_from_one_pinned_docker_dind_version() -> None:
    """FROM is the one DIND_BASE argument, a docker:<x.y.z>-dind tag (optionally with a digest)
    on docker:dind's current major: no floating dind/latest tag, no stage left behind."""
    bases = [args.split()[0] for kw, args in DOCKERFILE if kw == "FROM"]
    assert bases, "no FROM"
    assert set(bases) == {"${DIND_BASE}"}, bases
    [default] = [args for kw, args in DOCKERFILE if kw == "ARG" and args.startswith("DIND_BASE=")]
    match = re.fullmatch(r"DIND_BASE=docker:(\d+)\.\d+\.\d+-dind(@sha256:[0-9a-f]{64})?", default)
    assert match, default
    assert int(match.group(1)) == CURRENT_DIND_MAJOR


def test_the_entrypoint_hands_every_argument_to_dockerd() -> None:
    """ENTRYPOINT is `run --` and CMD empty: flags after the image name go to dockerd."""
    meta = metadata(DOCKERFILE)
    assert meta["ENTRYPOINT"] == ["dind-supervisor", "run", "--"]
    assert meta["CMD"] == []


def test_healthcheck_asks_the_agent_for_readiness() -> None:
    """HEALTHCHECK runs `dind-supervisor wait --timeout 2` in exec form, with a start period."""
    check = metadata(DOCKERFILE)["HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    assert json.loads(command) == ["dind-supervisor", "wait", "--timeout", "2"]
    assert "--start-period=" in options
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout is not None
    assert int(timeout.group(1)) > 2, "docker's own timeout must outlast the command's"


def test_ports_volume_and_variables_match_docker_dind() -> None:
    """EXPOSE 2375 2376 (not the metrics port: GitLab's health check takes any open exposed port
    for "up"), VOLUME /var/lib/docker, DOCKER_TLS_CERTDIR=/certs."""
    meta = metadata(DOCKERFILE)
    assert meta["EXPOSE"] == ["2375", "2376"]
    assert meta["VOLUME"] == ["/var/lib/docker"]
    assert "DOCKER_TLS_CERTDIR=/certs" in meta["ENV"]
    runs = " ".join(args for kw, args in final_stage(DOCKERFILE) if kw == "RUN")
    assert "chmod 1777 /certs /certs/client" in runs


def test_the_package_is_installed_with_pip_into_a_venv() -> None:
    """python3 from apk, a venv, pip install of the source, the command on PATH."""
    runs = " ".join(args for kw, args in DOCKERFILE if kw == "RUN")
    assert "apk add --no-cache python3" in runs
    assert "python3 -m venv /opt/dind-supervisor" in runs
    assert re.search(r"/opt/dind-supervisor/bin/pip install .*/src", runs)
    assert "/usr/local/bin/dind-supervisor" in runs
    copied = [args for kw, args in DOCKERFILE if kw == "COPY" and "--from" not in args]
    sources = {src for args in copied for src in args.split()[:-1]}
    assert sources == {"pyproject.toml", "README.md", "supervisor"}


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    """.dockerignore excludes everything but the COPY sources (small, cache-friendly context)."""
    lines = [
        line for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {
        "!pyproject.toml", "!README.md", "!supervisor/"
    }


def test_the_e2e_image_has_the_same_metadata_as_the_real_one() -> None:
    """tests/e2e/Dockerfile (what the e2e suite runs) matches /Dockerfile's user-facing metadata."""
    twin = instructions(REPO / "tests" / "e2e" / "Dockerfile")
    assert metadata(twin) == metadata(DOCKERFILE)


# The e2e image's apt mirror ----------------------------------------------------


def test_mirror_comes_from_deb822_sources_skipping_comments_and_other_suites(
    tmp_path: Path,
) -> None:
    """The URI of the stanza serving the suite itself, not -security or a disabled one."""
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "a.sources").write_text(
        "Types: deb\n# http://snapshot.example/archive\nURIs: http://security.example/debian\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian\n  http://second.example\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert apt_mirror(sources, tmp_path / "none") == "http://mirror.example/debian"


def test_mirror_falls_back_to_sources_list_with_options(tmp_path: Path) -> None:
    """One-line format, with [options] and comments, when no .sources file serves the suite."""
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert apt_mirror(tmp_path / "absent", listing) == "http://mirror.example/debian"


def test_a_suite_missing_from_the_sources_uses_the_mirror_of_a_listed_one(
    tmp_path: Path,
) -> None:
    """trixie on a bookworm machine: the URI given for bookworm (same mirror, other suite)."""
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert apt_mirror(sources, tmp_path / "none", suite="trixie") == "http://mirror.example/debian"
    # A source that names the suite itself still wins.
    (sources / "trixie.sources").write_text(
        "Types: deb\nURIs: http://trixie.example/debian\nSuites: trixie\n"
    )
    assert apt_mirror(sources, tmp_path / "none", suite="trixie") == "http://trixie.example/debian"


def test_no_mirror_is_an_error_naming_the_files(tmp_path: Path) -> None:
    """Without a source for the suite the build stops with where it looked."""
    with pytest.raises(RuntimeError, match=r"sources\.list"):
        apt_mirror(tmp_path / "absent", tmp_path / "sources.list")


# Kubernetes -------------------------------------------------------------------


def load_manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
    }


MANIFESTS = load_manifests()
OBJECTS = [doc for docs in MANIFESTS.values() for doc in docs]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"])


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    every = spec.get("initContainers", []) + spec["containers"]
    return next(c for c in every if c["name"] == name)


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in c["ports"] if p.get("name") == port)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_strictly(version: str) -> None:
    """Every Pod, StatefulSet and Service passes kubernetes-validate --strict."""
    core = [o for o in OBJECTS if o["kind"] not in CRD_KINDS]
    assert {o["kind"] for o in core} == {"Pod", "StatefulSet", "Service"}
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_sidecar_is_native_and_probed_on_the_agent_endpoints() -> None:
    """Init container with restartPolicy Always; startup/readiness /readyz, liveness /healthz."""
    spec = pod_spec(find("Pod", "ci-runner"))
    dind = container(spec, "dind")
    assert dind in spec["initContainers"]
    assert dind["restartPolicy"] == "Always"
    probes = {kind: dind[kind]["httpGet"] for kind in
              ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {kind: p["path"] for kind, p in probes.items()} == {
        "startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"
    }
    assert {port_number(dind, p["port"]) for p in probes.values()} == {9324}
    assert spec["restartPolicy"] == "Never"


def agent_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def test_every_agent_variable_in_the_manifests_is_a_real_setting() -> None:
    """DIND_SUPERVISOR_<SECTION>_<KEY> names exist in the configuration (no silent typos)."""
    seen = 0
    for obj in OBJECTS:
        if obj["kind"] not in {"Pod", "StatefulSet"}:
            continue
        for c in pod_spec(obj).get("initContainers", []) + pod_spec(obj)["containers"]:
            for name in agent_env(c):
                if not name.startswith("DIND_SUPERVISOR_"):
                    continue
                section, _, key = name.removeprefix("DIND_SUPERVISOR_").lower().partition("_")
                assert key in section_fields(section), name
                seen += 1
    assert seen >= 2


def test_dind_containers_keep_data_off_the_overlay_layer_and_outlast_dockerd_stop() -> None:
    """/var/lib/docker is a volume everywhere; the grace period exceeds dockerd's stop timeout."""
    for obj in OBJECTS:
        if obj["kind"] not in {"Pod", "StatefulSet"}:
            continue
        spec = pod_spec(obj)
        dind = container(spec, "dind")
        mounts = {m["mountPath"]: m["name"] for m in dind["volumeMounts"]}
        assert "/var/lib/docker" in mounts, obj["metadata"]["name"]
        assert agent_env(dind)["DOCKER_TLS_CERTDIR"] == "/certs"
        assert spec["terminationGracePeriodSeconds"] > 20 + 15


def test_without_native_sidecars_the_job_writes_the_agents_stop_file() -> None:
    """The stop file lies on an emptyDir both containers mount; the job touches it on exit."""
    spec = pod_spec(find("Pod", "ci-runner-no-sidecar"))
    assert "initContainers" not in spec
    dind, job = container(spec, "dind"), container(spec, "job")
    stop_file = agent_env(dind)["DIND_SUPERVISOR_AGENT_STOP_FILE"]
    volumes = {v["name"]: v for v in spec["volumes"]}

    def volume_holding(c: dict[str, Any], path: str) -> tuple[str, str]:
        for mount in c["volumeMounts"]:
            prefix = mount["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix):
                return mount["name"], path.removeprefix(prefix)
        raise AssertionError(f"{c['name']} mounts nothing holding {path}")

    shared, relative = volume_holding(dind, stop_file)
    assert "emptyDir" in volumes[shared]
    job_mount = next(m for m in job["volumeMounts"] if m["name"] == shared)
    assert not job_mount.get("readOnly", False)
    script = " ".join(job["args"])
    assert re.search(rf"trap '[^']*touch {re.escape(job_mount['mountPath'])}/{relative}'"
                     r" EXIT", script), script


def test_the_pool_keeps_one_claim_per_replica_on_var_lib_docker() -> None:
    """The StatefulSet mounts a volumeClaimTemplate on /var/lib/docker; the Service serves 2376."""
    pool = find("StatefulSet", "dind-pool")
    claims = {t["metadata"]["name"] for t in pool["spec"]["volumeClaimTemplates"]}
    dind = container(pod_spec(pool), "dind")
    mounts = {m["mountPath"]: m["name"] for m in dind["volumeMounts"]}
    assert mounts["/var/lib/docker"] in claims
    service = find("Service", pool["spec"]["serviceName"])
    labels = pool["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["port"]: p for p in service["spec"]["ports"]}
    assert port_number(dind, ports[2376]["targetPort"]) == 2376


def test_the_pod_monitor_scrapes_every_agent_as_the_rules_job() -> None:
    """PodMonitor selects the runner and pool pods by label, port 'metrics', job=dind-supervisor."""
    monitor = find("PodMonitor", "dind-supervisor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "dind-supervisor"} in endpoint["relabelings"]
    for obj in OBJECTS:
        if obj["kind"] in {"Pod", "StatefulSet"}:
            labels = (obj["spec"]["template"]["metadata"] if obj["kind"] == "StatefulSet"
                      else obj["metadata"])["labels"]
            assert selector.items() <= labels.items(), obj["metadata"]["name"]
            dind = container(pod_spec(obj), "dind")
            assert port_number(dind, endpoint["port"]) == 9324


def test_the_prometheus_rule_is_the_generators_output() -> None:
    """deploy/kubernetes/prometheusrule.yaml == scripts/gen_prometheusrule.py's rendering."""
    committed = (K8S / "prometheusrule.yaml").read_text()
    assert committed == gen_prometheusrule.render(), (
        "stale: run .venv/bin/python scripts/gen_prometheusrule.py"
    )
    rule = find("PrometheusRule", "dind-supervisor")
    source = yaml.safe_load((REPO / "grafana" / "alerts.rules.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]


def test_the_prometheus_rule_spec_passes_promtool(tmp_path: Path) -> None:
    """The groups inside the PrometheusRule are valid Prometheus rules."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is part of the test tools"
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(find("PrometheusRule", "dind-supervisor")["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(rules)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
