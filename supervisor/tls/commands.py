"""``dind-supervisor certs generate|show|rotate``: the certdir from the command line.

``generate`` issues what is missing (as the agent does at start), ``show``
prints every certificate with its SANs and days left, ``rotate`` renews the
server and client certificates now, for the names the server certificate
already holds (computing them here would add addresses that appeared since
the agent started, docker0 for one, and the agent would reissue without
them). A running agent notices the new server files within minutes and
restarts dockerd to load them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from supervisor.config import Config
from supervisor.errors import EXIT_USAGE
from supervisor.tls import certs, rotation, store
from supervisor.tls.san import SanSet
from supervisor.tls.settings import sans_from_config, spec_from_config, utcnow


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
    if action == "generate":
        report = certs.ensure(certdir, spec, sans_from_config(cfg), now)
    else:
        current = store.load_certs(certdir / "server" / "cert.pem")
        sans = SanSet.from_certificate(current[0]) if current else sans_from_config(cfg)
        report = rotation.rotate(certdir, spec, sans, now, force=True).report
    changes = [{"cert": c.cert, "reason": c.reason} for c in report.changes]
    if report.user_managed and not as_json:
        print(f"{certdir}: user-managed set (no ca/key.pem): verified, not renewed;"
              " renew it with the CA that issued it")
        return 0
    if as_json:
        print(json.dumps({"certdir": str(certdir), "user_managed": report.user_managed,
                          "changes": changes}, indent=2))
    elif changes:
        for change in changes:
            print(f"{change['cert']}: issued ({change['reason']})")
    else:
        print(f"{certdir}: nothing to do, every certificate is valid and current")
    return 0
