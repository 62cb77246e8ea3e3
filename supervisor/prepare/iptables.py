"""iptables backend for dockerd: legacy or nft, chosen as docker:dind does, applied via PATH.

Owns the choice (pure: configuration, DOCKER_IPTABLES_LEGACY, legacy tables
already present, whether nft works) and a private directory of symlinks
(iptables, iptables-save, iptables-restore and the ip6tables trio) to the
chosen backend's binaries, which goes first on dockerd's PATH. Does not own
the system's alternatives (never changed: other tools in the container keep
their iptables) nor dockerd's own firewall code.

Why the order matters: ``iptables-legacy -nL`` itself creates the legacy
filter table, after which every later start would "find legacy rules" and
stick to legacy. So legacy evidence is read without side effects first
(/proc/net/*_tables_names, ``iptables-legacy-save``), then nft is probed, and
the legacy binary is only run once legacy has been chosen.
"""

from __future__ import annotations

import enum
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from supervisor.findings import Finding, Severity
from supervisor.prepare.report import Outcome, StepReport, reported

LEGACY_ENV = "DOCKER_IPTABLES_LEGACY"
TOOLS = (
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
)
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TABLE_NAME_FILES = ("ip_tables_names", "ip6_tables_names", "arp_tables_names")
_TOPIC = "prepare.iptables"
_PROBE_TIMEOUT = 15.0


class IptablesMode(enum.StrEnum):
    AUTO = "auto"
    LEGACY = "legacy"
    NFT = "nft"
    OFF = "off"


class Backend(enum.StrEnum):
    LEGACY = "legacy"
    NFT = "nft"

    @property
    def version_marker(self) -> str:
        """What ``iptables --version`` prints in parentheses for this backend."""
        return "legacy" if self is Backend.LEGACY else "nf_tables"


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice:
    backend: Backend
    reason: str


def preselect(
    mode: IptablesMode, *, env_legacy: str | None, legacy_tables: frozenset[str]
) -> Choice | None:
    """The choice when it does not depend on nft working; None means "probe nft"."""
    if mode is IptablesMode.LEGACY:
        return Choice(backend=Backend.LEGACY, reason="configured: iptables = legacy")
    if mode is IptablesMode.NFT:
        return Choice(backend=Backend.NFT, reason="configured: iptables = nft")
    if env_legacy is not None:
        # docker:dind: set and non-empty means legacy; set but empty is an
        # explicit "not legacy" that skips detection.
        if env_legacy:
            return Choice(backend=Backend.LEGACY, reason=f"{LEGACY_ENV}={env_legacy!r}")
        return Choice(backend=Backend.NFT, reason=f"{LEGACY_ENV} is set but empty")
    if legacy_tables:
        return Choice(
            backend=Backend.LEGACY,
            reason=f"legacy iptables tables already exist ({', '.join(sorted(legacy_tables))});"
            " rules in two backends would not see each other",
        )
    return None


def choose_backend(
    mode: IptablesMode,
    *,
    env_legacy: str | None,
    legacy_tables: frozenset[str],
    nft_works: bool | None,
) -> Choice:
    """docker:dind's rule: env, then existing legacy tables, then nft if it works, else legacy."""
    pre = preselect(mode, env_legacy=env_legacy, legacy_tables=legacy_tables)
    if pre is not None:
        return pre
    if nft_works is None:
        raise ValueError("the choice depends on whether nft works: probe it first")
    if nft_works:
        return Choice(backend=Backend.NFT, reason="no legacy tables and iptables-nft works")
    return Choice(backend=Backend.LEGACY, reason="iptables-nft does not work here: legacy")


def backend_tool(tool: str, backend: Backend) -> str:
    """``ip6tables-save`` -> ``ip6tables-legacy-save`` (the names Debian and Alpine ship)."""
    return tool.replace("tables", f"tables-{backend}", 1)


