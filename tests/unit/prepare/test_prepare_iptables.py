"""The iptables backend choice table, the evidence order, and the private PATH directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.prepare.iptables import (
    TOOLS,
    Backend,
    IptablesMode,
    backend_tool,
    choose_backend,
    install_links,
    legacy_tables_from_save,
    prepare_iptables,
)
from supervisor.prepare.report import Outcome

pytestmark = pytest.mark.unit

A, L, N = IptablesMode.AUTO, Backend.LEGACY, Backend.NFT
NONE: frozenset[str] = frozenset()
NAT = frozenset({"ip:nat"})

LEGACY_VERSION = (0, "iptables v1.8.9 (legacy)\n", "")
NFT_VERSION = (0, "iptables v1.8.9 (nf_tables)\n", "")


@pytest.mark.parametrize(
    ("mode", "env", "tables", "nft_works", "expected"),
    [
        (A, "1", NONE, True, L),  # env set, non-empty: legacy
        (A, "yes", NONE, True, L),
        (A, "", NAT, True, N),  # env set but empty: explicit nft, even with legacy tables
        (A, None, NAT, True, L),  # legacy rules already exist
        (A, None, NONE, True, N),  # nothing there, nft works
        (A, None, NONE, False, L),  # nft broken: fall back to legacy
        (IptablesMode.LEGACY, "", NONE, True, L),  # configuration beats the env var
        (IptablesMode.NFT, "1", NAT, False, N),
    ],
)
def test_choice_table(
    mode: IptablesMode, env: str | None, tables: frozenset[str], nft_works: bool, expected: Backend
) -> None:
    """docker:dind's rule: env var, then existing legacy tables, then nft if it works."""
    assert (
        choose_backend(mode, env_legacy=env, legacy_tables=tables, nft_works=nft_works).backend
        is expected
    )


def test_undecided_choice_requires_the_nft_probe() -> None:
    """Without env or legacy tables the answer depends on nft, which must be probed."""
    with pytest.raises(ValueError, match="probe"):
        choose_backend(A, env_legacy=None, legacy_tables=NONE, nft_works=None)


def test_backend_tool_names() -> None:
    """Tool names map onto the binaries Debian and Alpine ship."""
    assert backend_tool("ip6tables-save", L) == "ip6tables-legacy-save"
    assert backend_tool("iptables", N) == "iptables-nft"


def test_tables_from_legacy_save() -> None:
    """iptables-legacy-save output names its tables on '*' lines."""
    out = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\nCOMMIT\n"
    assert legacy_tables_from_save(out) == {"nat", "filter"}
    assert legacy_tables_from_save("") == frozenset()


def _proc(tmp_path: Path, ip_tables: str = "") -> str:
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True, exist_ok=True)
    for name in ("ip_tables_names", "ip6_tables_names", "arp_tables_names"):
        (net / name).write_text("")
    (net / "ip_tables_names").write_text(ip_tables)
    return str(tmp_path / "proc")


def _run(tmp_path: Path, bins: Path, runner, mode=A, env=None, **kw):  # type: ignore[no-untyped-def]
    return prepare_iptables(
        mode,
        runner=runner,
        env=env or {},
        directory=str(tmp_path / "links"),
        search_path=str(bins),
        proc_root=kw.pop("proc_root", None) or _proc(tmp_path),
        **kw,
    )


