"""The VM lane's scenarios: actions on a real cgroup v2 host, and what was seen.

Run inside the guest by lane_main.py, one function per scenario, in one boot.
Each function drives real parts (the guest's docker.service, dind containers
of the image under test, systemd) and returns observations: raw file
contents (cgroup files, /proc), the agent's /status and metrics, logs and
timings. It asserts nothing it could get wrong quietly; the host's
tests/vm/test_vm.py asserts on the observations, one named test each.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from typing import Any

from guestlib import (
    INPUT,
    CommandFailed,
    Dind,
    docker,
    metric,
    poll,
    processes_in,
    read,
    run,
    scaled,
)

# Every dind container: no TLS (its own tests cover it), and the agent's timeouts scaled
# for emulation, so a slow start or a slow ping under TCG is not taken for a hang.
NO_TLS = (
    "-e", "DOCKER_TLS_CERTDIR=",
    "-e", f"DIND_SUPERVISOR_DOCKERD_START_TIMEOUT={int(scaled(60))}s",
    "-e", f"DIND_SUPERVISOR_LIVENESS_INTERVAL={int(scaled(5))}s",
    "-e", f"DIND_SUPERVISOR_LIVENESS_TIMEOUT={int(scaled(3))}s",
)
CGROUP = "/sys/fs/cgroup"
Obs = dict[str, Any]


def container_group(dind: Dind) -> str:
    """The dind container's own cgroup directory on the guest host (its PID 1 sits in init/)."""
    line = (read(f"/proc/{dind.pid}/cgroup") or "").strip()
    path = line.partition("::")[2]
    if path.endswith("/init"):
        path = path[: -len("/init")]
    return CGROUP + path


def group_files(path: str, names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: read(f"{path}/{name}") for name in names}


class ExecStorm:
    """`docker exec NAME sleep N` from several threads until stopped: the #308/#495 race."""

    def __init__(self, name: str, workers: int = 4) -> None:
        self.name = name
        self.workers = workers
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.started = self.ok = self.failed = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(workers)]

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                self.started += 1
            try:
                # Each exec'd process stays a while: under emulation a docker exec itself
                # takes seconds, and the agent must find some in the root group.
                result = subprocess.run(
                    ["docker", "exec", self.name, "sleep", str(int(scaled(4)))],
                    capture_output=True, text=True, timeout=scaled(30), check=False,
                )
                code, err = result.returncode, result.stderr.strip()
            except subprocess.TimeoutExpired:
                code, err = -1, "timeout"
            with self.lock:
                if code == 0:
                    self.ok += 1
                else:
                    self.failed += 1
                    if len(self.errors) < 10:
                        self.errors.append(err[-300:])

    def __enter__(self) -> ExecStorm:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=scaled(40))

    def summary(self) -> Obs:
        return {"workers": self.workers, "started": self.started, "ok": self.ok,
                "failed": self.failed, "errors": self.errors}


def _nested_cgroup(dind: Dind, nested: str) -> str:
    """Where the nested dockerd (cgroupfs driver, no systemd inside) put a nested container."""
    cid = dind.docker("inspect", "-f", "{{.Id}}", nested).stdout.strip()
    return f"{container_group(dind)}/docker/{cid}"


# 1. cgroup v2 nesting ---------------------------------------------------------