def legacy_tables_from_save(output: str) -> frozenset[str]:
    return frozenset(line[1:].strip() for line in output.splitlines() if line.startswith("*"))


# --- effects ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        """Run argv; a missing binary is returncode 127, a timeout 124 (never raises)."""


class SubprocessRunner:
    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError as exc:
            return RunResult(returncode=127, stdout="", stderr=str(exc))
        except subprocess.TimeoutExpired:
            return RunResult(returncode=124, stdout="", stderr=f"timed out after {timeout:g} s")
        return RunResult(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)


def resolve_tools(backend: Backend, search_path: str) -> dict[str, str]:
    """The backend's binaries found on ``search_path``: link name -> binary path."""
    found: dict[str, str] = {}
    for tool in TOOLS:
        path = shutil.which(backend_tool(tool, backend), path=search_path)
        if path is not None:
            found[tool] = path
    return found


def install_links(directory: str, tools: Mapping[str, str]) -> None:
    """Point ``directory``/<tool> at each binary, replacing links atomically, dropping others."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for tool in TOOLS:
        link = os.path.join(directory, tool)
        if tool not in tools:
            if os.path.lexists(link):
                os.unlink(link)
            continue
        tmp = os.path.join(directory, f".{tool}.new")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(tools[tool], tmp)
        os.replace(tmp, link)


def read_legacy_table_names(proc_root: str) -> frozenset[str]:
    """The tables the legacy (x_tables) kernel side holds in our network namespace."""
    names: set[str] = set()
    for name in _TABLE_NAME_FILES:
        try:
            with open(f"{proc_root}/net/{name}", encoding="ascii") as f:
                names.update(f"{name.split('_')[0]}:{t}" for t in f.read().split())
        except OSError:
            continue
    return frozenset(names)


@dataclass(frozen=True, slots=True, kw_only=True)
class IptablesResult:
    report: StepReport
    directory: str | None  # put first on dockerd's PATH; None: leave PATH alone
    backend: Backend | None


def _probe(runner: Runner, binary: str | None) -> tuple[bool, str]:
    if binary is None:
        return False, "not installed"
    res = runner.run([binary, "-nL"], timeout=_PROBE_TIMEOUT)
    detail = (res.stderr or res.stdout).strip().splitlines()
    return res.returncode == 0, detail[-1] if detail else f"exit {res.returncode}"


def prepare_iptables(
    mode: IptablesMode,
    *,
    runner: Runner,
    env: Mapping[str, str],
    directory: str,
    search_path: str,
    proc_root: str = "/proc",
    dry_run: bool = False,
) -> IptablesResult:
    """Gather evidence in a side-effect-free order, choose, link, and report the version."""
    if mode is IptablesMode.OFF:
        return IptablesResult(
            report=reported("iptables", Outcome.SKIPPED, Severity.INFO,
                            "iptables backend selection is off: dockerd uses the iptables"
                            " on its PATH"),
            directory=None,
            backend=None,
        )
    env_legacy = env.get(LEGACY_ENV)
    data: dict[str, object] = {"mode": str(mode), "env": env_legacy}
    findings: list[Finding] = []
    if mode is not IptablesMode.AUTO and env_legacy is not None:
        findings.append(
            Finding(
                topic=_TOPIC,
                severity=Severity.INFO,
                message=f"{LEGACY_ENV}={env_legacy!r} is ignored: configuration says"
                f" iptables = {mode}",
            )
        )
    legacy_tables = read_legacy_table_names(proc_root)
    legacy_save = shutil.which(backend_tool("iptables-save", Backend.LEGACY), path=search_path)
    if legacy_save is not None and mode is IptablesMode.AUTO and env_legacy is None:
        res = runner.run([legacy_save], timeout=_PROBE_TIMEOUT)
        if res.returncode == 0:
            legacy_tables |= {f"ip:{t}" for t in legacy_tables_from_save(res.stdout)}
    data["legacy_tables"] = sorted(legacy_tables)
    choice = preselect(mode, env_legacy=env_legacy, legacy_tables=legacy_tables)
    if choice is None:
        nft_bin = shutil.which(backend_tool("iptables", Backend.NFT), path=search_path)
        nft_works, detail = _probe(runner, nft_bin)
        if not nft_works and nft_bin is not None:
            # docker:dind loads the module and retries: the host may just not have
            # nf_tables loaded yet (docker-library/docker#350).
            modprobe = shutil.which("modprobe", path=search_path)
            if modprobe is not None:
                runner.run([modprobe, "nf_tables"], timeout=_PROBE_TIMEOUT)
                nft_works, detail = _probe(runner, nft_bin)
        data["nft_works"] = nft_works
        if not nft_works:
            data["nft_error"] = detail
        choice = choose_backend(
            mode, env_legacy=env_legacy, legacy_tables=legacy_tables, nft_works=nft_works
        )
    data.update(backend=str(choice.backend), reason=choice.reason)
    tools = resolve_tools(choice.backend, search_path)
    data["links"] = dict(tools)
    if "iptables" not in tools:
        findings.append(
            Finding(
                topic=_TOPIC,
                severity=Severity.ERROR,
                message=f"chose iptables {choice.backend} ({choice.reason}) but"
                f" {backend_tool('iptables', choice.backend)} is not on {search_path}",
                remedy="install the iptables package with both backends (Debian: iptables;"
                " Alpine: iptables iptables-legacy), or run dockerd with --iptables=false",
            )
        )
        return IptablesResult(
            report=StepReport(
                step="iptables", outcome=Outcome.FAILED, findings=tuple(findings), data=data
            ),
            directory=None,
            backend=choice.backend,
        )
    if dry_run:
        findings.append(
            Finding(
                topic=_TOPIC,
                severity=Severity.INFO,
                message=f"would use iptables {choice.backend}: {choice.reason}",
            )
        )
        return IptablesResult(
            report=StepReport(
                step="iptables", outcome=Outcome.PLANNED, findings=tuple(findings), data=data
            ),
            directory=None,
            backend=choice.backend,
        )
    install_links(directory, tools)
    missing = [t for t in TOOLS if t not in tools]
    if missing:
        findings.append(
            Finding(
                topic=_TOPIC,
                severity=Severity.WARNING,
                message=f"iptables {choice.backend}: {', '.join(missing)} not found;"
                " dockerd's IPv6 rules (or saves/restores) will fail",
                remedy="install the full iptables package",
            )
        )
    version = runner.run([os.path.join(directory, "iptables"), "--version"], timeout=10.0)
    version_text = version.stdout.strip() or version.stderr.strip()
    data.update(directory=directory, version=version_text)
    if choice.backend is Backend.NFT and "nft_works" in data:
        works, detail = bool(data["nft_works"]), str(data.get("nft_error", ""))
    else:
        # Running the legacy binary creates its filter table: fine now that
        # legacy is the choice (dockerd is about to create tables anyway).
        works, detail = _probe(runner, tools["iptables"])
    if choice.backend.version_marker not in version_text or not works:
        findings.append(
            Finding(
                topic=_TOPIC,
                severity=Severity.ERROR,
                message=f"iptables {choice.backend} chosen ({choice.reason}) does not work:"
                f" {detail or version_text or 'no version output'}",
                remedy="the kernel lacks ip_tables/nf_tables support for this namespace: load"
                " the modules on the host, or run dockerd with --iptables=false",
            )
        )
        outcome = Outcome.FAILED
    else:
        findings.append(
            Finding(
                topic=_TOPIC,
                severity=Severity.INFO,
                message=f"dockerd uses {version_text} via {directory}: {choice.reason}",
                data={"backend": str(choice.backend), "version": version_text},
            )
        )
        outcome = Outcome.DONE
    return IptablesResult(
        report=StepReport(step="iptables", outcome=outcome, findings=tuple(findings), data=data),
        directory=directory,
        backend=choice.backend,
    )
