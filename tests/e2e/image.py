"""The e2e test images: a Debian rootfs with docker.io, python3 and this package, per suite.

No image registry is reachable where the suite runs, so each image is made
from parts: a debootstrap ``--variant=minbase`` rootfs of one Debian suite
(cached as a tarball under ``.e2e-cache/``, keyed on what goes into it) is
imported into the outer dockerd as a base image, and
``tests/e2e/Dockerfile`` installs wheels made on the host from this checkout
(for that suite's python) into a venv, with the same metadata (ENTRYPOINT,
ENV, VOLUME, EXPOSE, HEALTHCHECK) as the real Dockerfile. Two suites give
two dockerd majors: bookworm's 20.10 and trixie's 26.1.

``build_image(docker, work, suite=...)`` is the entry point for other code
too (the VM lane builds both images with it and ``docker save``s them).

Owns: the suites, finding the apt mirror, the cached bases, the wheels, the
build. Does not own the outer dockerd (``outer.py``) or the scenarios.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".e2e-cache"
# Bump when the way the base is made changes, so stale caches are not reused.
BASE_FORMAT = 2
_COMMON = ("docker.io", "iptables", "python3", "python3-venv", "docker-compose")


@dataclass(frozen=True, slots=True, kw_only=True)
class Suite:
    """One Debian suite the e2e image is built from, and what the scenarios expect of it."""

    name: str
    packages: tuple[str, ...]
    python: str  # the suite's python3 (major.minor): the wheels are made for it
    glibc: int  # the minor of its glibc 2.N: the newest manylinux wheels it runs
    dockerd: str  # the version prefix of its dockerd, as `docker version` prints it
    api_version: str  # the newest Docker API version that dockerd speaks
    compose: tuple[str, ...]  # the command its `docker-compose` package provides
    compose_version: str  # the version prefix that command prints

    @property
    def image(self) -> str:
        return f"dind-supervisor:e2e-{self.name}"

    @property
    def major(self) -> int:
        """dockerd's (and its CLI's) major version: 20 or 26."""
        return int(self.dockerd.split(".")[0])

    def __str__(self) -> str:
        return self.name


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        # docker.io brings its CLI; docker-compose is Compose v1 (python, on
        # python3-docker); the CLI's own BuildKit client needs no buildx.
        Suite(name="bookworm", packages=_COMMON, python="3.11", glibc=36,
              dockerd="20.10.", api_version="1.41",
              compose=("docker-compose",), compose_version="1.29."),
        # The CLI is its own package (only a Recommends of docker.io, which
        # debootstrap does not install); docker-compose is Compose v2, a CLI
        # plugin; DOCKER_BUILDKIT=1 needs the buildx plugin since CLI 23.
        Suite(name="trixie", packages=(*_COMMON, "docker-cli", "docker-buildx"),
              python="3.13", glibc=41, dockerd="26.1.", api_version="1.45",
              compose=("docker", "compose"), compose_version="2."),
    )
}
DEFAULT_SUITE = "bookworm"


class DockerCLI(Protocol):
    """``docker(*args)`` against the dockerd that builds the image (``Outer.docker``)."""

    def __call__(
        self,
        *args: str,
        timeout: float = ...,
        stdin: IO[bytes] | None = ...,
        env_extra: Mapping[str, str] | None = ...,
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """The image made and the seconds spent per build step, for the report of a run."""

    image: str
    base_seconds: float
    base_cached: bool
    wheels_seconds: float
    import_seconds: float
    build_seconds: float


def suite_named(name: str | Suite) -> Suite:
    """The suite called ``name`` (a ``Suite`` is returned as it is)."""
    if isinstance(name, Suite):
        return name
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; the e2e image knows {sorted(SUITES)}") from None


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
    suite: str = DEFAULT_SUITE,
) -> str:
    """The first ``deb`` URI serving ``suite`` in the machine's apt sources.

    When no source names ``suite`` (a bookworm machine lists only bookworm),
    the URI serving another suite of ``SUITES`` is used: a Debian mirror
    serves every suite under the same URI, by name.
    """
    others = [name for name in SUITES if name != suite]
    for wanted in (suite, *others):
        uri = _source_uri(wanted, sources_dir, sources_list)
        if uri:
            return uri
    raise RuntimeError(
        f"no apt source serves {suite!r} (nor {', '.join(map(repr, others))}) in "
        f"{sources_dir}/*.sources or {sources_list}; "
        "the e2e image needs a Debian mirror: add one to the machine's apt sources"
    )


def _source_uri(suite: str, sources_dir: Path, sources_list: Path) -> str | None:
    """The first ``deb`` URI listing ``suite`` itself (not ``suite-security``), or None."""
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
    return None


# Caching -------------------------------------------------------------------


def base_key(suite: Suite) -> str:
    """What the base tarball depends on (not the mirror: any mirror gives the same suite)."""
    recipe = json.dumps(
        {"suite": suite.name, "packages": sorted(suite.packages), "format": BASE_FORMAT}
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _cache_lock(name: str) -> Iterator[None]:
    """One writer per cache entry, across processes (another worktree's run, the VM lane)."""
    CACHE.mkdir(exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as handle:
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


def base_tarball(suite: Suite) -> tuple[Path, bool]:
    """The suite's cached rootfs tarball, made with debootstrap when missing; (path, was cached)."""
    target = CACHE / f"base-{suite.name}-{base_key(suite)}.tar"
    with _cache_lock(target.name):
        if target.exists():
            return target, True
        work = CACHE / f"build-{suite.name}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        rootfs = work / "rootfs"
        try:
            _run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(suite.packages)}",
                 suite.name, str(rootfs), apt_mirror(suite=suite.name)],
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


