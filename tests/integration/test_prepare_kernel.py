"""Container preparation against the real kernel and tools, inside private namespaces.

Each test runs ``prepare()`` in a child process under ``unshare --mount --net
--propagation private`` (plus a PID namespace when dockerd runs), so the
securityfs, tmpfs and propagation changes, the iptables tables and dockerd
itself exist only there and vanish with that child, pass or fail. The child
prints one JSON document; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisor.prepare.mounts import parse_mountinfo, visible_mount

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Runs inside the namespaces. argv[1] is a JSON config:
#   options: PrepareOptions fields; env: the environment prepare() sees;
#   before/after: commands run before prepare() and after it with dockerd's env;
#   dockerd: start dockerd with dockerd_env() and run a container.
CHILD = r"""
import json, os, subprocess, sys, tarfile, time
sys.path.insert(0, sys.argv[2])
from supervisor.prepare import IptablesMode, PrepareOptions, dockerd_env, prepare

cfg = json.loads(sys.argv[1])
out = {"before": [], "after": []}

def sh(cmd, env=None):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return [r.returncode, r.stdout, r.stderr]

for cmd in cfg.get("before", []):
    out["before"].append(sh(cmd))
opts = dict(cfg["options"])
opts["iptables"] = IptablesMode(opts.get("iptables", "auto"))
env = {"PATH": os.environ["PATH"], **cfg["env"]}
report = prepare(PrepareOptions(**opts), env=env)
out["report"] = report.as_dict()
with open("/proc/self/mountinfo") as f:
    out["mountinfo"] = f.read()
denv = {**os.environ, **env, **dockerd_env(report, env)}
out["path"] = denv["PATH"]
for cmd in cfg.get("after", []):
    out["after"].append(sh(cmd, denv))

