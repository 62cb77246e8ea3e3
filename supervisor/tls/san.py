"""Subject alternative names for dockerd's server certificate.

Owns: parsing DOCKER_TLS_SAN in docker:dind's syntax, discovering this
machine's interface addresses from /proc (root injectable), and the default
SAN set docker:dind would use. Does not own certificates or the decision to
reissue one; it only answers "which names must the server certificate cover"
and "does this certificate cover them".
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.errors import ConfigError

if TYPE_CHECKING:  # the launch stage computes SANs without loading cryptography
    from cryptography import x509

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ENV_KEY = "DOCKER_TLS_SAN"
DEFAULT_DNS_NAMES = ("docker", "localhost")
LOOPBACK_V4 = ipaddress.IPv4Address("127.0.0.1")

# openssl accepts any string after DNS:, but Go's verifier (docker CLI) only
# matches host names; underscores are allowed because compose-era hostnames
# carry them, and a leftmost "*" label because openssl and Go both accept it.
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class SanSet:
    """A set of DNS names (lower case) and IP addresses."""

    dns: frozenset[str] = frozenset()
    ips: frozenset[IPAddress] = frozenset()

    def union(self, other: SanSet) -> SanSet:
        return SanSet(dns=self.dns | other.dns, ips=self.ips | other.ips)

    def missing_from(self, other: SanSet) -> SanSet:
        """The names of ``self`` that ``other`` does not cover."""
        return SanSet(dns=self.dns - other.dns, ips=self.ips - other.ips)

    def is_empty(self) -> bool:
        return not self.dns and not self.ips

    def entries(self) -> list[str]:
        """Sorted entries in docker:dind's syntax (``DNS:x``, ``IP:y``)."""
        dns = [f"DNS:{name}" for name in sorted(self.dns)]
        ips = [f"IP:{ip}" for ip in sorted(self.ips, key=lambda a: (a.version, int(a)))]
        return dns + ips

    def to_extension(self) -> x509.SubjectAlternativeName:
        from cryptography import x509

        names: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(self.dns)]
        names += [
            x509.IPAddress(ip) for ip in sorted(self.ips, key=lambda a: (a.version, int(a)))
        ]
        return x509.SubjectAlternativeName(names)

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> SanSet:
        from cryptography import x509

        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return cls()
        dns = frozenset(n.lower() for n in ext.get_values_for_type(x509.DNSName))
        ips: frozenset[IPAddress] = frozenset(
            ip
            for ip in ext.get_values_for_type(x509.IPAddress)
            if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
        )
        return cls(dns=dns, ips=ips)


def valid_dns_name(name: str) -> bool:
    """True if ``name`` (lower case, no trailing dot) can be matched by TLS clients."""
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    return all(_LABEL.match(label) for label in labels)


def parse_tls_san(value: str, *, source: str, key: str = ENV_KEY) -> SanSet:
    """Parse ``DNS:x IP:y`` entries separated by spaces or commas.

    A bad entry raises ConfigError naming that entry, so the agent exits 2
    before issuing a certificate that would not match what the user asked for.
    """
    dns: set[str] = set()
    ips: set[IPAddress] = set()
    for entry in _SEPARATORS.split(value.strip()):
        if not entry:
            continue
        kind, sep, rest = entry.partition(":")
        if not sep or not rest:
            raise ConfigError(
                key=key,
                value=entry,
                source=source,
                reason="expected TYPE:VALUE",
                remedy="write entries such as DNS:docker.example.com or IP:10.0.0.5,"
                " separated by spaces or commas",
            )
        kind = kind.upper()
        if kind == "DNS":
            name = rest.lower().removesuffix(".")
            if not valid_dns_name(name):
                raise ConfigError(
                    key=key,
                    value=entry,
                    source=source,
                    reason=f"{rest!r} is not a valid DNS name",
                    remedy="use letters, digits, '-' and '.' (a leading '*.' is allowed)",
                )
            dns.add(name)
        elif kind == "IP":
            try:
                ips.add(ipaddress.ip_address(rest))
            except ValueError:
                raise ConfigError(
                    key=key,
                    value=entry,
                    source=source,
                    reason=f"{rest!r} is not an IPv4 or IPv6 address",
                    remedy="write IP:10.0.0.5 or IP:fd00::5 (no prefix length, no zone)",
                ) from None
        else:
            raise ConfigError(
                key=key,
                value=entry,
                source=source,
                reason=f"unsupported entry type {kind!r}; only DNS: and IP: are supported",
                remedy="remove the entry or rewrite it as DNS:name or IP:address",
            )
    return SanSet(dns=frozenset(dns), ips=frozenset(ips))


def _fib_trie_local_addresses(text: str) -> set[ipaddress.IPv4Address]:
    # Each "|-- a.b.c.d" leaf is followed by its prefixes; a "/32 host LOCAL"
    # prefix is an address assigned to an interface of this namespace.
    found: set[ipaddress.IPv4Address] = set()
    current: ipaddress.IPv4Address | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|--"):
            try:
                current = ipaddress.IPv4Address(line[3:].strip())
            except ValueError:
                current = None
        elif line.startswith("/") and current is not None:
            parts = line.split()
            if parts[0] == "/32" and parts[-1] == "LOCAL":
                found.add(current)
        else:
            current = None
    return found


def _if_inet6_addresses(text: str) -> set[ipaddress.IPv6Address]:
    found: set[ipaddress.IPv6Address] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or len(fields[0]) != 32:
            continue
        try:
            found.add(ipaddress.IPv6Address(int(fields[0], 16)))
        except ValueError:
            continue
    return found


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        # No IPv4 (or no IPv6) in this namespace: simply no addresses of that family.
        return ""


def interface_addresses(proc_root: Path = Path("/proc")) -> frozenset[IPAddress]:
    """Every address assigned to an interface of this network namespace."""
    v4 = _fib_trie_local_addresses(_read_text(proc_root / "net" / "fib_trie"))
    v6 = _if_inet6_addresses(_read_text(proc_root / "net" / "if_inet6"))
    return frozenset[IPAddress](v4 | v6)


def system_hostnames() -> list[str]:
    """The kernel host name and its short form (no DNS lookup: it may hang at start)."""
    name = socket.gethostname().lower().removesuffix(".")
    short = name.split(".", 1)[0]
    return [name] if short == name else [name, short]


def default_sans(
    *,
    hostnames: Iterable[str],
    proc_root: Path = Path("/proc"),
    extra: SanSet | None = None,
) -> SanSet:
    """docker:dind's SAN set: hostnames, docker, localhost, 127.0.0.1, every interface IP.

    Host names that no TLS client could match (invalid DNS syntax) are left
    out rather than failing the start: the user did not choose them.
    """
    names = {h.lower().removesuffix(".") for h in hostnames}
    dns = {n for n in names if valid_dns_name(n)} | set(DEFAULT_DNS_NAMES)
    ips: set[IPAddress] = {LOOPBACK_V4, *interface_addresses(proc_root)}
    base = SanSet(dns=frozenset(dns), ips=frozenset(ips))
    return base.union(extra) if extra is not None else base
