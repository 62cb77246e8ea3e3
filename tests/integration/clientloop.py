"""A TLS client of dockerd that calls every 100 ms, as a CI job would, and what its calls saw.

Run inside a sandbox's network namespace (``python -m tests.integration.clientloop``
through ``nsenter -n``): one call is a new TCP connection to
``tcp://127.0.0.1:2376``, a TLS handshake with the client certificate, ``GET
/_ping`` and its whole answer, like ``docker version`` without the CLI's own
start-up. Calls are sequential: the next starts 100 ms after the previous one
started, or at once when that one took longer (a call waiting in the kernel's
backlog while dockerd restarts takes as long as the restart). Each call is one
JSON line (monotonic start and end, outcome), flushed at once, so the host
reads them while the loop runs. Bounded: a call gives up after ``--timeout``
seconds, the loop after ``--limit`` seconds or at SIGTERM.

The host side (``ClientLoop``) starts and stops it; ``tally`` tells a failed
call from one cut in flight by a kill -9 of dockerd: only a connection the
killed dockerd had already accepted can be cut by its death (one still in the
listening socket's backlog is answered by the next dockerd), so a failed call
that began before the kill and ended after it is counted apart as in flight.
``time.monotonic`` is the same clock in every process of the machine, so the
kill instants taken by the host and the calls' times compare directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]
TLS_ADDRESS = "127.0.0.1:2376"


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    start: float  # time.monotonic()
    end: float
    ok: bool
    error: str = ""  # refused, reset, tls, timeout, http NNN, ...

    def as_json(self) -> str:
        return json.dumps({"start": self.start, "end": self.end, "ok": self.ok,
                           "error": self.error})

    @classmethod
    def from_json(cls, line: str) -> Call:
        data = json.loads(line)
        return cls(start=float(data["start"]), end=float(data["end"]), ok=bool(data["ok"]),
                   error=str(data.get("error", "")))


def exchange_ping(conn: socket.socket, limit: int = 65536) -> bytes:
    """GET /_ping on a connected socket; the answer until dockerd closes (or ``limit``)."""
    conn.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
    data = b""
    while len(data) < limit:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, FileNotFoundError):
        return "no socket"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}"
    return f"{type(exc).__name__}: {exc}"


def tls_context(certdir: Path) -> ssl.SSLContext:
    """What ``docker --tlsverify`` does with DOCKER_CERT_PATH=certdir."""
    context = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
    context.load_cert_chain(str(certdir / "cert.pem"), str(certdir / "key.pem"))
    return context


def one_call(address: str, context: ssl.SSLContext, timeout: float) -> Call:
    """One ``GET /_ping`` on a new TLS connection; never raises."""
    host, _, port = address.rpartition(":")
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            raw.settimeout(max(0.001, started + timeout - time.monotonic()))
            with context.wrap_socket(raw, server_hostname=host) as conn:
                data = exchange_ping(conn)
    except (OSError, ssl.SSLError) as exc:
        return Call(start=started, end=time.monotonic(), ok=False, error=_kind(exc))
    status = data.split(b"\r\n", 1)[0]
    if not data:
        return Call(start=started, end=time.monotonic(), ok=False, error="closed")
    if b" 200 " not in status:
        return Call(start=started, end=time.monotonic(), ok=False,
                    error=f"http {status.decode(errors='replace')}")
    return Call(start=started, end=time.monotonic(), ok=True)


class _Stop(Exception):
    pass


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def loop(*, address: str, certdir: Path, interval: float, limit: float, timeout: float,
         out: Path) -> int:
    """Call until ``limit`` seconds have passed or SIGTERM; one JSON line a call."""
    signal.signal(signal.SIGTERM, _stop)
    context = tls_context(certdir)
    deadline = time.monotonic() + limit
    calls = 0
    with out.open("a", buffering=1) as sink, contextlib.suppress(_Stop):
        while time.monotonic() < deadline:
            call = one_call(address, context, timeout)
            sink.write(call.as_json() + "\n")
            calls += 1
            time.sleep(max(0.0, call.start + interval - time.monotonic()))
    return calls


# The host side -------------------------------------------------------------------


class ClientLoop:
    """The loop running inside a sandbox's network namespace (``nsenter -n``)."""

    def __init__(self, pid1: int, certdir: Path, out: Path, *, address: str = TLS_ADDRESS,
                 interval: float = 0.1, limit: float = 900.0, timeout: float = 60.0) -> None:
        self.out = out
        self._argv = [
            "nsenter", "-t", str(pid1), "-n", "--", sys.executable, "-m",
            "tests.integration.clientloop", "--address", address, "--certs", str(certdir),
            "--interval", str(interval), "--limit", str(limit), "--timeout", str(timeout),
            "--out", str(out),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._error: str | None = None  # its stderr, once it has ended

    def start(self) -> ClientLoop:
        self.out.touch()
        self.process = subprocess.Popen(self._argv, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        return self

    def calls(self) -> list[Call]:
        """Every call recorded so far (the loop may still run)."""
        text = self.out.read_text() if self.out.exists() else ""
        lines = text.splitlines()
        if text and not text.endswith("\n"):
            lines = lines[:-1]  # a line being written
        return [Call.from_json(line) for line in lines if line.strip()]

    def stop(self, timeout: float = 10.0) -> list[Call]:
        """SIGTERM (a call in progress is dropped, not counted), then every call made."""
        process = self.process
        if process is not None and self._error is None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                _out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                _out, err = process.communicate(timeout=timeout)
            self._error = err.decode(errors="replace") if err else ""
        if process is not None and process.returncode not in (0, -signal.SIGTERM):
            raise RuntimeError(f"the client loop failed ({process.returncode}): {self._error}")
        return self.calls()

    def __enter__(self) -> ClientLoop:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()


@dataclass(slots=True, kw_only=True)
class Tally:
    """The calls, the failed ones, and those cut in flight by a kill -9 of dockerd."""

    calls: int = 0
    failed: list[Call] = field(default_factory=list)
    cut_by_kill: list[Call] = field(default_factory=list)
    longest_gap: float = 0.0  # seconds between two answered calls

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for call in self.failed:
            kinds[call.error] = kinds.get(call.error, 0) + 1
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        return (f"{len(self.failed)} failed of {self.calls}"
                + (f" ({detail})" if detail else "")
                + f", {len(self.cut_by_kill)} cut by kill -9, longest gap"
                f" {self.longest_gap:.2f} s")


def cut_by(call: Call, kills: Iterable[float]) -> bool:
    """A failed call in flight at a kill: it began before the kill and ended after it."""
    return any(call.start <= kill <= call.end for kill in kills)


def tally(calls: Sequence[Call], kills: Sequence[float] = (),
          window: tuple[float, float] | None = None) -> Tally:
    """Count ``calls`` (those that began within ``window``, when given)."""
    chosen = [c for c in calls if window is None or window[0] <= c.start < window[1]]
    result = Tally(calls=len(chosen))
    last_ok: float | None = None
    for call in sorted(chosen, key=lambda c: c.start):
        if call.ok:
            if last_ok is not None:
                result.longest_gap = max(result.longest_gap, call.end - last_ok)
            last_ok = call.end
        elif cut_by(call, kills):
            result.cut_by_kill.append(call)
        else:
            result.failed.append(call)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.clientloop")
    parser.add_argument("--address", default=TLS_ADDRESS)
    parser.add_argument("--certs", type=Path, required=True, help="the client folder")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--limit", type=float, default=900.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    loop(address=args.address, certdir=args.certs, interval=max(args.interval, 0.01),
         limit=min(args.limit, 3600.0), timeout=args.timeout, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
