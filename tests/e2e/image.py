"""The e2e test image: a Debian rootfs with docker.io, python3 and this package.

No image registry is reachable where the suite runs, so the image is made
from parts: a debootstrap ``--variant=minbase`` rootfs (cached as a tarball
under ``.e2e-cache/``, keyed on what goes into it) is imported into the outer
dockerd as a base image, and ``tests/e2e/Dockerfile`` installs wheels built
on the host from this checkout into a venv, with the same metadata
(ENTRYPOINT, ENV, VOLUME, EXPOSE, HEALTHCHECK) as the real Dockerfile.

Owns: finding the apt mirror, the cached base, the wheels, the build.
Does not own the outer dockerd (``outer.py``) or the scenarios.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".e2e-cache"
SUITE = "bookworm"
PACKAGES = ("docker.io", "iptables", "python3", "python3-venv")
# Bump when the way the base is made changes, so stale caches are not reused.
BASE_FORMAT = 2
IMAGE = "dind-supervisor:e2e"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Seconds spent per build step, for the report of a run."""

    base_seconds: float
    base_cached: bool
    wheels_seconds: float
    import_seconds: float
    build_seconds: float


# The mirror ----------------------------------------------------------------


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
            continue
        if raw[0].isspace() and key:
            stanza[key] += " " + raw.strip()
            continue
        key, _, value = raw.partition(":")
        key = key.strip().lower()
        stanza[key] = value.strip()


def apt_mirror(
    sources_dir: Path = Path("/etc/apt/sources.list.d"),
    sources_list: Path = Path("/etc/apt/sources.list"),
    *,
    suite: str = SUITE,
) -> str:
    """The first ``deb`` URI serving ``suite`` itself in the machine's apt sources."""
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        for stanza in _deb822_stanzas(path.read_text()):
            if stanza.get("enabled", "yes").lower() == "no":
                continue
            if "deb" in stanza.get("types", "").split() and suite in stanza.get(
                "suites", ""
            ).split():
                uris = stanza.get("uris", "").split()
                if uris:
                    return uris[0]
    if sources_list.is_file():
        for line in sources_list.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if fields[:1] != ["deb"]:
                continue
            fields = fields[1:]
            if fields and fields[0].startswith("["):
                while fields and not fields[0].endswith("]"):
                    fields.pop(0)
                fields = fields[1:]
            if len(fields) >= 2 and fields[1] == suite:
                return fields[0]
    raise RuntimeError(
        f"no apt source serves {suite!r} in {sources_dir}/*.sources or {sources_list}; "
        "the e2e image needs a Debian mirror: add one to the machine's apt sources"
    )


# Caching -------------------------------------------------------------------


def base_key(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    """What the base tarball depends on (not the mirror: any mirror gives the same suite)."""
    recipe = json.dumps({"suite": suite, "packages": sorted(packages), "format": BASE_FORMAT})
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    CACHE.mkdir(exist_ok=True)
    with (CACHE / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], *, timeout: float, cwd: Path | None = None) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])}... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def base_tarball() -> tuple[Path, bool]:
    """The cached rootfs tarball, made with debootstrap when missing; (path, was cached)."""
    key = base_key()
    target = CACHE / f"base-{SUITE}-{key}.tar"
    with _cache_lock():
        if target.exists():
            return target, True
        work = CACHE / f"build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        rootfs = work / "rootfs"
        try:
            _run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(rootfs), apt_mirror()],
                timeout=900,
            )
            # Downloaded .debs, apt lists and documentation: a third of the size, unused.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / leftover).glob("*"):
                    if item.is_file():
                        item.unlink()
            for docs in ("usr/share/doc", "usr/share/man", "usr/share/info"):
                shutil.rmtree(rootfs / docs, ignore_errors=True)
            partial = target.with_suffix(".partial")
            _run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
            partial.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target, False


def build_wheels(dest: Path) -> None:
    """This checkout's wheel plus its dependencies' (cached per pyproject.toml)."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    deps = CACHE / f"wheels-{hashlib.sha256(pyproject).hexdigest()[:16]}"
    with _cache_lock():
        if not deps.is_dir():
            partial = deps.with_suffix(".partial")
            shutil.rmtree(partial, ignore_errors=True)
            _run([sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-w", str(partial)],
                 timeout=600, cwd=REPO)
            for wheel in partial.glob("dind_supervisor-*.whl"):
                wheel.unlink()
            partial.rename(deps)
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in deps.glob("*.whl"):
        shutil.copy2(wheel, dest / wheel.name)
    # Our own wheel is rebuilt every time: it is what the suite tests.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(dest)],
         timeout=300, cwd=REPO)


def build_image(docker: Callable[..., subprocess.CompletedProcess[str]], work: Path) -> Timings:
    """Make ``IMAGE`` in the dockerd that ``docker(*args)`` talks to."""
    started = time.monotonic()
    base, cached = base_tarball()
    base_done = time.monotonic()
    context = work / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    build_wheels(context / "wheels")
    wheels_done = time.monotonic()
    base_tag = f"dind-e2e-base:{base_key()}"
    with base.open("rb") as stdin:
        docker("import", "-", base_tag, stdin=stdin, timeout=300)
    import_done = time.monotonic()
    shutil.copy2(Path(__file__).with_name("Dockerfile"), context / "Dockerfile")
    docker("build", "-q", "--build-arg", f"BASE={base_tag}", "-t", IMAGE, str(context),
           timeout=600, env_extra={"DOCKER_BUILDKIT": "0"})
    return Timings(
        base_seconds=base_done - started,
        base_cached=cached,
        wheels_seconds=wheels_done - base_done,
        import_seconds=import_done - wheels_done,
        build_seconds=time.monotonic() - import_done,
    )