if cfg.get("dockerd"):
    work = "/tmp/dockerd"  # on the tmpfs prepare() just mounted: private to us
    for d in ("lib", "run", "img"):
        os.makedirs(f"{work}/{d}", exist_ok=True)
    # dockerd and containerd also write below /run and /var/lib/docker: cover them.
    sh(["mount", "--bind", f"{work}/run", "/run"])
    os.makedirs("/var/lib/docker", exist_ok=True)
    sh(["mount", "--bind", f"{work}/lib", "/var/lib/docker"])
    sh(["ip", "link", "set", "lo", "up"])
    sock = "unix:///run/docker.sock"
    with open(f"{work}/daemon.json", "w") as f:
        f.write("{}")
    log = open(f"{work}/dockerd.log", "w")
    d = subprocess.Popen(
        ["dockerd", "-H", sock, "--storage-driver", "vfs", "--config-file", f"{work}/daemon.json"],
        env=denv, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    ok = False
    while time.monotonic() < deadline and d.poll() is None:
        if sh(["docker", "-H", sock, "version"])[0] == 0:
            ok = True
            break
        time.sleep(0.2)
    out["dockerd_ready"] = ok
    if ok:
        with tarfile.open(f"{work}/img/bb.tar", "w") as t:
            t.add(cfg["busybox"], arcname="bin/busybox")
        out["import"] = sh(["docker", "-H", sock, "import", f"{work}/img/bb.tar", "bb"])
        out["run"] = sh(["docker", "-H", sock, "run", "--rm", "bb", "/bin/busybox", "echo", "hi"])
        out["legacy_nat"] = sh(["iptables-legacy-save", "-t", "nat"])
        out["nft_nat"] = sh(["iptables-nft-save", "-t", "nat"])
    d.terminate()
    try:
        d.wait(timeout=30)
    except subprocess.TimeoutExpired:
        d.kill()
    log.close()
    with open(f"{work}/dockerd.log") as f:
        out["dockerd_log"] = f.read()[-3000:]
print(json.dumps(out))
"""


def run_child(cfg: dict[str, Any], *, pid_ns: bool = False, timeout: float = 120) -> Any:
    """Run CHILD in fresh mount+net namespaces (and a PID one); return its JSON."""
    ns = ["--mount", "--net", "--propagation", "private"]
    if pid_ns:
        ns += ["--pid", "--fork", "--mount-proc"]
    done = subprocess.run(
        ["unshare", *ns, "--", sys.executable, "-c", CHILD, json.dumps(cfg), str(REPO)],
        capture_output=True,
        text=True,
        timeout=timeout,  # on expiry the child is killed, its namespaces with it
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _options(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cgroup": False,  # cgroup nesting is unit-tested: never reorganise the CI's cgroups
        "iptables_dir": "/tmp/dind-supervisor/iptables-bin",  # on the private tmpfs
    }
    return {**base, **kw}


def _outcomes(out: Any) -> dict[str, str]:
    return {k: v["outcome"] for k, v in out["report"]["steps"].items()}


def _mount_set() -> set[tuple[str, str]]:
    with open("/proc/self/mountinfo") as f:
        return {(e.mount_point, e.fstype) for e in parse_mountinfo(f.read())}


def test_mounts_are_in_place_and_private() -> None:
    """securityfs, a tmpfs on /tmp and a shared / show in mountinfo, and nowhere else."""
    before = _mount_set()
    out = run_child({"options": _options(iptables="off"), "env": {}})
    entries = parse_mountinfo(out["mountinfo"])
    sec = visible_mount(entries, "/sys/kernel/security")
    tmp = visible_mount(entries, "/tmp")
    root = visible_mount(entries, "/")
    assert sec is not None
    assert sec.fstype == "securityfs"
    assert tmp is not None
    assert tmp.fstype == "tmpfs"
    assert root is not None
    assert root.shared
    assert all(e.shared for e in entries)
    assert set(_outcomes(out).values()) <= {"done", "already", "skipped"}
    assert _outcomes(out)["tmp"] == ("already" if ("/tmp", "tmpfs") in before else "done")
    assert _mount_set() == before  # nothing leaked to the machine


def test_second_prepare_in_the_same_namespace_changes_nothing() -> None:
    """Running prepare twice (an agent restart) finds everything already done."""
    cfg = {
        "options": _options(iptables="off"),
        "env": {},
        "after": [
            [
                sys.executable,
                "-c",
                f"import sys, json; sys.path.insert(0, {str(REPO)!r});"
                "from supervisor.prepare import *;"
                "r = prepare(PrepareOptions(cgroup=False, iptables=IptablesMode.OFF));"
                "print(json.dumps({k: v['outcome'] for k, v in r.as_dict()['steps'].items()}))",
            ]
        ],
    }
    # A tmpfs on /tmp would hide this checkout and its interpreter from the second
    # run when they live under /tmp (as in a CI clone there): leave /tmp out then.
    steps = ("securityfs", "tmp", "rshared") if not _code_under_tmp() else ("securityfs", "rshared")
    if "tmp" not in steps:
        cfg["options"] = _options(iptables="off", tmp=False)
        script = cfg["after"][0][-1]
        cfg["after"][0][-1] = script.replace("cgroup=False,", "cgroup=False, tmp=False,")
    out = run_child(cfg)
    code, stdout, stderr = out["after"][0]
    assert code == 0, stderr
    second = json.loads(stdout.strip().splitlines()[-1])
    assert {second[s] for s in steps} == {"already"}


def _code_under_tmp() -> bool:
    tmp = Path("/tmp").resolve()
    return any(
        Path(place).resolve().is_relative_to(tmp) for place in (str(REPO), sys.prefix)
    )


def test_cgroup_detection_matches_the_kernel_read_only() -> None:
    """The detected layout agrees with hack/dind's own test, and a dry run writes nothing."""
    from supervisor.prepare import IptablesMode, PrepareOptions, prepare

    report = prepare(
        PrepareOptions(
            dry_run=True, securityfs=False, tmp=False, rshared=False, iptables=IptablesMode.OFF
        )
    )
    unified_root = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    assert (report.cgroup_mode == "v2") is unified_root
    assert report.step("cgroup").outcome.value in {"not_needed", "planned"}
    assert not os.path.exists("/sys/fs/cgroup/init") or unified_root


def test_legacy_env_gives_a_legacy_path() -> None:
    """DOCKER_IPTABLES_LEGACY=1: iptables on dockerd's PATH is legacy and writes legacy tables."""
    out = run_child(
        {
            "options": _options(securityfs=False, tmp=True, rshared=False),
            "env": {"DOCKER_IPTABLES_LEGACY": "1"},
            "after": [
                ["iptables", "--version"],
                ["iptables", "-t", "nat", "-N", "PREPARE-TEST"],
                ["iptables-legacy-save", "-t", "nat"],
                ["ip6tables", "--version"],
            ],
        }
    )
    assert out["path"].startswith("/tmp/dind-supervisor/iptables-bin:")
    version, chain, saved, v6 = out["after"]
    assert "legacy" in version[1]
    assert chain[0] == 0, chain[2]
    assert ":PREPARE-TEST" in saved[1]
    assert "legacy" in v6[1]
    assert out["report"]["iptables_backend"] == "legacy"
    assert out["report"]["steps"]["iptables"]["data"]["version"] == version[1].strip()


def test_auto_picks_nft_in_a_fresh_namespace() -> None:
    """With no legacy tables and a working nft, auto chooses nft (this machine's rule result)."""
    out = run_child(
        {
            "options": _options(securityfs=False, rshared=False),
            "env": {},
            "after": [["iptables", "--version"], ["cat", "/proc/net/ip_tables_names"]],
        }
    )
    version, names = out["after"]
    assert out["report"]["iptables_backend"] == "nft"
    assert "nf_tables" in version[1]
    assert names[1].strip() == ""  # choosing did not create legacy tables


def test_auto_keeps_legacy_when_legacy_rules_exist() -> None:
    """A legacy nat table present before prepare makes auto stay on legacy."""
    out = run_child(
        {
            "options": _options(securityfs=False, rshared=False),
            "env": {},
            "before": [["iptables-legacy", "-t", "nat", "-N", "OLD-RULES"]],
            "after": [["iptables", "--version"]],
        }
    )
    assert out["before"][0][0] == 0, out["before"][0][2]
    assert out["report"]["iptables_backend"] == "legacy"
    assert "legacy" in out["after"][0][1]
    assert "ip:nat" in out["report"]["steps"]["iptables"]["data"]["legacy_tables"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("env", "backend", "chains_in"),
    [({"DOCKER_IPTABLES_LEGACY": "1"}, "legacy", "legacy_nat"), ({}, "nft", "nft_nat")],
)
def test_dockerd_runs_a_container_with_the_chosen_backend(
    env: dict[str, str], backend: str, chains_in: str
) -> None:
    """dockerd started with dockerd_env() runs a container; its DOCKER chain is in that backend."""
    busybox = "/bin/busybox"
    assert os.path.exists(busybox), "busybox-static is a test dependency"
    out = run_child(
        {"options": _options(), "env": env, "dockerd": True, "busybox": busybox},
        pid_ns=True,
        timeout=200,
    )
    assert out["report"]["iptables_backend"] == backend
    assert out["dockerd_ready"], out["dockerd_log"]
    assert out["import"][0] == 0, out["import"][2]
    assert out["run"][0] == 0, out["run"][2] + out["dockerd_log"]
    assert out["run"][1].strip() == "hi"
    other = "nft_nat" if chains_in == "legacy_nat" else "legacy_nat"
    assert ":DOCKER" in out[chains_in][1]
    assert ":DOCKER" not in out[other][1]
