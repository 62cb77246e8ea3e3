"""``python -m bench.run [--quick]``: run every benchmark, print the table, write RESULTS.md.

Owns: the run plan (how many runs of what, full or quick), turning the
measurements into rows with their goals, and writing the results and plot.
Must run as root (namespaces, mounts); sends traffic only over unix sockets
and loopback inside private network namespaces; every loop is bounded.
Does not own the measurements (bench.ready, bench.clients, bench.lifecycle,
bench.load, bench.costs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import clients, containerd, costs, lifecycle, load, ready
from bench.probes import workspace
from bench.report import Row, fmt_runs, import_profile, machine, markdown, median, phase_lines, plot
from tests.integration.clientloop import Tally

HERE = Path(__file__).resolve().parent
MB = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    ready_rounds: int
    first_call_rounds: int
    cert_runs: int
    kills: int
    hangs: int
    rotations: int
    rotation_lifetime: float
    fault_rotations: int
    fault_kills: int
    fault_hangs: int
    idle: float
    scrapes: int
    containers: int
    wrk_seconds: float
    wrk_connections: int
    orphans: int
    reap_runs: int
    containerd_kills: int
    cost_runs: int


FULL = Plan(ready_rounds=10, first_call_rounds=5, cert_runs=5, kills=5, hangs=3, rotations=3,
            rotation_lifetime=20, fault_rotations=3, fault_kills=3, fault_hangs=1, idle=60,
            scrapes=500, containers=200, wrk_seconds=15, wrk_connections=8, orphans=1000,
            reap_runs=5, containerd_kills=5, cost_runs=10)
QUICK = Plan(ready_rounds=2, first_call_rounds=1, cert_runs=2, kills=1, hangs=1, rotations=1,
             rotation_lifetime=15, fault_rotations=1, fault_kills=1, fault_hangs=1, idle=10,
             scrapes=100, containers=20, wrk_seconds=3, wrk_connections=4, orphans=1000,
             reap_runs=1, containerd_kills=1, cost_runs=3)


@dataclass(slots=True, kw_only=True)
class Measured:
    ready: ready.ReadyTimes
    first: clients.FirstCall
    faults: clients.Faults
    builds: clients.Builds
    certs: dict[str, list[float]]
    rec: lifecycle.Recovery
    rot: lifecycle.Rotation
    res: load.Load
    ctr: containerd.ContainerdRecovery


def _ratio(ours: list[float], other: list[float]) -> float:
    return median(ours) / median(other)


def _calls(result: Tally) -> str:
    text = f"{len(result.failed)} failed of {result.calls}"
    kinds: dict[str, int] = {}
    for call in result.failed:
        kinds[call.error] = kinds.get(call.error, 0) + 1
    if kinds:
        text += " (" + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) + ")"
    if result.cut_by_kill:
        text += f"; {len(result.cut_by_kill)} more cut in flight by the kill"
    return text + f"; longest gap {result.longest_gap:.2f} s"


def _ready_rows(m: Measured) -> list[Row]:
    r = m.ready.runs
    first = _ratio(r["ours_tls_first"], r["bare_first"])
    extra = median(r["ours_tls_restart"]) - median(r["bare_restart"])
    plain = _ratio(r["ours_notls_first"], r["bare_first"])
    return [
        Row(figure="1a. time to ready, first start, TLS on (empty certdir: certificates issued)",
            ours=fmt_runs(r["ours_tls_first"]), comparison="bare dockerd, same flags, first"
            " start: " + fmt_runs(r["bare_first"]), relation=f"{first:.2f}x", goal="≤ 1.3x",
            met=first <= 1.3),
        Row(figure="1b. time to ready, restart, existing certs and data root",
            ours=fmt_runs(r["ours_tls_restart"]), comparison="bare dockerd, same flags,"
            " restart: " + fmt_runs(r["bare_restart"]), relation=f"bare {extra * 1000:+.0f} ms",
            goal="≤ bare + 60 ms", met=extra <= 0.060),
        Row(figure="1c. time to ready, first start, TLS off", ours=fmt_runs(r["ours_notls_first"]),
            comparison="bare dockerd, first start (1a)", relation=f"{plain:.2f}x", goal="—",
            met=None),
    ]


def _client_rows(m: Measured) -> list[Row]:
    f = m.faults
    out = [Row(
        figure=f"10. TLS client calls (one every 100 ms) across {f.rotations} rotations,"
        f" {f.kills} kill -9 and {f.hangs} hang restart of dockerd",
        ours=_calls(f.ours.total), comparison="bare dockerd restarted the same way: "
        + _calls(f.bare.total), relation="—", goal="0 failed",
        met=not f.ours.total.failed)]
    for kind in ("rotation", "kill -9", "hang"):
        if kind in f.ours.by_kind:
            out.append(Row(figure=f"10. … of which during the {kind}s", ours=_calls(
                f.ours.by_kind[kind]), comparison=_calls(f.bare.by_kind.get(kind, Tally())),
                relation="—", goal="0 failed", met=not f.ours.by_kind[kind].failed))
    first = m.first
    for variant, label in (("tls_restart", "restart, TLS tcp 2376, certificates in place"),
                           ("unix_first", "first start, unix socket")):
        ours_s, bare_s = first.seconds[f"ours_{variant}"], first.seconds[f"bare_{variant}"]
        ours_r, bare_r = first.refused[f"ours_{variant}"], first.refused[f"bare_{variant}"]
        ours_u = first.refused_until[f"ours_{variant}"]
        bare_u = first.refused_until[f"bare_{variant}"]
        out.append(Row(
            figure=f"11. first call of a client started with the container ({label}): answered"
            " after; calls refused before it, and until when",
            ours=f"{fmt_runs(ours_s)}; refused {_counts(ours_r)}, until {fmt_runs(ours_u)}",
            comparison=f"bare dockerd: {fmt_runs(bare_s)}; refused {_counts(bare_r)}, until"
            f" {fmt_runs(bare_u)}",
            relation=f"bare {(median(ours_s) - median(bare_s)) * 1000:+.0f} ms",
            goal="0 refused", met=max(ours_r) == 0))
    waits, cut = m.builds.waits, m.builds.no_wait
    out.append(Row(
        figure=f"12. `docker build` over TLS spanning a due rotation (tls.rotation_idle"
        f" {clients.BUILD_IDLE:g} s)", ours=_build(waits),
        comparison="tls.rotation_max_wait 0 (no waiting): " + _build(cut), relation="—",
        goal="completes", met=waits.completed))
    return out


def _counts(values: list[int]) -> str:
    return f"{median(values):g} (max {max(values)}, n={len(values)})"


def _build(result: clients.BuildResult) -> str:
    if not result.completed:
        return f"cut after {result.seconds:.1f} s ({result.error})"
    after = "restart after the build ended" if result.rotated_after_build else \
        "restart during the build"
    return f"completed in {result.seconds:.1f} s; {after}; waited {result.waited:.1f} s"


def rows(m: Measured) -> list[Row]:
    r, rec, rot, res, certs = m.ready.runs, m.rec, m.rot, m.res, m.certs
    issuance = _ratio(certs["rsa-4096"], certs["ecdsa-p256"])
    recovery_extra = median(rec.kill9) - median(r["bare_restart"])
    rss = (res.rss_pid1 + res.rss_agent) / MB
    out = [
        *_ready_rows(m),
        Row(figure="2. certificate issuance, CA + server + client",
            ours="ECDSA P-256: " + fmt_runs(certs["ecdsa-p256"], "ms", 1000, 0),
            comparison="RSA-4096 (docker:dind): " + fmt_runs(certs["rsa-4096"]),
            relation=f"{issuance:.0f}x faster", goal="—", met=None),
        Row(figure="3. recovery: kill -9 dockerd → /_ping answers", ours=fmt_runs(rec.kill9),
            comparison="bare dockerd restart (1b)", relation=f"bare {recovery_extra:+.2f} s",
            goal="≤ bare + 0.2 s", met=recovery_extra <= 0.2),
        Row(figure="4a. hang: SIGSTOP dockerd → dockerd_unhealthy (default liveness)",
            ours=fmt_runs(rec.hang_detected), comparison="docker:dind, systemd: never detected",
            relation="—", goal="—", met=None),
        Row(figure="4b. hang: SIGSTOP dockerd → new dockerd answers",
            ours=fmt_runs(rec.hang_ready), comparison="docker:dind, systemd: never", relation="—",
            goal="—", met=None),
        Row(figure=f"5a. rotation ({rot.lifetime:g} s server cert): longest /_ping gap",
            ours=fmt_runs(rot.gaps), comparison="bare dockerd restart (1b)",
            relation=f"{median(rot.gaps) / median(r['bare_restart']):.2f}x", goal="—", met=None),
        Row(figure="5b. rotation: running container kept (same pid, running)",
            ours=f"{sum(rot.container_kept)}/{len(rot.container_kept)} rotations",
            comparison="—", relation="—", goal="all", met=all(rot.container_kept)),
        Row(figure="6a. RSS of PID 1 + agent (idle, 0 containers)",
            ours=f"{rss:.1f} MB ({res.rss_pid1 / MB:.1f} + {res.rss_agent / MB:.1f}); "
            f"PSS {res.pss_pid1_agent / MB:.1f} MB",
            comparison=f"dockerd alone: {res.rss_dockerd / MB:.1f} MB", relation="—",
            goal="≤ 60 MB", met=rss <= 60),
        Row(figure=f"6b. idle CPU of PID 1 + agent over {res.idle_seconds:.0f} s",
            ours=f"{res.idle_cpu_percent:.2f}% of a core", comparison="—", relation="—",
            goal="≤ 0.5%", met=res.idle_cpu_percent <= 0.5),
    ]
    for label, scrape in (("0", res.scrape_empty), (str(res.containers), res.scrape_full)):
        assert scrape is not None
        goal = label == "200"
        out.append(Row(
            figure=f"7. /metrics scrape at {label} containers ({scrape.count} sequential GETs)",
            ours=f"p50 {scrape.p50 * 1000:.1f} ms, p99 {scrape.p99 * 1000:.1f} ms",
            comparison=f"{scrape.errors} errors, {scrape.body_bytes} bytes",
            relation=f"agent CPU {scrape.cpu_per_scrape * 1000:.1f} ms/scrape",
            goal="p99 ≤ 10 ms" if goal else "—", met=(scrape.p99 <= 0.010) if goal else None))
    if res.wrk is not None:
        w = res.wrk
        out.append(Row(
            figure=f"7. /metrics under wrk load ({w.connections} connections, {w.duration:g} s, "
            f"{res.containers} containers)",
            ours=f"p50 {w.p50 * 1000:.1f} ms, p99 {w.p99 * 1000:.1f} ms",
            comparison=f"{w.requests_per_second:.0f} req/s, {w.requests} requests, "
            f"{w.errors} errors", relation="—", goal="—", met=None))
    out.append(Row(
        figure=f"8. {res.orphans} orphans reaped by PID 1 (from release)", ours=fmt_runs(res.reap),
        comparison="of which until all had exited: " + fmt_runs(res.reap_exited),
        relation=f"PID 1 lag {median(res.reap) - median(res.reap_exited):.3f} s",
        goal="≤ 1 s", met=median(res.reap) <= 1.0))
    ours, theirs = m.ctr.exec_back["ours"], m.ctr.exec_back["dockerd"]
    out.append(Row(
        figure="9. kill -9 containerd → `docker exec` works again",
        ours="agent's containerd: " + fmt_runs(ours),
        comparison="dockerd's own containerd: " + fmt_runs(theirs),
        relation=f"{median(theirs) / median(ours):.1f}x faster; container kept"
        f" {sum(m.ctr.container_kept)}/{len(m.ctr.container_kept)}",
        goal="< 11.7 s, container kept",
        met=median(ours) < 11.7 and all(m.ctr.container_kept)))
    return out + _client_rows(m)


def notes(plan: Plan, mode: str, bare_argv: list[str]) -> list[str]:
    lines = [
        "- Our agent runs as the image installs it (`pip install .`): `python -S -P -m"
        " supervisor run` with the checkout and the venv's site-packages on PYTHONPATH, the"
        " default log level. The development venv's editable install would add a start-up hook"
        " (~10 ms, ~2 MB) to every interpreter that no installed copy has.",
        "- Time to ready: from starting `unshare` (private pid/mount/net namespaces, temp dirs "
        "bind-mounted on /var/lib/docker, /run, /certs) to the first `GET /_ping` answered 200 on "
        "the unix socket, polled every 5 ms (a poll that reaches a held socket waits in its "
        "backlog until dockerd answers). Bare dockerd runs as PID 1 the same way with exactly "
        f"the flags our dockerd got (`{' '.join(bare_argv)}`), on certificates made beforehand. "
        "Restart = a new namespace on the previous run's data root (and certdir), after a clean "
        f"TERM stop. {plan.ready_rounds} rounds; each round runs ours and bare in turn, the "
        "order alternating.",
        "- Recovery and hang runs use the agent's default restart and liveness settings "
        "(liveness every 5 s, 3 s timeout, 3 misses; TERM, then KILL after 5 s); each kill "
        "waits until dockerd has been ready for restart.healthy_after (10 s), so the restart "
        "is immediate rather than backed off.",
        "- Rotation: `--tls-server-lifetime` short enough to renew during the run, dockerd "
        "runs with --live-restore (the default) and one `sleep` container; the gap is the "
        "longest time between two answered pings (10 ms polling).",
        "- Footprint: VmRSS from /proc of the namespace's PID 1 and the agent (host pids); RSS "
        "counts pages shared by the two (loaded before the fork) twice, PSS splits them. "
        "Idle CPU: utime+stime delta of both over the idle period, no scrapes.",
        "- Scrapes: a Python client inside the network namespace, a new connection per GET, "
        "timed with perf_counter; containers are `docker create`d (not running) from a "
        "busybox image imported into the sandbox.",
        "- Orphans: an intermediate process forks them and exits, so PID 1 adopts them while "
        "they block on a pipe; closing the pipe ends them together. The 'exited' time is "
        "when the last one had closed its files (kernel exit work on 2 cores); the rest is "
        "PID 1's reaping lag.",
        "- containerd: two sandboxes with a running `sleep` container, the default (the agent "
        "runs containerd) and `--no-dockerd-manage-containerd` (dockerd starts its own, as "
        "docker:dind does); kills alternate between them, each after that containerd ran 10 s "
        "(restart.healthy_after); time from SIGKILL to the first `docker exec keep true` that "
        "succeeds (a new CLI process every 20 ms at most).",
        "- Client calls (10): `tests/integration/clientloop.py` inside the sandbox's network "
        "namespace: a new TCP connection to 127.0.0.1:2376, the TLS handshake with "
        "/certs/client, `GET /_ping`, the whole answer; the next call 100 ms after this one "
        "began (at once when it took longer: a call waiting in the backlog takes as long as "
        "the restart); 60 s timeout. Ours with shortened settings (`"
        + " ".join(clients.FAULT_ARGS) + "`): the agent's own renewals, kill -9 of a dockerd "
        "ready for 1 s, and SIGSTOP until the agent finds it hung and replaces it. Bare: "
        "`bench/launcher.py` as PID 1 starts dockerd again whenever it exits; a 'rotation' is "
        "TERM (what a renewal needs without held sockets), a kill -9 the same, a hang SIGSTOP "
        "then KILL after as long as ours took. A failed call that began before a kill -9 (or "
        "the SIGSTOP of the hung dockerd, which ends in a KILL) and ended after it is counted "
        "apart, as cut in flight: only a connection the dead dockerd had accepted can be cut; "
        "one in the backlog is answered by the next dockerd. Calls are counted by the phase "
        "they began in.",
        "- First call (11): the sandbox's shell starts `docker version` (the docker CLI with "
        "the client certificates, or on the unix socket) in the background, then execs PID 1; "
        "the CLI is run again 10 ms after each failure (at most 1000 times). 'Refused' counts "
        "the calls that failed before the one answered, 'until' is when the last of them "
        "failed (the window in which nobody listened); times are from `unshare`. A client "
        "with no retry loop gets an answer only when the count is 0. The client starts before "
        "PID 1 is exec'd, so an interpreter's start-up is always in the window: on a restart "
        "PID 1 listens from the previous run's record (`prelisten`) in its first tens of "
        "milliseconds, on a first start the agent listens once the launch has the sockets.",
        f"- Build (12): server certificates of {clients.BUILD_LIFETIME:g} s (renewed at about "
        "2/3, waiting for quiet at most half the third left); `docker build` (legacy builder, "
        f"a RUN step printing a line every 0.5 s for {clients.BUILD_STEPS * 0.5:g} s) over TLS "
        f"from the network namespace, started {clients.BUILD_LEAD:g} s before the renewal falls "
        "due. Both sandboxes run at the same time. 'waited' is "
        "`dind_tls_rotation_wait_seconds_sum`.",
        f"- Run plan ({mode}): {plan}.",
    ]
    if mode == "quick":
        lines.append("- Quick mode is a smoke run: fewer runs, shorter idle and load periods, "
                     f"{plan.containers} containers instead of 200; do not quote it.")
    return lines


def why(m: Measured, cost: costs.StartCost) -> list[str]:
    """The time-to-ready figures, taken apart: what the goals' misses are made of."""
    t = m.ready
    lines: list[str] = []
    start = median(t.sandbox_start)
    for variant, bare_key, goal in (("ours_tls_first", "bare_first", "≤ 1.3x bare"),
                                    ("ours_tls_restart", "bare_restart", "≤ bare + 60 ms")):
        spawned = ready.median_phase(t, variant, "dockerd_spawned")
        certs = ready.median_phase(t, variant, "certs")
        ctrd = ready.median_phase(t, variant, "containerd")
        if spawned is None:
            continue
        answered, bare = median(t.runs[variant]), median(t.runs[bare_key])
        own, bare_own = answered - spawned, bare - start
        awaited = f", {(ctrd - certs) * 1000:.0f} ms of it containerd's start, awaited" \
            " before dockerd's spawn" if ctrd is not None and certs is not None else ""
        lines.append(
            f"- {variant.replace('_', ' ')} ({goal}): ours answers {answered * 1000:.0f} ms"
            f" after `unshare`, bare dockerd {bare * 1000:.0f} ms. Bare dockerd is exec'd once"
            f" the sandbox is up (~{start * 1000:.0f} ms); ours is spawned at"
            f" {spawned * 1000:.0f} ms: {(spawned - start) * 1000:.0f} ms of interpreter,"
            f" imports, configuration and launch{awaited}. dockerd's own start then took"
            f" {own * 1000:.0f} ms under ours against {bare_own * 1000:.0f} ms bare"
            f" ({(own - bare_own) * 1000:+.0f} ms: the agent's own start, ~0.3 s of CPU for"
            " its imports, event loop and certificate check, runs beside it on 2 cores).")
    lines.append(
        f"- Of the time before the spawn, the CPU spent before the launch is"
        f" {(cost.pid1_imports + cost.agent_imports + cost.command_line) * 1000:.0f} ms,"
        f" {cost.agent_imports * 1000:.0f} ms of it the agent's imports (the configuration's"
        " and the launch's modules: dataclasses, typing, pathlib, tomllib, hashlib, ...); the"
        " launch (lock, policy, preparation, certificates, sockets, containerd) is the rest."
        " A Python agent that reads its configuration before dockerd's spawn pays this;"
        " meeting the goals needs dockerd spawned from a path that imports almost nothing"
        " (e.g. PID 1 spawning it on a restart from the command line the previous agent"
        " recorded), a design change rather than a tuning one.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run (a few minutes)")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown file (default bench/RESULTS.md; quick: RESULTS-quick.md)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.run needs root: it creates namespaces and mounts", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    plan = QUICK if args.quick else FULL
    suffix = "-quick" if args.quick else ""
    output = args.output or HERE / f"RESULTS{suffix}.md"
    picture = output.with_name(f"time_to_ready{suffix}.png")
    info = machine()
    started = time.monotonic()

    def step(name: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {name}", file=sys.stderr, flush=True)

    with workspace() as space:
        bare_certs = clients.make_certs(space.root("bare-certs") / "certs")
        step(f"time to ready ({plan.ready_rounds} interleaved rounds, ours and bare dockerd)")
        times = ready.time_to_ready(space, plan.ready_rounds, bare_certs)
        step("client calls across rotations, kill -9 and a hang (ours, then bare)")
        faults = clients.faults(space, rotations=plan.fault_rotations, kills=plan.fault_kills,
                                hangs=plan.fault_hangs, certs=bare_certs)
        step("the first call of a client started with the container")
        first = clients.first_call(space, plan.first_call_rounds, times.bare_argv, bare_certs)
        step("a docker build across a due rotation")
        builds = clients.build_across_rotation(space)
        step("certificate issuance")
        certs = load.cert_issuance(plan.cert_runs)
        step("recovery and hang detection")
        rec = lifecycle.recovery(space, plan.kills, plan.hangs)
        step("rotation")
        rot = lifecycle.rotation(space, plan.rotations, plan.rotation_lifetime)
        step("footprint, scrapes, load, orphans")
        res = load.footprint_and_load(
            space, idle=plan.idle, scrapes=plan.scrapes, containers=plan.containers,
            wrk_seconds=plan.wrk_seconds, wrk_connections=plan.wrk_connections,
            orphans=plan.orphans, reap_runs=plan.reap_runs,
        )
        step("containerd: kill -9 → docker exec (ours and dockerd's own, interleaved)")
        ctr = containerd.containerd_recovery(space, plan.containerd_kills)
    step("profiles (start-up CPU, memory by import)")
    cost = costs.start_cost(plan.cost_runs)
    ladder = costs.memory_ladder()
    step("report")
    info["load average at the end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    info["duration of the run"] = f"{time.monotonic() - started:.0f} s"
    m = Measured(ready=times, first=first, faults=faults, builds=builds, certs=certs, rec=rec,
                 rot=rot, res=res, ctr=ctr)
    profile = [
        "Milestones, medians of the time-to-ready rounds (ours from the agent's log):", "",
        *phase_lines(times), "",
        "Why the time-to-ready goals are missed (or met):", "", *why(m, cost), "",
        *costs.cost_lines(cost), "",
        "Where each MB of the agent goes: its imports in the order it makes them, VmRSS after"
        " each (median of 3 fresh interpreters; a module shared by two steps is counted in"
        " the first):", "",
        *costs.ladder_lines(ladder, live_agent=res.rss_agent, live_pid1=res.rss_pid1), "",
        "What each heavy import costs alone in a fresh interpreter (median of 3):", "",
        *import_profile()]
    text = markdown(rows(m), info, mode=mode, notes=notes(plan, mode, times.bare_argv),
                    profile=profile)
    output.write_text(text)
    raw: dict[str, Any] = {
        "machine": info, "plan": dataclasses.asdict(plan), "ready": dataclasses.asdict(times),
        "first_call": dataclasses.asdict(first), "faults": _faults_json(faults),
        "builds": dataclasses.asdict(builds), "certs": certs,
        "recovery": dataclasses.asdict(rec), "rotation": dataclasses.asdict(rot),
        "load": dataclasses.asdict(res), "start_cost": dataclasses.asdict(cost),
        "memory_ladder": dataclasses.asdict(ladder), "containerd": dataclasses.asdict(ctr)}
    output.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    plot(times, picture)
    print(text)
    print(f"\nwrote {output}, its .json (raw runs) and {picture}", file=sys.stderr)
    return 0


def _faults_json(faults: clients.Faults) -> dict[str, Any]:
    def side(s: clients.Side) -> dict[str, Any]:
        def one(t: Tally) -> dict[str, Any]:
            return {"calls": t.calls, "failed": [dataclasses.asdict(c) for c in t.failed],
                    "cut_by_kill": [dataclasses.asdict(c) for c in t.cut_by_kill],
                    "longest_gap": t.longest_gap}
        return {"total": one(s.total), "by_kind": {k: one(v) for k, v in s.by_kind.items()},
                "hang_seconds": s.hang_seconds}

    return {"rotations": faults.rotations, "kills": faults.kills, "hangs": faults.hangs,
            "ours": side(faults.ours), "bare": side(faults.bare)}


if __name__ == "__main__":
    sys.exit(main())