def cgroup_v2_nesting(image: str) -> Obs:
    """--privileged, private cgroupns, an exec storm during start; nested limits enforced."""
    obs: Obs = {}
    name = "s1-nesting"
    docker("rm", "-f", "-v", name, check=False)
    # The agent starts only once a `docker exec` process sits in the root group, so the
    # storm is there while it nests, however fast it is (the shell's read loop forks
    # nothing, so it counts only itself and the execs). Bounded: 30 s, then it starts.
    gate = ("i=0; while [ $i -lt 150 ]; do n=0;"
            " while read -r _; do n=$((n+1)); done < /sys/fs/cgroup/cgroup.procs;"
            " [ $n -gt 1 ] && break; i=$((i+1)); sleep 0.2; done;"
            " exec dind-supervisor run --")
    docker("create", "--name", name, "--privileged", *NO_TLS, "--entrypoint", "sh", image,
           "-c", gate, timeout=120)
    dind = Dind(name)
    try:
        docker("start", name, timeout=120)
        with ExecStorm(name) as storm:
            obs["ready_seconds"] = dind.wait_ready(timeout=120)
            # Keep the storm going a little after ready: execs now land in /init.
            time.sleep(scaled(1))
        obs["storm"] = storm.summary()
        group = container_group(dind)
        obs["host_group"] = group
        obs["host_group_files"] = group_files(
            group, ("cgroup.procs", "cgroup.controllers", "cgroup.subtree_control")
        )
        obs["host_group_children"] = sorted(
            e for e in os.listdir(group) if os.path.isdir(f"{group}/{e}")
        )
        inner = dind.exec("sh", "-c", "cat /sys/fs/cgroup/cgroup.procs; echo ---;"
                          " cat /proc/1/cgroup; echo ---; cat /proc/self/cgroup")
        obs["inner_view"] = inner.stdout
        status = dind.status()
        obs["prepare"] = status.get("prepare")
        obs["agent_log_prepare"] = dind.events("prepare_step_finished")

        dind.load_busybox()
        dind.docker("run", "-d", "--name", "limited", "--network", "none", "--memory", "64m",
                    "--memory-swap", "64m", "--pids-limit", "50", "--cpus", "0.5",
                    "busybox:test", "sleep", "100000", timeout=120)
        nested = _nested_cgroup(dind, "limited")
        obs["nested_group"] = nested
        obs["nested_files"] = group_files(nested, ("memory.max", "pids.max", "cpu.max"))
        # pids: ask for 80 processes; the kernel stops the container at 50.
        forks = dind.docker(
            "exec", "limited", "sh", "-c",
            "n=0; for i in $(seq 80); do sleep 300 & n=$((n+1)); done 2>/dev/null; echo $n",
            check=False, timeout=120,
        )
        obs["pids_fork_attempt"] = {"rc": forks.returncode, "out": forks.stdout[-500:],
                                    "err": forks.stderr[-500:]}
        obs["pids_after"] = group_files(nested, ("pids.current", "pids.events"))
        # cpu: a busy loop for 3 s under --cpus 0.5 is throttled.
        dind.docker("exec", "limited", "timeout", "3", "sh", "-c", "while :; do :; done",
                    check=False, timeout=120)
        obs["cpu_stat"] = read(f"{nested}/cpu.stat")
        # memory: 200 MB into a 64 MB container (tail holds the line it has not finished).
        oom = dind.docker("run", "--name", "oomer", "--network", "none", "--memory", "64m",
                          "--memory-swap", "64m", "busybox:test", "sh", "-c",
                          "head -c 200000000 /dev/zero | tail", check=False, timeout=180)
        obs["oom_run"] = {"rc": oom.returncode, "err": oom.stderr[-500:]}
        obs["oom_inspect"] = dind.docker(
            "inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", "oomer"
        ).stdout.strip()
        # Defect b: `check` from docker exec after nesting (it runs in /init).
        check = dind.exec("dind-supervisor", "check", "--json", check=False, timeout=120)
        obs["check"] = {"rc": check.returncode, "stdout": check.stdout,
                        "stderr": check.stderr[-2000:]}
        # Defect a (fixed side): nested runs work on this AppArmor kernel with dockerd 20.10.
        obs["dockerd_version"] = dind.docker("version", "-f",
                                             "{{.Server.Version}}").stdout.strip()
        obs["securityfs_in_container"] = dind.exec(
            "sh", "-c", "grep -c ' /sys/kernel/security ' /proc/self/mountinfo || true"
        ).stdout.strip()
        obs["root_procs_at_end"] = read(f"{group}/cgroup.procs")
    finally:
        dind.remove()
    return obs