def test_env_legacy_links_legacy_without_probing_nft(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """DOCKER_IPTABLES_LEGACY=1 links all six tools to legacy and never runs nft."""
    bins = bin_dir()
    runner = fake_runner({"iptables --version": LEGACY_VERSION})
    result = _run(tmp_path, bins, runner, env={"DOCKER_IPTABLES_LEGACY": "1"})
    assert result.backend is L
    assert result.report.outcome is Outcome.DONE
    links = tmp_path / "links"
    assert sorted(os.listdir(links)) == sorted(TOOLS)
    assert os.readlink(links / "ip6tables-save") == str(bins / "ip6tables-legacy-save")
    assert not any("nft" in c[0] for c in runner.calls)
    assert result.report.data["version"] == "iptables v1.8.9 (legacy)"


def test_auto_prefers_nft_and_never_runs_legacy_first(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """No legacy tables: nft is chosen and the legacy binary (it creates tables) is never run."""
    bins = bin_dir()
    runner = fake_runner({"iptables --version": NFT_VERSION})
    result = _run(tmp_path, bins, runner)
    assert result.backend is N
    assert result.directory == str(tmp_path / "links")
    assert runner.ran("iptables-legacy-save")
    assert runner.ran("iptables-nft -nL")
    assert not runner.ran("iptables-legacy -nL")
    assert os.readlink(tmp_path / "links" / "iptables") == str(bins / "iptables-nft")


def test_existing_legacy_tables_keep_legacy(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """Tables in /proc/net/ip_tables_names mean legacy rules exist: stay on legacy."""
    runner = fake_runner({"iptables --version": LEGACY_VERSION})
    result = _run(tmp_path, bin_dir(), runner, proc_root=_proc(tmp_path, "nat\nfilter\n"))
    assert result.backend is L
    assert result.report.data["legacy_tables"] == ["ip:filter", "ip:nat"]
    assert not runner.ran("iptables-nft -nL")


def test_legacy_save_output_counts_as_evidence(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """Rules shown by iptables-legacy-save also select legacy."""
    runner = fake_runner(
        {"iptables-legacy-save": (0, "*nat\nCOMMIT\n", ""), "iptables --version": LEGACY_VERSION}
    )
    assert _run(tmp_path, bin_dir(), runner).backend is L


def test_broken_nft_falls_back_to_legacy(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """nft failing (even after modprobe nf_tables) selects legacy, as docker:dind does."""
    runner = fake_runner(
        {
            "iptables-nft -nL": (1, "", "iptables: Protocol not supported.\n"),
            "iptables --version": LEGACY_VERSION,
        }
    )
    result = _run(tmp_path, bin_dir(), runner)
    assert result.backend is L
    assert runner.ran("modprobe nf_tables")
    assert result.report.data["nft_error"] == "iptables: Protocol not supported."
    assert result.report.outcome is Outcome.DONE


def test_both_backends_broken_is_an_error_finding(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """When legacy does not work either the report says so with severity error."""
    broken = (1, "", "can't initialize iptables table `filter'\n")
    runner = fake_runner(
        {
            "iptables-nft -nL": broken,
            "iptables-legacy -nL": broken,
            "iptables --version": LEGACY_VERSION,
        }
    )
    result = _run(tmp_path, bin_dir(), runner)
    assert result.report.outcome is Outcome.FAILED
    assert str(result.report.severity) == "error"
    assert "--iptables=false" in (result.report.findings[-1].remedy or "")


def test_missing_backend_binary_leaves_path_alone(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """No iptables-legacy installed: an error finding and no directory for PATH."""
    bins = bin_dir(["iptables-nft", "iptables-nft-save"])
    result = _run(tmp_path, bins, fake_runner(), env={"DOCKER_IPTABLES_LEGACY": "1"})
    assert result.directory is None
    assert result.report.outcome is Outcome.FAILED
    assert not (tmp_path / "links").exists()


def test_missing_ip6tables_is_a_warning(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """A backend without ip6tables still links iptables and warns about IPv6."""
    bins = bin_dir(["iptables-nft", "iptables-nft-save", "iptables-nft-restore"])
    runner = fake_runner({"iptables --version": NFT_VERSION})
    result = _run(tmp_path, bins, runner)
    assert result.report.outcome is Outcome.DONE
    assert any("ip6tables" in f.message for f in result.report.findings)
    assert not (tmp_path / "links" / "ip6tables").exists()


def test_off_and_dry_run_change_nothing(tmp_path, bin_dir, fake_runner) -> None:  # type: ignore[no-untyped-def]
    """Mode off runs nothing; a dry run chooses but creates no directory."""
    runner = fake_runner()
    off = _run(tmp_path, bin_dir(), runner, mode=IptablesMode.OFF)
    assert off.report.outcome is Outcome.SKIPPED
    assert runner.calls == []
    dry = _run(tmp_path, bin_dir(), runner, dry_run=True)
    assert dry.report.outcome is Outcome.PLANNED
    assert dry.directory is None
    assert not (tmp_path / "links").exists()


def test_install_links_replaces_and_prunes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Re-linking switches targets in place and removes links the new backend lacks."""
    d = str(tmp_path / "links")
    install_links(d, {"iptables": "/old/iptables-nft", "ip6tables": "/old/ip6tables-nft"})
    install_links(d, {"iptables": "/new/iptables-legacy"})
    assert os.readlink(os.path.join(d, "iptables")) == "/new/iptables-legacy"
    assert os.listdir(d) == ["iptables"]
