"""From the configuration to what the TLS code needs: the issuing spec and the SANs.

A leaf without cryptography, so the launch stage (before dockerd's spawn)
and the ``certs`` command share one reading of the [tls] settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from supervisor.config import Config
from supervisor.tls.model import CertSpec, parse_key_type
from supervisor.tls.san import SanSet, default_sans, parse_tls_san, system_hostnames


def spec_from_config(config: Config) -> CertSpec:
    tls = config.tls
    source = config.sources.get("tls.key_type", "default")
    spec = CertSpec(
        key_type=parse_key_type(tls.key_type, key="tls.key_type", source=source),
        ca_lifetime=dt.timedelta(seconds=tls.ca_lifetime),
        server_lifetime=dt.timedelta(seconds=tls.server_lifetime),
        client_lifetime=dt.timedelta(seconds=tls.client_lifetime),
        renew_fraction=tls.renew_fraction,
        client_key_mode=int(tls.client_key_mode, 8),
        expiry_warning=dt.timedelta(seconds=tls.expiry_warning),
    )
    # Lifetimes of seconds (tests, demos) cannot afford a minute of backdating.
    # Every lifetime counts: a 12 s client certificate backdated by a minute
    # would be issued already due and renewed in a tight loop.
    return dataclasses.replace(
        spec, backdate=min(dt.timedelta(minutes=1), spec.shortest_lifetime / 100)
    )


def sans_from_config(config: Config, proc_root: Path = Path("/proc")) -> SanSet:
    """docker:dind's names plus DOCKER_TLS_SAN; a bad DOCKER_TLS_SAN raises ConfigError."""
    source = config.sources.get("tls.san", "environment DOCKER_TLS_SAN")
    extra = parse_tls_san(config.tls.san, source=source, key="DOCKER_TLS_SAN")
    return default_sans(hostnames=system_hostnames(), proc_root=proc_root, extra=extra)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
