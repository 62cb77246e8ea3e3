"""More topics for ``dind-supervisor check``: data root, container preparation, TLS files.

Each ``check_*(config) -> list[Finding]`` looks without changing anything
(the data-root preflight makes and removes one d_type test folder, as the
agent does at start) and reports what ``run`` would meet, with a remedy for
every warning and error. The doctor (supervisor/doctor.py) owns the list of
checks, the rendering and the exit code; this module owns only these three
checks. Paths (/proc, now) are arguments so tests can point them elsewhere.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.errors import CertificateError, PreparationError, SupervisorError
from supervisor.findings import Finding, Severity

if TYPE_CHECKING:
    from supervisor.config import Config


def check_data_root(config: Config, proc_root: str = "/proc") -> list[Finding]:
    """The data-root preflight of ``run``: filesystem, persistence, overlay2, space."""
    from supervisor.dataroot.preflight import preflight

    path = Path(config.dockerd.data_root)
    try:
        report = preflight(path, Path(proc_root))
    except OSError as exc:
        return [
            Finding(
                topic="dataroot",
                severity=Severity.ERROR,
                message=f"cannot inspect the data root {path}: {exc.strerror or exc}",
                remedy="make the data root's parent readable, or point --dockerd-data-root"
                " at a directory on a volume",
                data={"path": str(path)},
            )
        ]
    return list(report.findings) or [
        Finding(topic="dataroot", severity=Severity.OK, message=f"data root {path}: no problem")
    ]


def check_preparation(
    config: Config, env: Mapping[str, str] | None = None, proc_root: str = "/proc"
) -> list[Finding]:
    """A dry run of the container preparation: what ``run`` as PID 1 would change."""
    from supervisor.prepare import options_from_config, prepare

    settings = config.prepare
    if settings.enabled == "false":
        return [
            Finding(
                topic="prepare",
                severity=Severity.INFO,
                message="container preparation is turned off ([prepare] enabled = false)",
            )
        ]
    options = options_from_config(config, dry_run=True, proc_root=proc_root)
    try:
        report = prepare(options, env=os.environ if env is None else env)
    except PreparationError as exc:
        return [_error_finding("prepare", exc)]
    findings = list(report.findings)
    if settings.enabled == "auto" and os.getpid() != 1:
        findings.append(
            Finding(
                topic="prepare",
                severity=Severity.INFO,
                message="preparation runs only when the agent is PID 1 ([prepare] enabled ="
                " auto); shown here as a dry run",
            )
        )
    return findings


def check_tls_files(
    config: Config, now: dt.datetime | None = None, proc_root: str = "/proc"
) -> list[Finding]:
    """The certificate folder: writable for the agent, or a complete user-managed set."""
    if not config.tls_enabled:
        return [
            Finding(
                topic="tls",
                severity=Severity.INFO,
                message="TLS is off (DOCKER_TLS_CERTDIR is empty): dockerd listens on its"
                " unix socket and, unless dockerd.plain_tcp is false, on tcp 2375 without"
                " authentication",
            )
        ]
    from supervisor.tls import certs, usermanaged
    from supervisor.tls.settings import sans_from_config, spec_from_config

    now = now or dt.datetime.now(dt.UTC)
    certdir = Path(config.tls.certdir)
    if not certdir.exists():
        return [_writable_parent(certdir)]
    try:
        if certs.is_user_managed(certdir):
            spec = spec_from_config(config)
            report = usermanaged.verify(certdir, spec, sans_from_config(config, Path(proc_root)),
                                        now)
            return [
                Finding(
                    topic="tls",
                    severity=Severity.OK,
                    message=f"{certdir}: user-managed set verified (the agent will not write it)",
                ),
                *report.findings,
            ]
        infos = certs.describe(certdir, now)
    except CertificateError as exc:
        return [_error_finding("tls", exc)]
    findings = [_writable(certdir)]
    for info in infos:
        if info.days_left <= 0:
            findings.append(
                Finding(
                    topic="tls",
                    severity=Severity.INFO,
                    message=f"{certdir / info.file} expired {-info.days_left:.1f} days ago:"
                    " the agent renews it at start",
                    data={"file": info.file, "days_left": round(info.days_left, 3)},
                )
            )
    if not infos:
        findings.append(
            Finding(
                topic="tls",
                severity=Severity.INFO,
                message=f"{certdir} holds no certificates yet: the agent issues a CA, a server"
                " and a client certificate at start",
            )
        )
    return findings


def _writable(certdir: Path) -> Finding:
    if os.access(certdir, os.W_OK | os.X_OK):
        return Finding(
            topic="tls", severity=Severity.OK,
            message=f"{certdir}: the agent can write and renew certificates there",
        )
    return Finding(
        topic="tls",
        severity=Severity.ERROR,
        message=f"{certdir} is not writable by uid {os.getuid()}: the agent cannot issue"
        " or renew dockerd's certificates",
        remedy="mount the certificate volume read-write, or provide a complete user-managed"
        " set in server/ (and no ca/key.pem)",
        data={"certdir": str(certdir)},
    )


def _writable_parent(certdir: Path) -> Finding:
    parent = certdir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if os.access(parent, os.W_OK | os.X_OK):
        return Finding(
            topic="tls", severity=Severity.INFO,
            message=f"{certdir} does not exist yet: the agent creates it and issues certificates",
        )
    return Finding(
        topic="tls",
        severity=Severity.ERROR,
        message=f"{certdir} does not exist and {parent} is not writable: the agent cannot"
        " create dockerd's certificates",
        remedy=f"create {certdir} (a volume shared with the clients), or set DOCKER_TLS_CERTDIR"
        " to a writable path",
        data={"certdir": str(certdir)},
    )


def _error_finding(topic: str, exc: SupervisorError) -> Finding:
    return Finding(
        topic=topic, severity=Severity.ERROR, message=exc.message, remedy=exc.remedy,
        data={"error": type(exc).__name__},
    )
