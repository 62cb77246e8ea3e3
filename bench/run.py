"""``python -m bench.run [--quick]``: run every benchmark, print the table, write RESULTS.md.

Owns: the run plan (how many runs of what, full or quick), turning the
measurements into rows with their goals, and writing the results and plot.
Must run as root (namespaces, mounts); sends traffic only over unix sockets
and loopback inside private network namespaces; every loop is bounded.
Does not own the measurements (bench.lifecycle, bench.load).
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

from bench import containerd, lifecycle, load
from bench.probes import workspace
from bench.report import Row, fmt_runs, import_profile, machine, markdown, median, phase_lines, plot

HERE = Path(__file__).resolve().parent
MB = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    ready_runs: int
    cert_runs: int
    kills: int
    hangs: int
    rotations: int
    rotation_lifetime: float
    idle: float
    scrapes: int
    containers: int
    wrk_seconds: float
    wrk_connections: int
    orphans: int
    reap_runs: int
    containerd_kills: int


FULL = Plan(ready_runs=5, cert_runs=5, kills=5, hangs=3, rotations=3, rotation_lifetime=20,
            idle=60, scrapes=500, containers=200, wrk_seconds=15, wrk_connections=8,
            orphans=1000, reap_runs=5, containerd_kills=5)
QUICK = Plan(ready_runs=2, cert_runs=2, kills=1, hangs=1, rotations=1, rotation_lifetime=15,
             idle=10, scrapes=100, containers=20, wrk_seconds=3, wrk_connections=4,
             orphans=1000, reap_runs=1, containerd_kills=1)


def _ratio(ours: list[float], other: list[float]) -> float:
    return median(ours) / median(other)


def rows(
    *, ready: lifecycle.ReadyTimes, certs: dict[str, list[float]],
    rec: lifecycle.Recovery, rot: lifecycle.Rotation, res: load.Load,
    ctr: containerd.ContainerdRecovery,
) -> list[Row]:
    r = ready.runs
    first = _ratio(r["ours_tls_first"], r["bare_first"])
    restart = _ratio(r["ours_tls_restart"], r["bare_restart"])
    plain = _ratio(r["ours_notls_first"], r["bare_first"])
    issuance = _ratio(certs["rsa-4096"], certs["ecdsa-p256"])
    recovery_extra = median(rec.kill9) - median(r["bare_restart"])
    rss = (res.rss_pid1 + res.rss_agent) / MB
    out = [
        Row(figure="1a. time to ready, first start, TLS on (empty certdir)",
            ours=fmt_runs(r["ours_tls_first"]), comparison="bare dockerd, first start: "
            + fmt_runs(r["bare_first"]), relation=f"{first:.2f}x", goal="≤ 1.3x",
            met=first <= 1.3),
        Row(figure="1b. time to ready, restart, existing certs and data root",
            ours=fmt_runs(r["ours_tls_restart"]), comparison="bare dockerd, restart: "
            + fmt_runs(r["bare_restart"]), relation=f"{restart:.2f}x", goal="≤ 1.15x",
            met=restart <= 1.15),
        Row(figure="1c. time to ready, first start, TLS off", ours=fmt_runs(r["ours_notls_first"]),
            comparison="bare dockerd, first start (above)", relation=f"{plain:.2f}x", goal="—",
            met=None),
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
    ours, theirs = ctr.exec_back["ours"], ctr.exec_back["dockerd"]
    out.append(Row(
        figure="9. kill -9 containerd → `docker exec` works again",
        ours="agent's containerd: " + fmt_runs(ours),
        comparison="dockerd's own containerd: " + fmt_runs(theirs),
        relation=f"{median(theirs) / median(ours):.1f}x faster; container kept"
        f" {sum(ctr.container_kept)}/{len(ctr.container_kept)}",
        goal="< 11.7 s, container kept",
        met=median(ours) < 11.7 and all(ctr.container_kept)))
    return out


def notes(plan: Plan, mode: str) -> list[str]:
    lines = [
        "- Time to ready: from starting `unshare` (private pid/mount/net namespaces, temp dirs "
        "bind-mounted on /var/lib/docker, /run, /certs) to the first `GET /_ping` answered 200 on "
        "the unix socket, polled every 5 ms. Bare dockerd is started the same way as PID 1 "
        "(`dockerd --tls=false --bridge=none`). Restart = a new namespace on the previous run's "
        "data root (and certdir), after a clean TERM stop.",
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
        f"- Run plan ({mode}): {plan}.",
    ]
    if mode == "quick":
        lines.append("- Quick mode is a smoke run: fewer runs, shorter idle and load periods, "
                     f"{plan.containers} containers instead of 200; do not quote it.")
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
        step("time to ready (ours and bare dockerd, interleaved)")
        ready = lifecycle.time_to_ready(space, plan.ready_runs)
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
    step("report")
    info["duration of the run"] = f"{time.monotonic() - started:.0f} s"
    profile = ["Milestones of our first start (TLS on), from the agent's log:", "",
               *phase_lines(ready), "",
               "What the agent's imports cost, each alone in a fresh interpreter (median of 3; "
               "PID 1 keeps what `supervisor.cli` loads, the agent adds `supervisor.app`):", "",
               *import_profile()]
    table = rows(ready=ready, certs=certs, rec=rec, rot=rot, res=res, ctr=ctr)
    text = markdown(table, info, mode=mode, notes=notes(plan, mode), profile=profile)
    output.write_text(text)
    raw = {"machine": info, "plan": dataclasses.asdict(plan), "ready": dataclasses.asdict(ready),
           "certs": certs, "recovery": dataclasses.asdict(rec),
           "rotation": dataclasses.asdict(rot), "load": dataclasses.asdict(res),
           "containerd": dataclasses.asdict(ctr)}
    output.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    plot(ready, picture)
    print(text)
    print(f"\nwrote {output}, its .json (raw runs) and {picture}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