def cgroupns_host(image: str) -> Obs:
    """--cgroupns=host: the agent must move nothing of the host's and say what that means."""
    obs: Obs = {"guest_pid1_cgroup_before": read("/proc/1/cgroup")}
    obs["top_groups_before"] = sorted(
        e for e in os.listdir(CGROUP) if os.path.isdir(f"{CGROUP}/{e}")
    )
    obs["root_subtree_before"] = read(f"{CGROUP}/cgroup.subtree_control")
    dind = Dind.start("s1-hostns", image, options=["--cgroupns=host", *NO_TLS])
    try:
        obs["ready_seconds"] = dind.wait_ready(timeout=120)
        obs["container_pid1_cgroup"] = read(f"/proc/{dind.pid}/cgroup")
        obs["prepare"] = dind.status().get("prepare")
        obs["guest_pid1_cgroup_after"] = read("/proc/1/cgroup")
        obs["root_subtree_after"] = read(f"{CGROUP}/cgroup.subtree_control")
        dind.load_busybox()
        nested = dind.docker("run", "-d", "--network", "none", "busybox:test", "sleep", "1000",
                             check=False, timeout=120)
        obs["nested_run"] = {"rc": nested.returncode, "err": nested.stderr[-800:]}
        if nested.returncode == 0:
            pid = dind.docker("inspect", "-f", "{{.State.Pid}}", nested.stdout.strip()).stdout
            # That pid is in the dind container's pid namespace; the guest's cgroup file
            # shows the group from the guest's (the host's) cgroup namespace.
            found = nested_process(int(pid))
            obs["nested_cgroup"] = found and read(f"/proc/{found['pid']}/cgroup")
        obs["dind_group"] = container_group(dind)
        check = dind.exec("dind-supervisor", "check", "--json", check=False, timeout=120)
        obs["check"] = {"rc": check.returncode, "stdout": check.stdout}
    finally:
        dind.remove()
    obs["top_groups_after"] = sorted(
        e for e in os.listdir(CGROUP) if os.path.isdir(f"{CGROUP}/{e}")
    )
    return obs


def apparmor_securityfs(image: str) -> Obs:
    """Defect a, the failing side: securityfs mounted before the agent, on an AppArmor kernel."""
    obs: Obs = {
        "kernel_apparmor": (read("/sys/module/apparmor/parameters/enabled") or "").strip(),
        "host_profiles": read("/sys/kernel/security/apparmor/profiles"),
    }
    # What docker:dind's scripts did, and what the agent did before the fix.
    wrapper = ("mount -t securityfs securityfs /sys/kernel/security"
               " && exec dind-supervisor run --")
    dind = Dind.start("s1-secfs", image, options=[*NO_TLS, "--entrypoint", "sh"],
                      dockerd_args=["-c", wrapper])
    try:
        obs["ready_seconds"] = dind.wait_ready(timeout=120)
        dind.load_busybox()
        nested = dind.docker("run", "--rm", "--network", "none", "busybox:test", "true",
                             check=False, timeout=120)
        obs["nested_run"] = {"rc": nested.returncode, "err": nested.stderr[-1500:]}
        check = dind.exec("dind-supervisor", "check", "--json", check=False, timeout=120)
        obs["check"] = {"rc": check.returncode, "stdout": check.stdout}
        obs["prepare"] = dind.status().get("prepare")
    finally:
        dind.remove()
    return obs


# 2. the policy with CAP_SYS_RESOURCE ---------------------------------------------


def policy_privileged(image: str) -> Obs:
    """--privileged: the policy's success path, and the OOM order agent < dockerd < containers."""
    obs: Obs = {}
    dind = Dind.start("s2-policy", image, options=NO_TLS)
    try:
        obs["ready_seconds"] = dind.wait_ready(timeout=120)
        dind.load_busybox()
        dind.docker("run", "-d", "--name", "victim", "--network", "none", "busybox:test",
                    "sleep", "100000", timeout=120)
        nested_pid = int(dind.docker("inspect", "-f", "{{.State.Pid}}", "victim").stdout)
        obs["nested_inner_pid"] = nested_pid
        procs = processes_in(dind.pid)
        obs["processes"] = procs
        obs["nested_process"] = nested_process(nested_pid)
        status = dind.status()
        obs["policy"] = status.get("policy")
        obs["dockerd_status"] = status.get("dockerd")
        # No --pids-limit: what the outer runtime (systemd driver) gives a container.
        obs["pids_max"] = read(f"{container_group(dind)}/pids.max")
        obs["metrics"] = dind.metrics()
    finally:
        dind.remove()
    return obs


