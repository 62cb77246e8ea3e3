"""DOCKER_TLS_SAN parsing, interface discovery from a fake /proc, and the default SAN set."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from supervisor.errors import ConfigError
from supervisor.tls.san import SanSet, default_sans, interface_addresses, parse_tls_san

pytestmark = pytest.mark.unit

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 172.18.0.0/16 2 0 2
        |-- 172.18.0.0
           /16 link UNICAST
        |-- 172.18.0.5
           /32 host LOCAL
        |-- 172.18.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 127.0.0.1
        /32 host LOCAL
     |-- 172.18.0.5
        /32 host LOCAL
"""
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000042acfffe120005 02 40 20 80     eth0
fd000000000000000000000000000005 02 40 00 80     eth0
"""


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("value", "dns", "ips"),
    [
        ("", set(), set()),
        ("DNS:docker.example.com", {"docker.example.com"}, set()),
        ("DNS:a.example IP:10.0.0.5", {"a.example"}, {"10.0.0.5"}),
        ("DNS:a.example,IP:10.0.0.5", {"a.example"}, {"10.0.0.5"}),
        ("  DNS:a.example ,  IP:fd00::5\n", {"a.example"}, {"fd00::5"}),
        ("IP:::1", set(), {"::1"}),
        ("dns:UPPER.Example.", {"upper.example"}, set()),
        ("DNS:*.svc.local", {"*.svc.local"}, set()),
        ("DNS:my_host", {"my_host"}, set()),
    ],
)
def test_parse_good_entries(value: str, dns: set[str], ips: set[str]) -> None:
    """docker:dind's DNS:/IP: syntax with space or comma separators parses to the right set."""
    parsed = parse_tls_san(value, source="environment")
    assert parsed.dns == frozenset(dns)
    assert parsed.ips == frozenset(ip(i) for i in ips)


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("docker.example.com", "docker.example.com"),
        ("DNS:ok.example IP:10.0.0.300", "IP:10.0.0.300"),
        ("IP:10.0.0.0/24", "IP:10.0.0.0/24"),
        ("DNS:", "DNS:"),
        ("DNS:-bad.example", "DNS:-bad.example"),
        ("DNS:a..b", "DNS:a..b"),
        ("URI:https://x", "URI:https://x"),
        ("email:a@b.c", "email:a@b.c"),
        ("DNS:" + "a" * 64 + ".example", "DNS:" + "a" * 64 + ".example"),
    ],
)
def test_parse_bad_entry_names_it(value: str, bad: str) -> None:
    """A bad entry raises ConfigError carrying that entry, the key and the source."""
    with pytest.raises(ConfigError) as caught:
        parse_tls_san(value, source="environment")
    assert caught.value.key == "DOCKER_TLS_SAN"
    assert caught.value.value == bad
    assert caught.value.source == "environment"
    assert caught.value.exit_code == 2
    assert caught.value.remedy


def fake_proc(root: Path, fib: str | None = FIB_TRIE, inet6: str | None = IF_INET6) -> Path:
    (root / "net").mkdir(parents=True)
    if fib is not None:
        (root / "net" / "fib_trie").write_text(fib)
    if inet6 is not None:
        (root / "net" / "if_inet6").write_text(inet6)
    return root


def test_interface_addresses_from_fake_proc(tmp_path: Path) -> None:
    """Only /32 LOCAL entries (not broadcasts or /8 routes) and every if_inet6 line count."""
    found = interface_addresses(fake_proc(tmp_path))
    assert found == {
        ip("127.0.0.1"),
        ip("172.18.0.5"),
        ip("::1"),
        ip("fe80::42:acff:fe12:5"),
        ip("fd00::5"),
    }


def test_interface_addresses_without_ipv6(tmp_path: Path) -> None:
    """A namespace without IPv6 (no if_inet6) still yields its IPv4 addresses."""
    found = interface_addresses(fake_proc(tmp_path, inet6=None))
    assert found == {ip("127.0.0.1"), ip("172.18.0.5")}


def test_default_sans_like_docker_dind(tmp_path: Path) -> None:
    """Defaults: hostname, docker, localhost, 127.0.0.1, every interface IP, plus extras."""
    extra = parse_tls_san("DNS:api.example IP:203.0.113.7", source="environment")
    sans = default_sans(
        hostnames=["Dind-1.corp.example", "dind-1", "bad host"],
        proc_root=fake_proc(tmp_path, inet6=None),
        extra=extra,
    )
    assert sans.dns == {"dind-1.corp.example", "dind-1", "docker", "localhost", "api.example"}
    assert sans.ips == {ip("127.0.0.1"), ip("172.18.0.5"), ip("203.0.113.7")}


def test_default_sans_keep_loopback_without_proc(tmp_path: Path) -> None:
    """Even with no readable /proc/net files, 127.0.0.1 is covered as docker:dind does."""
    sans = default_sans(hostnames=[], proc_root=fake_proc(tmp_path, fib=None, inet6=None))
    assert sans.ips == {ip("127.0.0.1")}


def test_missing_from_and_entries() -> None:
    """missing_from reports what a certificate lacks; entries print docker:dind syntax."""
    want = SanSet(dns=frozenset({"a", "b"}), ips=frozenset({ip("10.0.0.1"), ip("::1")}))
    have = SanSet(dns=frozenset({"a"}), ips=frozenset({ip("::1")}))
    assert want.missing_from(have).entries() == ["DNS:b", "IP:10.0.0.1"]
    assert have.missing_from(want).is_empty()
