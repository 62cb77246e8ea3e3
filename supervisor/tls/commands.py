"""``dind-supervisor certs generate|show|rotate``: the certdir from the command line.

``generate`` issues what is missing (as the agent does at start), ``show``
prints every certificate with its SANs and days left, ``rotate`` renews the
server and client certificates now. A running agent reads server/ only when
it (re)starts dockerd: after ``rotate``, restart dockerd (or let the agent's
own rotation do it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from supervisor.config import Config
from supervisor.errors import EXIT_USAGE
from supervisor.tls import certs, rotation
from supervisor.tls.service import sans_from_config, spec_from_config, utcnow


def run_certs_command(action: str, *, certdir: Path | None, cfg: Config, as_json: bool) -> int:
    if certdir is None:
        print(
            "dind-supervisor: no certificate folder: set DOCKER_TLS_CERTDIR or pass --certdir",
            file=sys.stderr,
        )
        return EXIT_USAGE
    now = utcnow()
    if action == "show":
        infos = certs.describe(certdir, now)
        if as_json:
            print(json.dumps([info.as_dict() for info in infos], indent=2, default=str))
        else:
            for info in infos:
                print(f"{info.file}[{info.index}]  {info.subject}")
                print(f"    issuer {info.issuer}, serial {info.serial:x}")
                print(
                    f"    valid {info.not_before:%Y-%m-%d %H:%M} .. "
                    f"{info.not_after:%Y-%m-%d %H:%M} UTC ({info.days_left:.1f} days left)"
                )
                if info.sans:
                    print(f"    SANs {' '.join(info.sans)}")
        return 0
    spec = spec_from_config(cfg)
    sans = sans_from_config(cfg)
    if action == "generate":
        report = certs.ensure(certdir, spec, sans, now)
        changes = [{"cert": c.cert, "reason": c.reason} for c in report.changes]
    else:
        result = rotation.rotate(certdir, spec, sans, now, force=True)
        changes = [{"cert": c.cert, "reason": c.reason} for c in result.changes]
    if as_json:
        print(json.dumps({"certdir": str(certdir), "changes": changes}, indent=2))
    elif changes:
        for change in changes:
            print(f"{change['cert']}: issued ({change['reason']})")
    else:
        print(f"{certdir}: nothing to do, every certificate is valid and current")
    return 0