def nested_process(pid_in_dind: int) -> dict[str, Any] | None:
    """A nested container's process, found by its pid in the dind container's namespace.

    Its NSpid line has three levels (guest, dind container, nested container);
    only one dind container runs at a time, so the second level is unique.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        status = read(f"/proc/{entry}/status") or ""
        nspid = next((line.split()[1:] for line in status.splitlines()
                      if line.startswith("NSpid:")), [])
        if len(nspid) == 3 and nspid[1] == str(pid_in_dind):
            return {
                "pid": int(entry),
                "oom_score": int((read(f"/proc/{entry}/oom_score") or "0").strip() or 0),
                "oom_score_adj": int((read(f"/proc/{entry}/oom_score_adj") or "0").strip() or 0),
            }
    return None


# 3. the docker:dind docs' runtime settings -------------------------------------------


DOCS_ULIMITS = ("--ulimit", "nofile=-1", "--ulimit", "nproc=-1", "--ulimit", "core=-1",
                "--pids-limit", "-1", "--oom-score-adj", "-500")


def docs_runtime_settings(image: str) -> Obs:
    """The docs' example as written (nofile=-1), then with nofile=1048576:1048576."""
    obs: Obs = {"nr_open": (read("/proc/sys/fs/nr_open") or "").strip()}
    name = "s3-docs"
    docker("rm", "-f", "-v", name, check=False)
    first = docker("run", "-d", "--name", name, "--privileged", *NO_TLS, *DOCS_ULIMITS, image,
                   check=False, timeout=120)
    obs["as_written"] = {
        "rc": first.returncode, "stdout": first.stdout[-500:], "stderr": first.stderr[-2000:],
        "state": docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name,
                        check=False).stdout.strip(),
        "logs": docker("logs", name, check=False).stdout[-2000:],
    }
    docker("rm", "-f", "-v", name, check=False)
    fixed = [a.replace("nofile=-1", "nofile=1048576:1048576") for a in DOCS_ULIMITS]
    dind = Dind.start(name, image, options=[*NO_TLS, *fixed])
    try:
        obs["ready_seconds"] = dind.wait_ready(timeout=120)
        status = dind.status()
        obs["policy"] = status.get("policy")
        obs["processes"] = processes_in(dind.pid)
        obs["pids_max"] = read(f"{container_group(dind)}/pids.max")
        # Nested, the same nofile=-1 reaches the nested runc: does the agent explain it right?
        dind.load_busybox()
        nested = dind.docker("run", "--rm", "--network", "none", "--ulimit", "nofile=-1",
                             "busybox:test", "true", check=False, timeout=120)
        obs["nested_nofile_unlimited"] = {"rc": nested.returncode, "err": nested.stderr[-1500:]}
        poll(lambda: dind.events("container_policy_refused"), timeout=30,
             what="the agent's explanation", interval=1)
        obs["explanations"] = dind.events("container_policy_refused")
        nested_ok = dind.docker("run", "--rm", "--network", "none", "--ulimit",
                                "nofile=1048576:1048576", "busybox:test", "sh", "-c", "ulimit -n",
                                check=False, timeout=120)
        obs["nested_nofile_1048576"] = {"rc": nested_ok.returncode, "out": nested_ok.stdout}
    except TimeoutError as exc:
        obs["explanations"] = []
        obs["explanation_timeout"] = str(exc)
    finally:
        dind.remove()
    return obs


# 5. kill -9 of dockerd, then of the agent ------------------------------------------------


def _agent(dind: Dind) -> dict[str, Any] | None:
    procs = processes_in(dind.pid)
    init = next(p for p in procs if p["inner_pid"] == 1)
    return next((p for p in procs if p["ppid"] == init["pid"] and p["comm"] == init["comm"]),
                None)


