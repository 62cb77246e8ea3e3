"""The certificate work, done outside the agent's process: issue, verify, renew.

``cryptography`` costs the agent about 10 MB of resident memory and tens of
milliseconds to import, and RSA key generation takes seconds of CPU. The
agent needs neither for more than a moment now and then, so that work runs
in a short-lived process: one JSON request in, one JSON answer out.

- ``run_forked``: before the event loop exists (the launch stage, first
  start), a fork is the cheapest way (no second interpreter start).
- ``run_subprocess``: once the agent runs threads, ``python -m
  supervisor.tls.worker`` with the request on stdin (rotations, the full
  check beside a freshly started dockerd).

Answer: ``{"report": ..., "restart_dockerd": bool}`` or ``{"error": {message,
path, remedy}}`` for a CertificateError (the agent raises it again), or
``{"crash": text}`` for anything unexpected.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from supervisor.errors import CertificateError
from supervisor.tls.model import CertReport, CertSpec, KeyType
from supervisor.tls.san import SanSet, parse_tls_san

ENSURE = "ensure"
ROTATE = "rotate"


def request(
    action: str, certdir: Path, spec: CertSpec, sans: SanSet, now: dt.datetime, *,
    force: bool = False,
) -> dict[str, Any]:
    return {
        "action": action,
        "certdir": str(certdir),
        "now": now.isoformat(),
        "force": force,
        "sans": sans.entries(),
        "spec": {
            "key_type": spec.key_type.value,
            "ca_lifetime": spec.ca_lifetime.total_seconds(),
            "server_lifetime": spec.server_lifetime.total_seconds(),
            "client_lifetime": spec.client_lifetime.total_seconds(),
            "renew_fraction": spec.renew_fraction,
            "renew_jitter": spec.renew_jitter,
            "backdate": spec.backdate.total_seconds(),
            "client_key_mode": spec.client_key_mode,
            "expiry_warning": spec.expiry_warning.total_seconds(),
        },
    }


def _spec(data: dict[str, Any]) -> CertSpec:
    seconds = dt.timedelta
    return CertSpec(
        key_type=KeyType(data["key_type"]),
        ca_lifetime=seconds(seconds=data["ca_lifetime"]),
        server_lifetime=seconds(seconds=data["server_lifetime"]),
        client_lifetime=seconds(seconds=data["client_lifetime"]),
        renew_fraction=data["renew_fraction"],
        renew_jitter=data["renew_jitter"],
        backdate=seconds(seconds=data["backdate"]),
        client_key_mode=data["client_key_mode"],
        expiry_warning=seconds(seconds=data["expiry_warning"]),
    )


def handle(req: dict[str, Any]) -> dict[str, Any]:
    """Do the work one request asks for; never raises."""
    try:
        from supervisor.tls import certs, rotation

        certdir = Path(req["certdir"])
        spec = _spec(req["spec"])
        sans = parse_tls_san(" ".join(req["sans"]), source="the agent", key="sans")
        now = dt.datetime.fromisoformat(req["now"])
        if req["action"] == ROTATE:
            result = rotation.rotate(certdir, spec, sans, now, force=bool(req.get("force")))
            return {"report": result.report.to_json(), "restart_dockerd": result.restart_dockerd}
        report = certs.ensure(certdir, spec, sans, now)
        return {"report": report.to_json(), "restart_dockerd": report.server_changed}
    except CertificateError as exc:
        return {"error": {"message": exc.message, "path": exc.path, "remedy": exc.remedy}}
    except Exception:
        return {"crash": traceback.format_exc()}


def answer(data: dict[str, Any]) -> tuple[CertReport, bool]:
    """The report of an answer, or the error it carries raised again."""
    if "error" in data:
        error = data["error"]
        raise CertificateError(error["message"], path=error["path"], remedy=error["remedy"])
    if "report" not in data:
        crash = str(data.get("crash", data))
        raise CertificateError(
            f"the certificate worker failed unexpectedly: {crash.strip().splitlines()[-1]}",
            path="", remedy="report this with the agent's log (the traceback is at debug level)",
        )
    return CertReport.from_json(data["report"]), bool(data.get("restart_dockerd"))


def run_forked(req: dict[str, Any]) -> dict[str, Any]:
    """Run ``handle`` in a forked child (single-threaded callers only) and read its answer."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: do the work, write the answer, leave without cleanup
        try:
            os.close(read_end)
            data = json.dumps(handle(req)).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as reader:
        while chunk := reader.read(65536):
            chunks.append(chunk)
    _pid, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    if not raw:
        return {"crash": f"the certificate worker exited with status {status} and no answer"}
    result: dict[str, Any] = json.loads(raw)
    return result


async def run_subprocess(req: dict[str, Any]) -> dict[str, Any]:
    import anyio

    result = await anyio.run_process(
        [sys.executable, "-m", "supervisor.tls.worker"],
        input=json.dumps(req).encode(),
        check=False,
    )
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return {"crash": result.stderr.decode(errors="replace") or f"exit {result.returncode}"}
    return data


def main() -> int:
    req = json.loads(sys.stdin.read())
    print(json.dumps(handle(req)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
