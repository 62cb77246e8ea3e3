"""Booting the lane's guest with qemu: the accelerator choice, the disks, one bounded run.

Owns: probing KVM (a tiny initramfs that prints a marker and powers off;
KVM is used only when that boot completes), the input disk (``mkfs.ext4
-d`` of a folder: the scenarios, this checkout's package, the images), the
results disk (raw; the guest writes one tar archive over it), and running
qemu with a deadline: it is killed on timeout or on any error, and waited
for, so no qemu outlives a test session. The root disk is opened with
``snapshot=on``: the cached image is never written.

Does not own building the guest (``guest_image.py``) or what the scenarios
assert.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KVM_MARKER = "LANE-KVM-BOOTED"
# How much slower the guest is under TCG than under KVM, roughly: the
# scenarios' own deadlines are multiplied by it.
TCG_SCALE = 8.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Accel:
    name: str  # "kvm" or "tcg"
    args: tuple[str, ...]
    scale: float
    reason: str


# The accelerator -----------------------------------------------------------------


def _cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev) entries, as the kernel unpacks it."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF,
                  len(encoded), 0)
        out += b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
        out += encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def probe_initramfs(dest: Path, busybox: Path = Path("/bin/busybox")) -> Path:
    """An initramfs whose /init prints KVM_MARKER on the console and powers off."""
    init = (f"#!/bin/busybox sh\n/bin/busybox echo {KVM_MARKER}\n"
            "/bin/busybox poweroff -f\n").encode()
    archive = _cpio_newc([
        ("bin", 0o040755, b"", 0),
        ("dev", 0o040755, b"", 0),
        ("dev/console", 0o020600, b"", (5 << 8) | 1),
        ("bin/busybox", 0o100755, busybox.read_bytes(), 0),
        ("init", 0o100755, init, 0),
    ])
    dest.write_bytes(archive)
    return dest


def choose_accel(kernel: Path, work: Path, *, timeout: float = 30) -> Accel:
    """KVM if the guest kernel boots to userspace with it here, else TCG (and why)."""
    # One host thread for all vCPUs: with multi-threaded TCG the guest kernel was
    # seen to die of "Oops: int3" in a function it had just live-patched (static
    # keys via text_poke_bp), i.e. a vCPU ran stale code another had rewritten.
    tcg = ("-accel", "tcg,thread=single", "-cpu", "max")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel(name="tcg", args=tcg, scale=TCG_SCALE, reason="no usable /dev/kvm")
    initramfs = probe_initramfs(work / "probe.cpio")
    log = work / "kvm-probe.log"
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1",
            "-kernel", str(kernel), "-initrd", str(initramfs), "-append",
            "console=ttyS0 panic=-1 quiet", "-nic", "none", "-vga", "none", "-display", "none",
            "-no-reboot", "-serial", f"file:{log}", "-monitor", "none"]
    errors = work / "kvm-probe.stderr"

    def seen() -> str:
        # The marker comes on the serial console; qemu reports KVM's failure on stderr.
        return "".join(p.read_text(errors="replace") for p in (log, errors) if p.exists())

    with _Qemu(argv, stderr=errors) as qemu:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and qemu.poll() is None:
            text = seen()
            if KVM_MARKER in text or "KVM internal error" in text:
                break
            time.sleep(0.2)
    text = seen()
    if KVM_MARKER in text:
        return Accel(name="kvm", args=("-accel", "kvm", "-cpu", "host"), scale=1.0,
                     reason="the guest kernel booted to userspace under KVM")
    if "KVM internal error" in text:
        first = next(line for line in text.splitlines() if "KVM internal error" in line)
        reason = f"KVM fails here ({first.strip()}; emulation failure)"
    else:
        reason = f"the guest kernel did not reach userspace under KVM within {timeout:.0f} s"
    return Accel(name="tcg", args=tcg, scale=TCG_SCALE, reason=reason)


# Process handling -------------------------------------------------------------------


class _Qemu:
    """A qemu process that is always killed and reaped on exit from the with block."""

    def __init__(self, argv: list[str], *, stderr: Path | None = None) -> None:
        self.argv = argv
        self.stderr = stderr
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> subprocess.Popen[bytes]:
        if self.stderr is None:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True,
            )
        else:
            with self.stderr.open("wb") as err:
                self.process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=err, start_new_session=True,
                )
        return self.process

    def __exit__(self, *exc: object) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


# Disks ---------------------------------------------------------------------------------


def make_input_disk(folder: Path, dest: Path) -> Path:
    """An ext4 image of ``folder`` (no loop mount), with some room to spare."""
    used = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    size_mb = int(used * 1.15 / 2**20) + 64
    result = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "lane-input", "-d", str(folder), str(dest),
         f"{size_mb}M"], capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mkfs.ext4 -d {folder} failed: {result.stderr[-2000:]}")
    return dest


def make_results_disk(dest: Path, size_mb: int = 64) -> Path:
    with dest.open("wb") as f:
        f.truncate(size_mb * 2**20)
    return dest


def read_results(disk: Path) -> dict[str, Any]:
    """The JSON files of the tar archive the guest wrote over the results disk."""
    found: dict[str, Any] = {}
    try:
        with tarfile.open(disk, mode="r:") as tar:
            for member in tar:
                handle = tar.extractfile(member)
                if handle is not None and member.name.endswith(".json"):
                    found[member.name.removesuffix(".json")] = json.loads(handle.read())
    except tarfile.ReadError:
        return {}  # the guest never wrote (it did not get that far)
    return found


# The run ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    results: dict[str, Any]
    seconds: float
    exit_code: int | None  # None: killed at the deadline
    serial_log: Path
    stderr: str


def boot(
    *,
    kernel: Path,
    initrd: Path,
    root_disk: Path,
    input_disk: Path,
    results_disk: Path,
    accel: Accel,
    serial_log: Path,
    deadline: float,
    memory_mb: int = 2048,
    cpus: int = 2,
) -> RunOutcome:
    """Boot once, let the guest run its scenarios and power off; kill it at the deadline."""
    argv = [
        "qemu-system-x86_64", *accel.args, "-smp", str(cpus), "-m", str(memory_mb),
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 root=/dev/vda rw fsck.mode=skip panic=-1 mitigations=off",
        # The cached root disk is only read: writes go to qemu's temporary overlay.
        "-drive", f"file={root_disk},format=raw,if=virtio,snapshot=on",
        "-drive", f"file={input_disk},format=raw,if=virtio,readonly=on",
        "-drive", f"file={results_disk},format=raw,if=virtio",
        "-nic", "none", "-vga", "none", "-display", "none", "-monitor", "none",
        "-no-reboot", "-serial", f"file:{serial_log}",
    ]
    started = time.monotonic()
    stderr = ""
    exit_code: int | None = None
    with _Qemu(argv) as qemu:
        try:
            _, err = qemu.communicate(timeout=deadline)
            stderr = err.decode(errors="replace")
            exit_code = qemu.returncode
        except subprocess.TimeoutExpired:
            stderr = f"killed after the lane's deadline of {deadline:.0f} s"
    return RunOutcome(results=read_results(results_disk), seconds=time.monotonic() - started,
                      exit_code=exit_code, serial_log=serial_log, stderr=stderr)


def tools_missing() -> list[str]:
    return [tool for tool in ("qemu-system-x86_64", "mkfs.ext4", "debootstrap")
            if shutil.which(tool) is None]
