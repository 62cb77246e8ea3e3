"""Helpers run inside a sandbox's namespaces (through nsenter): ``python -m bench.inside``.

Owns: the /metrics scraper (sequential GETs on fresh connections, timed with
perf_counter, printed as JSON) and the orphan maker (N children orphaned to
PID 1 while blocked on a pipe, then released together and timed until PID 1
has reaped them all).
Does not own timing from outside or any judgement of the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from urllib.parse import urlsplit


def scrape(url: str, count: int, warmup: int, timeout: float) -> dict[str, object]:
    """GET ``url`` ``count`` times, each on a new connection as a cold scraper would."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    for index in range(warmup + count):
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", parts.path or "/")
                response = conn.getresponse()
                body = response.read()
                status = response.status
            finally:
                conn.close()
        except OSError as exc:
            if index >= warmup:
                errors.append(f"{type(exc).__name__}: {exc}")
            continue
        elapsed = time.perf_counter() - started
        if index < warmup:
            continue
        if status != 200:
            errors.append(f"HTTP {status}")
            continue
        latencies.append(elapsed)
        sizes.append(len(body))
    return {"latencies": latencies, "errors": errors, "bytes": sizes[-1] if sizes else 0}


def _pid1_children(proc: str) -> list[str]:
    with open(f"{proc}/1/task/1/children") as handle:
        return handle.read().split()


def orphans(count: int, proc: str = "/proc", limit: float = 60.0) -> dict[str, object]:
    """Orphan ``count`` live children, then end them all at once; time PID 1's reaping.

    An intermediate process forks the children and exits, so they are
    reparented to the namespace's PID 1 while blocked on a pipe whose write
    end only this process holds. Closing it wakes every child with EOF; the
    clock runs from that close until PID 1 has no more children than before.
    """
    baseline = len(_pid1_children(proc))
    read_end, write_end = os.pipe()
    # Every child holds done_w: EOF on done_r means all of them are through
    # exit (files closed), so the time after that is PID 1's own lag.
    done_r, done_w = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        os.close(write_end)
        os.close(done_r)
        for _ in range(count):
            if os.fork() == 0:
                try:
                    os.read(read_end, 1)
                finally:
                    os._exit(0)
        os._exit(0)
    os.close(read_end)
    os.close(done_w)
    os.set_blocking(done_r, False)
    os.waitpid(intermediate, 0)
    deadline = time.monotonic() + limit
    adopted = len(_pid1_children(proc)) - baseline
    while adopted < count and time.monotonic() < deadline:
        time.sleep(0.001)
        adopted = len(_pid1_children(proc)) - baseline
    released = time.monotonic()
    os.close(write_end)
    left, exited_at, reaped_at = adopted, None, released
    while (left > 0 or exited_at is None) and time.monotonic() < deadline:
        if exited_at is None:
            try:
                if os.read(done_r, 1) == b"":
                    exited_at = time.monotonic()
            except BlockingIOError:
                pass
        if left > 0:
            left = len(_pid1_children(proc)) - baseline
            reaped_at = time.monotonic()
        time.sleep(0.0005)
    return {
        "adopted": adopted,
        "left": left,
        "seconds": reaped_at - released,
        "exited_seconds": (exited_at or reaped_at) - released,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inside")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scrape")
    s.add_argument("--url", required=True)
    s.add_argument("--count", type=int, default=200)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--timeout", type=float, default=5.0)
    o = sub.add_parser("orphans")
    o.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.command == "scrape":
        result = scrape(args.url, min(args.count, 100_000), args.warmup, args.timeout)
        json.dump(result, sys.stdout)
        return 0
    json.dump(orphans(min(args.count, 10_000)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