def _wheel_platforms(suite: Suite) -> list[str]:
    """Every manylinux tag the suite's glibc runs, newest first (pip does not expand them)."""
    arch = platform.machine()
    return [f"manylinux_2_{minor}_{arch}" for minor in range(suite.glibc, 16, -1)] + [
        f"manylinux2014_{arch}"
    ]


def build_wheels(dest: Path, suite: Suite) -> None:
    """This checkout's wheel plus its dependencies' for the suite's python (cached)."""
    dest.mkdir(parents=True, exist_ok=True)
    # Our own wheel is rebuilt every time: it is what the suite tests.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(dest)],
         timeout=300, cwd=REPO)
    ours = next(dest.glob("dind_supervisor-*.whl"))
    recipe = (REPO / "pyproject.toml").read_bytes() + json.dumps(
        [suite.python, _wheel_platforms(suite)]
    ).encode()
    deps = CACHE / f"wheels-{suite.name}-{hashlib.sha256(recipe).hexdigest()[:16]}"
    with _cache_lock(deps.name):
        if not deps.is_dir():
            partial = deps.with_suffix(".partial")
            shutil.rmtree(partial, ignore_errors=True)
            # Binary wheels for the suite's python, whatever python runs the tests.
            tags = [f"--platform={tag}" for tag in _wheel_platforms(suite)]
            _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                  f"--python-version={suite.python}", "--implementation=cp", *tags,
                  "-d", str(partial), str(ours)], timeout=600, cwd=REPO)
            for wheel in partial.glob("dind_supervisor-*.whl"):
                wheel.unlink()
            partial.rename(deps)
    for wheel in deps.glob("*.whl"):
        shutil.copy2(wheel, dest / wheel.name)


def build_image(docker: DockerCLI, work: Path, *, suite: str | Suite = DEFAULT_SUITE) -> Timings:
    """Make ``dind-supervisor:e2e-<suite>`` in the dockerd that ``docker(*args)`` talks to."""
    chosen = suite_named(suite)
    started = time.monotonic()
    base, cached = base_tarball(chosen)
    base_done = time.monotonic()
    context = work / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    build_wheels(context / "wheels", chosen)
    wheels_done = time.monotonic()
    base_tag = f"dind-e2e-base:{chosen.name}-{base_key(chosen)}"
    with base.open("rb") as stdin:
        docker("import", "-", base_tag, stdin=stdin, timeout=300)
    import_done = time.monotonic()
    shutil.copy2(Path(__file__).with_name("Dockerfile"), context / "Dockerfile")
    docker("build", "-q", "--build-arg", f"BASE={base_tag}", "-t", chosen.image, str(context),
           timeout=600, env_extra={"DOCKER_BUILDKIT": "0"})
    return Timings(
        image=chosen.image,
        base_seconds=base_done - started,
        base_cached=cached,
        wheels_seconds=wheels_done - base_done,
        import_seconds=import_done - wheels_done,
        build_seconds=time.monotonic() - import_done,
    )
