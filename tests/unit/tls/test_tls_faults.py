"""Read-only and full certdirs: a named CertificateError, and nothing destroyed.

Each case runs in a child process inside its own mount namespace
(``unshare --mount --propagation private``), so the read-only bind mount or
the tiny tmpfs vanish with the child whatever happens; the host's mounts are
never touched. Root ignores file modes, hence real EROFS/ENOSPC filesystems.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tls_helpers import NOW, SANS, snapshot

from supervisor.tls import certs
from supervisor.tls.model import CertSpec

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

CHILD = r"""
import json, os, subprocess, sys
from datetime import datetime
sys.path.insert(0, sys.argv[3])
from tls_helpers import NOW, SANS, snapshot
from supervisor.errors import CertificateError
from supervisor.tls import certs, rotation
from supervisor.tls.model import CertSpec

mode, target = sys.argv[1], sys.argv[2]
def run(*argv):
    subprocess.run(argv, check=True)
if mode == "readonly":
    run("mount", "--bind", target, target)
    run("mount", "-o", "remount,bind,ro", target)
    certdir = target
else:
    run("mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", target)
    certdir = os.path.join(target, "certs")
    from pathlib import Path
    certs.ensure(Path(certdir), CertSpec(), SANS, NOW)
    fd = os.open(os.path.join(target, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    os.close(fd)
from pathlib import Path
before = snapshot(Path(certdir))
try:
    rotation.rotate(Path(certdir), CertSpec(), SANS, NOW, force=True)
except CertificateError as err:
    result = {"error": err.message, "path": err.path, "remedy": err.remedy}
else:
    result = {"error": None}
result["unchanged"] = snapshot(Path(certdir)) == before
result["files"] = sorted(snapshot(Path(certdir)))
print(json.dumps(result))
"""


def run_child(mode: str, target: Path) -> dict[str, object]:
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            CHILD,
            mode,
            str(target),
            str(Path(__file__).parent),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_read_only_certdir(tmp_path: Path) -> None:
    """A read-only certdir gives CertificateError naming the path (EROFS); nothing changes."""
    certdir = tmp_path / "certs"
    certs.ensure(certdir, CertSpec(), SANS, NOW)
    before = snapshot(certdir)
    result = run_child("readonly", certdir)
    assert result["unchanged"] is True
    assert "Read-only file system" in str(result["error"])
    assert str(result["path"]).startswith(str(certdir))
    assert "read-write" in str(result["remedy"])
    assert snapshot(certdir) == before


def test_full_certdir(tmp_path: Path) -> None:
    """A full filesystem gives CertificateError (ENOSPC) and leaves no partial or temp file."""
    target = tmp_path / "mnt"
    target.mkdir()
    result = run_child("full", target)
    assert result["unchanged"] is True
    assert "No space left on device" in str(result["error"])
    assert "free space" in str(result["remedy"])
    assert not [f for f in result["files"] if ".tmp-" in str(f)]  # type: ignore[attr-defined]
