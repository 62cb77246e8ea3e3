"""The certificate folder on disk: read with named errors, write atomically, keep backups.

Owns: reading and parsing PEM files (a corrupt file becomes a
CertificateError naming it), atomic replacement of one file (temporary
file in the same directory, fsync, rename, fsync of the directory), the
backup of the previous generation under ``$CERTDIR/.previous/`` and the
advisory lock that serialises agents sharing a certdir. Does not decide
what to write (certs.py).

Why files and not directories are swapped: ``client/`` and ``server/`` are
often volume mount points (``-v certs-client:/certs/client``), which cannot
be renamed. Each file is replaced atomically instead; certs.py orders the
writes so that any mix of old and new files a reader can see still works.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from supervisor.atomicfile import replace_file
from supervisor.errors import CertificateError
from supervisor.tls.issue import PrivateKey

BACKUP_DIR = ".previous"
PUBLIC_MODE = 0o644
PRIVATE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def _remedy_for(err: OSError, where: Path) -> str:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on the filesystem holding {where} (df {where}) and start again"
    if err.errno == errno.EROFS:
        return (
            f"mount {where} read-write, point DOCKER_TLS_CERTDIR at a writable folder,"
            " or provide a user-managed set (server/ca.pem, cert.pem, key.pem, no ca/key.pem)"
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"give uid {os.geteuid()} write access to {where} (check owner, mode, SELinux)"
    return f"check {where} and the filesystem holding it"


def os_error(err: OSError, path: Path, action: str) -> CertificateError:
    """A CertificateError for a failed read or write, naming path, cause and remedy."""
    cause = os.strerror(err.errno) if err.errno else str(err)
    message = f"cannot {action} {path}: {cause}"
    if action == "write":
        message += " (nothing was overwritten; the files already in place stay in use)"
    return CertificateError(
        message,
        path=str(path),
        remedy=_remedy_for(err, path.parent if action == "write" else path),
    )


def read_optional(path: Path) -> bytes | None:
    """The file's bytes, or None if it does not exist (an empty file counts as missing)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise os_error(err, path, "read") from err
    return data if data.strip() else None


def _corrupt(path: Path, what: str, err: Exception) -> CertificateError:
    return CertificateError(
        f"{path} is not a valid PEM {what}: {err}",
        path=str(path),
        remedy=f"restore it (a copy of the previous generation may be under {BACKUP_DIR}/),"
        " or remove it to have the agent issue a new one",
    )


def parse_certs(path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise _corrupt(path, "certificate", err) from err


def parse_key(path: Path, data: bytes) -> PrivateKey:
    try:
        # The RSA consistency check (primality of p and q) costs about a second
        # for a 4096-bit key on every start; the public half is still compared
        # with the certificate, which is the check that matters here.
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as err:
        raise _corrupt(path, "private key (unencrypted)", err) from err
    if not isinstance(key, PrivateKey):
        raise CertificateError(
            f"{path} holds a {type(key).__name__}, not an ECDSA or RSA key",
            path=str(path),
            remedy="use an ECDSA P-256 or RSA key, or remove the file to get a new one",
        )
    return key


def load_certs(path: Path) -> list[x509.Certificate] | None:
    data = read_optional(path)
    return None if data is None else parse_certs(path, data)


def load_key(path: Path) -> PrivateKey | None:
    data = read_optional(path)
    return None if data is None else parse_key(path, data)


def make_dir(path: Path, mode: int) -> None:
    if path.is_dir():
        return
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as err:
        raise os_error(err, path / ".", "write") from err


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new bytes, never a mix."""
    try:
        replace_file(path, data, mode=mode)
    except OSError as err:
        raise os_error(err, path, "write") from err


def remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise os_error(err, path, "write") from err


def backup(certdir: Path, folder: str, names: list[str]) -> list[str]:
    """Copy the current files of ``certdir/folder`` to ``certdir/.previous/folder``.

    Called before any file of that folder changes, so the backup is one whole
    generation (restorable with ``cp .previous/server/* server/``). Only one
    generation is kept: the older backup is replaced. Returns what was copied.
    """
    target = certdir / BACKUP_DIR / folder
    present = [(name, data) for name in names if (data := read_optional(certdir / folder / name))]
    if not present:
        return []
    make_dir(certdir / BACKUP_DIR, PRIVATE_DIR_MODE)
    make_dir(target, PRIVATE_DIR_MODE)
    for name, data in present:
        mode = (certdir / folder / name).stat().st_mode & 0o777
        write_atomic(target / name, data, mode=mode)
    # A file of the older backup that this generation lacks would mix two generations.
    for stale in sorted({n for n in names} - {n for n, _ in present}):
        remove(target / stale)
    return [f"{folder}/{name}" for name, _ in present]


@contextmanager
def locked(certdir: Path) -> Iterator[None]:
    """Hold an exclusive flock on the certdir itself while deciding and writing.

    Locking the directory (opened read-only) needs no write access, so a
    read-only user-managed set can still be checked; agents sharing one
    certdir through a volume take turns instead of rewriting each other's files.
    """
    try:
        fd = os.open(certdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise os_error(err, certdir, "read") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
