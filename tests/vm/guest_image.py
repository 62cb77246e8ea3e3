"""The VM lane's guest: a Debian 13 root disk with systemd, docker.io and the agent's venv.

Built on the host from parts, without a loop mount: a debootstrap rootfs of
trixie (kernel 6.12, dockerd 26.1, systemd 257, python 3.13), configured for
an unattended boot (no timers, no gettys, the lane's runner as a service),
with a venv at /opt/dind-supervisor holding the agent's dependencies as
wheels for the guest's python (downloaded from PyPI on the host: the guest
has no network). The agent's own code is not in the image: a .pth file
points the venv at the input disk, so every run tests this checkout and the
image depends only on its package list and the project's dependencies.
``mkfs.ext4 -d`` turns the rootfs into the disk; the kernel and initrd are
copied out for qemu's -kernel/-initrd.

The result is cached under ``.vm-cache/guest-<key>/`` (key: suite, packages,
dependencies, this module's guest configuration) and never modified by a
run: qemu opens the root disk with ``snapshot=on``.
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
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.image import apt_mirror

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".vm-cache"
SUITE = "trixie"
# Debian 13's own kernel and dockerd; systemd as init; what the scenarios run.
PACKAGES = (
    "linux-image-amd64", "initramfs-tools", "systemd", "systemd-sysv", "udev", "kmod",
    "docker.io", "docker-cli", "containerd", "runc", "iptables", "iproute2",
    "python3", "python3-venv", "procps", "util-linux",
)
GUEST_PYTHON = "3.13"  # trixie's python3
ROOT_DISK_SIZE = "10G"  # sparse; room for the loaded images and the nested data roots
INPUT_MOUNT = "/mnt/lane-input"
# Bump when the way the guest is made changes, so stale caches are not reused.
FORMAT = 1

LANE_SERVICE = """\
[Unit]
Description=dind-supervisor VM lane: run the scenarios from the input disk, then power off
After=multi-user.target docker.service containerd.service
Wants=docker.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vm-lane
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
"""

# The runner: mount the inputs, run the scenarios, power off whatever happened
# (sysrq: immediate, no dependence on a clean shutdown; the results are synced).
LANE_SCRIPT = f"""\
#!/bin/sh
mkdir -p {INPUT_MOUNT}
if mount -o ro /dev/vdb {INPUT_MOUNT}; then
  . {INPUT_MOUNT}/lane.env
  export LANE_SCALE LANE_INPUT={INPUT_MOUNT} LANE_RESULTS=/dev/vdc
  python3 {INPUT_MOUNT}/guest/lane_main.py
  echo "lane: runner exited with $?"
else
  echo "lane: cannot mount the input disk"
fi
sync
echo o > /proc/sysrq-trigger
"""

# The agent's console script, as pip would write it, for the venv below.
CONSOLE_SCRIPT = """\
#!/opt/dind-supervisor/bin/python
import sys

from supervisor.entry import main

sys.exit(main())
"""

UNNEEDED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer",
    "e2scrub_all.timer", "systemd-pstore.service",
)
MASKED_UNITS = ("getty@tty1.service", "serial-getty@ttyS0.service", "getty.target")


@dataclass(frozen=True, slots=True, kw_only=True)
class Guest:
    """A built guest: the root disk and the boot files, all read-only from here on."""

    directory: Path
    root_disk: Path
    kernel: Path
    initrd: Path
    cached: bool
    build_seconds: float
    key: str


def dependencies(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The project's runtime dependencies, as pyproject.toml lists them."""
    data = tomllib.loads(pyproject.read_text())
    return sorted(data["project"]["dependencies"])