def kill_recovery(image: str) -> Obs:
    """kill -9 dockerd, then kill -9 the agent, with a nested container running."""
    obs: Obs = {}
    dind = Dind.start("s5-kill", image, options=NO_TLS)
    try:
        obs["ready_seconds"] = dind.wait_ready(timeout=120)
        dind.load_busybox()
        dind.docker("run", "-d", "--name", "survivor", "--network", "none", "busybox:test",
                    "sleep", "100000", timeout=120)
        fmt = "{{.Id}} {{.State.Pid}} {{.State.StartedAt}}"
        obs["nested_before"] = dind.docker("inspect", "-f", fmt, "survivor").stdout.strip()

        dockerd = next(p for p in processes_in(dind.pid) if p["comm"] == "dockerd")
        old_inner = dind.status()["dockerd"]["pid"]
        obs["dockerd_killed"] = {"host_pid": dockerd["pid"], "inner_pid": old_inner}
        started = time.monotonic()
        os.kill(dockerd["pid"], signal.SIGKILL)

        def restarted() -> bool:
            state = dind.status()["dockerd"]
            return state["pid"] not in (None, old_inner) and dind.http("/readyz")[0] == 200

        try:
            poll(restarted, timeout=90, what="a new ready dockerd")
            obs["dockerd_recovered_seconds"] = time.monotonic() - started
        except TimeoutError as exc:
            obs["dockerd_recovery_error"] = str(exc)
        obs["nested_after_dockerd"] = dind.docker("inspect", "-f", fmt, "survivor",
                                                  check=False).stdout.strip()
        metrics = dind.metrics()
        obs["dockerd_restarts_exit"] = metric(metrics, "dind_dockerd_restarts_total",
                                              {"reason": "exit"})

        agent = _agent(dind)
        obs["agent_killed"] = agent and {"pid": agent["pid"], "inner_pid": agent["inner_pid"]}
        if agent is not None:
            started = time.monotonic()
            os.kill(agent["pid"], signal.SIGKILL)

            def answered() -> bool:
                if not dind.running():
                    return True  # settled: the container ended
                new = _agent(dind)
                return bool(new and new["pid"] != agent["pid"]
                            and dind.http("/readyz")[0] == 200)

            try:
                poll(answered, timeout=90, what="a new agent with a ready dockerd")
            except TimeoutError as exc:
                obs["agent_recovery_error"] = str(exc)
            obs["agent_settled_seconds"] = time.monotonic() - started
            obs["container_after_agent"] = dind.inspect(
                "{{.State.Status}} {{.State.ExitCode}}"
            )
            if dind.running():
                obs["nested_after_agent"] = dind.docker("inspect", "-f", fmt, "survivor",
                                                        check=False).stdout.strip()
                text = dind.metrics() if dind.http("/metrics")[0] == 200 else ""
                obs["agent_restarts"] = metric(text, "dind_agent_restarts_total")
            # The agent's and PID 1's own lines (not dockerd's) say what happened.
            own = [line for line in dind.logs().splitlines() if '"source": "dockerd"' not in line]
            obs["logs_tail"] = "\n".join(own[-15:])
    finally:
        dind.remove()
    return obs


# 4. systemd as the guest's init with the project's unit ------------------------------------


def _show(unit: str, *props: str) -> dict[str, str]:
    out = run(["systemctl", "show", unit, *[f"-p{p}" for p in props]]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _local_status() -> dict[str, Any] | None:
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", 9324, timeout=5)
        conn.request("GET", "/status")
        response = conn.getresponse()
        return dict(json.loads(response.read())) if response.status == 200 else None
    except (OSError, ValueError):
        return None


def systemd_unit(_image: str) -> Obs:
    """Type=notify readiness, the watchdog against a SIGSTOPped dockerd, reload, graceful stop."""
    unit = "dind-supervisor.service"
    obs: Obs = {}
    # The unit replaces docker.service (Conflicts=); clear the outer containers first.
    ids = docker("ps", "-aq", check=False).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False, timeout=180)
    run(["install", "-m", "0644", f"{INPUT}/systemd/dind-supervisor.service",
         f"/etc/systemd/system/{unit}"])
    os.makedirs("/etc/dind-supervisor", exist_ok=True)
    with open("/etc/dind-supervisor/config.toml", "w") as f:
        f.write("")
    dropin = f"/etc/systemd/system/{unit}.d"
    os.makedirs(dropin, exist_ok=True)
    with open(f"{dropin}/lane.conf", "w") as f:
        # The agent would replace a hung dockerd by itself after 3 missed pings; here it
        # must keep waiting, so that systemd's watchdog is what acts on a dockerd that
        # stays hung. Start timeouts are scaled for emulation.
        f.write("[Service]\n"
                "Environment=DIND_SUPERVISOR_LIVENESS_FAILURES=100000\n"
                f"Environment=DIND_SUPERVISOR_DOCKERD_START_TIMEOUT={int(scaled(60))}s\n")
    run(["systemctl", "daemon-reload"])
    obs["verify"] = run(["systemd-analyze", "verify", unit], check=False).stderr[-1500:]

    started = time.monotonic()
    start = run(["systemctl", "start", unit], check=False, timeout=360)
    obs["start"] = {"rc": start.returncode, "err": start.stderr[-1000:],
                    "seconds": time.monotonic() - started}
    # Type=notify: `systemctl start` returned, so the API must answer now, first try.
    first = run(["docker", "version", "-f", "{{.Server.Version}}"], check=False, timeout=30)
    obs["docker_right_after_start"] = {"rc": first.returncode, "out": first.stdout.strip(),
                                       "err": first.stderr[-500:]}
    props = ("ActiveState", "SubState", "MainPID", "StatusText", "NRestarts", "Type",
             "WatchdogUSec", "CanReload", "Result")
    obs["after_start"] = _show(unit, *props)
    reload = run(["systemctl", "reload", unit], check=False, timeout=60)
    obs["reload"] = {"rc": reload.returncode, "err": reload.stderr.strip()}

    status = poll(_local_status, timeout=30, what="the agent's /status on the host")
    dockerd_pid = status["dockerd"]["pid"]
    old_main = int(obs["after_start"]["MainPID"])
    obs["dockerd_stopped"] = dockerd_pid
    stopped_at = time.monotonic()
    os.kill(dockerd_pid, signal.SIGSTOP)

    def restarted_by_systemd() -> dict[str, str] | None:
        now = _show(unit, *props)
        if now.get("NRestarts") != "1" or now.get("ActiveState") != "active":
            return None
        fresh = _local_status()
        if not fresh or not fresh.get("dockerd", {}).get("pid") or int(now["MainPID"]) == old_main:
            return None
        return now

    try:
        # WatchdogSec (60 s) + the abort's stop (at most TimeoutStopSec, 45 s) + RestartSec
        # (5 s) + a start: real time, plus the start's emulation scale.
        deadline = 60 + 45 + 5 + scaled(60)
        end = time.monotonic() + deadline
        obs["after_watchdog"] = None
        while time.monotonic() < end:
            found = restarted_by_systemd()
            if found:
                obs["after_watchdog"] = found
                break
            time.sleep(2)
        obs["watchdog_restart_seconds"] = time.monotonic() - stopped_at
    finally:
        # Never leave a stopped process behind, whatever happened.
        with contextlib.suppress(ProcessLookupError):
            os.kill(dockerd_pid, signal.SIGCONT)
    obs["dockerd_pid_after"] = (_local_status() or {}).get("dockerd", {}).get("pid")
    journal = run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"], check=False,
                  timeout=60).stdout
    obs["journal_watchdog"] = [line for line in journal.splitlines()
                               if "atchdog" in line and not line.startswith("{")][-5:]

    stopping = time.monotonic()
    stop = run(["systemctl", "stop", unit], check=False, timeout=120)
    obs["stop"] = {"rc": stop.returncode, "seconds": time.monotonic() - stopping}
    obs["after_stop"] = _show(unit, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    journal = run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"], check=False,
                  timeout=60).stdout
    events = []
    for line in journal.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    obs["last_events"] = [e for e in events
                          if e.get("event") in ("dockerd_exited", "agent_stopped",
                                                "dockerd_stop_requested", "dockerd_signalled")][-6:]
    obs["left_in_cgroup"] = read(f"{CGROUP}/system.slice/{unit}/cgroup.procs")
    return obs


SCENARIOS = {
    "cgroup_v2_nesting": cgroup_v2_nesting,
    "cgroupns_host": cgroupns_host,
    "apparmor_securityfs": apparmor_securityfs,
    "policy_privileged": policy_privileged,
    "docs_runtime_settings": docs_runtime_settings,
    "kill_recovery": kill_recovery,
    "systemd_unit": systemd_unit,  # last: it replaces the guest's docker.service
}


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, CommandFailed | TimeoutError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