def guest_key() -> str:
    recipe = json.dumps({
        "suite": SUITE, "packages": sorted(PACKAGES), "python": GUEST_PYTHON,
        "dependencies": dependencies(), "service": LANE_SERVICE, "script": LANE_SCRIPT,
        "console": CONSOLE_SCRIPT, "disabled": UNNEEDED_UNITS, "masked": MASKED_UNITS,
        "size": ROOT_DISK_SIZE, "format": FORMAT,
    })
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    CACHE.mkdir(exist_ok=True)
    with (CACHE / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], *, timeout: float) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:5])}... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def _download_wheels(dest: Path) -> None:
    """Wheels of the dependencies for the guest's CPython, from PyPI (binary only)."""
    platforms = [f"--platform=manylinux_2_{minor}_x86_64" for minor in (17, 28, 34)]
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
          f"--python-version={GUEST_PYTHON}", "--implementation=cp",
          f"--abi=cp{GUEST_PYTHON.replace('.', '')}", "--abi=abi3", "--abi=none",
          *platforms, "--platform=any", "-d", str(dest), *dependencies()], timeout=600)


def _configure(rootfs: Path, wheels: Path) -> None:
    (rootfs / "etc/hostname").write_text("lane-guest\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 lane-guest\n")
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 rw,noatime 0 1\n")
    (rootfs / "etc/systemd/system/vm-lane.service").write_text(LANE_SERVICE)
    script = rootfs / "usr/local/sbin/vm-lane"
    script.write_text(LANE_SCRIPT)
    script.chmod(0o755)
    chroot = ["chroot", str(rootfs)]
    _run([*chroot, "systemctl", "enable", "vm-lane.service"], timeout=60)
    for unit in UNNEEDED_UNITS:
        subprocess.run([*chroot, "systemctl", "disable", unit], capture_output=True, check=False,
                       timeout=60)
    _run([*chroot, "systemctl", "mask", *MASKED_UNITS], timeout=60)
    # The agent's dependencies in a venv, as systemd/README.md installs it.
    staged = rootfs / "tmp/lane-wheels"
    shutil.copytree(wheels, staged)
    _run([*chroot, "python3", "-m", "venv", "/opt/dind-supervisor"], timeout=300)
    _run([*chroot, "/opt/dind-supervisor/bin/pip", "install", "-q", "--no-index",
          "--disable-pip-version-check", "--find-links", "/tmp/lane-wheels", *dependencies()],
         timeout=600)
    shutil.rmtree(staged)
    site = next((rootfs / "opt/dind-supervisor/lib").glob("python3*/site-packages"))
    (site / "lane-input.pth").write_text(f"{INPUT_MOUNT}/src\n")
    console = rootfs / "usr/local/bin/dind-supervisor"
    console.write_text(CONSOLE_SCRIPT)
    console.chmod(0o755)
    # Downloaded packages and apt lists are not needed at run time.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / leftover).glob("*.deb"):
            item.unlink()


def build_guest() -> Guest:
    """The cached guest for this key, built when missing (about 2-3 minutes)."""
    key = guest_key()
    target = CACHE / f"guest-{key}"
    started = time.monotonic()
    with _lock():
        if (target / "root.img").exists():
            return _guest(target, key, cached=True, seconds=time.monotonic() - started)
        work = CACHE / f"build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rootfs = work / "rootfs"
        try:
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                  SUITE, str(rootfs), apt_mirror(suite=SUITE)], timeout=1200)
            wheels = work / "wheels"
            _download_wheels(wheels)
            _configure(rootfs, wheels)
            out = work / "guest"
            out.mkdir()
            kernel = max((rootfs / "boot").glob("vmlinuz-*"))
            initrd = max((rootfs / "boot").glob("initrd.img-*"))
            shutil.copy2(kernel, out / "vmlinuz")
            shutil.copy2(initrd, out / "initrd.img")
            _run(["mkfs.ext4", "-q", "-F", "-L", "lane-root", "-d", str(rootfs),
                  str(out / "root.img"), ROOT_DISK_SIZE], timeout=600)
            for item in out.iterdir():
                item.chmod(0o444)
            out.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # Older guests are of no use once the key changed; they are large.
        for stale in CACHE.glob("guest-*"):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return _guest(target, key, cached=False, seconds=time.monotonic() - started)


def _guest(directory: Path, key: str, *, cached: bool, seconds: float) -> Guest:
    return Guest(directory=directory, root_disk=directory / "root.img",
                 kernel=directory / "vmlinuz", initrd=directory / "initrd.img",
                 cached=cached, build_seconds=seconds, key=key)
