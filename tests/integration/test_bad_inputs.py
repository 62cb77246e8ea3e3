"""Bad inputs, table-driven: each gives its documented exit code or HTTP status, names the
input, and destroys nothing.

Every `run` case runs with the agent as PID 1 of a private sandbox, so a case that
got past validation could not touch the machine; dockerd is a fake (it records that
it was started and exits 1) unless the case needs the real one. "Nothing destroyed":
every file of the certdir and of the data root that existed before has the same
content after (files may be added: the data root's lock and run marker). The counts
feed the session's summary line (`bad inputs N, clear errors N`): an error is clear
when the exit code (or HTTP status) is the documented one and the message names the
input.

Two bad inputs that need a running dockerd live beside the tests of their area and count
in the same tally: a client with another CA's certificate (test_diagnosis.py) and a
container asking for more than dockerd's hard rlimit (test_policy.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ReliabilityTally
from tests.integration.sandbox import PYTHON, REPO, Sandbox, poll

pytestmark = pytest.mark.integration

FAKE_DOCKERD = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Docker version 20.10.24, build fake"; exit 0; fi
echo "fake dockerd started: $*" >&2
touch /run/fake-dockerd-started
exit 1
"""
# Set for every `run` case unless the case is about that very setting.
SAFE_ENV = {
    "DIND_SUPERVISOR_DOCKERD_BINARY": "/run/fakebin/dockerd",
    "DIND_SUPERVISOR_RESTART_MAX_FAILURES": "1",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCase:
    """``dind-supervisor ARGS`` in a sandbox; the exit code and the words the output must hold."""

    id: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    config: str | bytes | None = None  # written to /run/case.toml, passed with --config
    certs: Callable[[Path, Path], None] | None = None  # (certdir, data root) -> None
    setup: str = ""
    code: int = 2
    names: tuple[str, ...] = ()
    skip_safe: tuple[str, ...] = ()  # SAFE_ENV keys the case is about
    bug: str | None = None  # known defect in a file this suite may not fix: strict xfail
    daemon_json: str | None = None  # dockerd's /etc/docker/daemon.json (a tmpfs over the folder)
    disk: DiskImage | None = None  # an ext4 image mounted over /var/lib/docker
    within: float | None = None  # the exit must come this soon (seconds from the start)


# dockerd's daemon.json and a (nearly) full data root ----------------------------

DAEMON_JSON_SETUP = ("mount -t tmpfs tmpfs /etc/docker"
                     " && cp /run/daemon.json /etc/docker/daemon.json")
# A lock record from an earlier run: it must come out of a refusal as it went in.
OLD_LOCK = '{"pid": 4242, "host": "earlier-run", "since": "2026-01-01T00:00:00+00:00"}\n'
FILL = ("python3 -c \"import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
        "for size in (1 << 16, 4096, 1):\n    try:\n        while True: os.write(fd, b'x' * size)"
        "\n    except OSError: pass\" /var/lib/docker/fill")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskImage:
    """An ext4 filesystem (no reserved blocks) made as /run/disk.img and mounted over
    /var/lib/docker inside the sandbox, holding OLD_LOCK, then filled as asked."""

    size_mib: int
    inodes: int = 256
    fill: str = ""  # a shell command run after the mount (FILL, fallocate, touch ...)

    def make(self, run_dir: Path) -> None:
        image = run_dir / "disk.img"
        with image.open("wb") as handle:
            handle.truncate(self.size_mib * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(self.inodes), "-O",
                        "^has_journal", str(image)], check=True)

    def setup(self) -> str:
        return " && ".join([
            "mount -o loop /run/disk.img /var/lib/docker",
            f"printf '%s' '{OLD_LOCK.strip()}' > /var/lib/docker/.dind-supervisor.lock",
            "echo >> /var/lib/docker/.dind-supervisor.lock",
            *([self.fill] if self.fill else []),
        ])


def disk_contents(run_dir: Path) -> tuple[list[str], str]:
    """The image's top folder and its lock file, read with debugfs (no mount needed)."""
    image = str(run_dir / "disk.img")
    listing = subprocess.run(["debugfs", "-R", "ls -p /", image], capture_output=True,
                             text=True, check=True).stdout
    names = sorted(line.split("/")[5] for line in listing.splitlines()
                   if line.count("/") >= 6 and line.split("/")[5] not in (".", ".."))
    lock = subprocess.run(["debugfs", "-R", "cat /.dind-supervisor.lock", image],
                          capture_output=True, text=True, check=True).stdout
    return names, lock


# Certificates -------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey],
    *, not_before: dt.datetime, not_after: dt.datetime, ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer[1], hashes.SHA256())


def expired_user_ca(certdir: Path, _data_root: Path) -> None:
    """A user-managed set (no ca/key.pem) whose CA expired yesterday; the leaf is still valid."""
    shutil.rmtree(certdir)
    (certdir / "server").mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("expired test CA", ca_key, ("expired test CA", ca_key),
               not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1),
               ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("docker", key, ("expired test CA", ca_key),
                 not_before=now - dt.timedelta(days=20), not_after=now + dt.timedelta(days=20),
                 ca=False)
    (certdir / "server/ca.pem").write_bytes(_pem(ca))
    (certdir / "server/cert.pem").write_bytes(_pem(leaf))
    (certdir / "server/key.pem").write_bytes(_key_pem(key))


def truncated_server_cert(certdir: Path, _data_root: Path) -> None:
    path = certdir / "server/cert.pem"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def swapped_server_cert_and_key(certdir: Path, _data_root: Path) -> None:
    cert, key = certdir / "server/cert.pem", certdir / "server/key.pem"
    cert_bytes = cert.read_bytes()
    cert.write_bytes(key.read_bytes())
    key.write_bytes(cert_bytes)


def wrong_server_key(certdir: Path, _data_root: Path) -> None:
    shutil.copyfile(certdir / "client/key.pem", certdir / "server/key.pem")


def truncated_ca_key(certdir: Path, _data_root: Path) -> None:
    path = certdir / "ca/key.pem"
    path.write_bytes(path.read_bytes()[:40])


def key_symlink_elsewhere(certdir: Path, data_root: Path) -> None:
    """server/key.pem is a symlink to an unrelated file in the data root."""
    (data_root / "precious.txt").write_text("not a key, and it must survive\n")
    (certdir / "server/key.pem").unlink()
    (certdir / "server/key.pem").symlink_to("/var/lib/docker/precious.txt")


def client_dir_symlink_elsewhere(certdir: Path, data_root: Path) -> None:
    """client/ is a symlink to a folder whose key.pem is someone else's file."""
    target = data_root / "elsewhere"
    target.mkdir()
    (target / "key.pem").write_text("someone else's key.pem\n")
    shutil.rmtree(certdir / "client")
    (certdir / "client").symlink_to("/var/lib/docker/elsewhere")


def certdir_is_a_file(certdir: Path, _data_root: Path) -> None:
    (certdir / "not-a-dir").write_text("a file\n")


# The table ------------------------------------------------------------------

TLS = {"DOCKER_TLS_CERTDIR": "/certs"}

RUN_CASES = [
    # Configuration files.
    RunCase(id="toml-malformed", config="[dockerd\nbinary = 1\n",
            names=("/run/case.toml", "not valid TOML")),
    RunCase(id="toml-duplicate-key", config="[restart]\nbackoff_factor = 2\nbackoff_factor = 3\n",
            names=("/run/case.toml", "not valid TOML")),
    RunCase(id="toml-not-utf8", config=b"\xff\xfe[restart]\nbackoff_factor = 2\n",
            names=("/run/case.toml",)),
    RunCase(id="toml-is-a-directory", config=None, args=("--config", "/run"),
            names=("--config", "'/run'", "Is a directory")),
    RunCase(id="toml-top-level-key", config="foo = 1\n", names=("foo", "[section]")),
    RunCase(id="toml-unknown-section", config="[nope]\nx = 1\n", names=("nope", "unknown section")),
    RunCase(id="toml-unknown-key", config="[dockerd]\nno_such = 1\n",
            names=("dockerd.no_such", "unknown key", "/run/case.toml")),
    RunCase(id="toml-wrong-type-number", config='[restart]\nbackoff_factor = "fast"\n',
            names=("restart.backoff_factor", "'fast'", "expected a number")),
    RunCase(id="toml-wrong-type-list", config="[dockerd]\nargs = [1, 2]\n",
            names=("dockerd.args", "list of strings")),
    RunCase(id="toml-wrong-type-bool", config='[dockerd]\nlive_restore = "sometimes"\n',
            names=("dockerd.live_restore", "'sometimes'", "boolean")),
    RunCase(id="toml-range-timeout-above-interval",
            config="[liveness]\ninterval = 1\ntimeout = 5\n", names=("liveness.timeout", "5")),
    RunCase(id="toml-range-mtu", config="[dockerd]\nmtu = 10\n", names=("dockerd.mtu", "68")),
    RunCase(id="toml-range-renew-fraction", config="[tls]\nrenew_fraction = 1.5\n",
            names=("tls.renew_fraction", "1.5")),
    RunCase(id="toml-range-infinite-duration", config="[liveness]\ninterval = inf\n",
            names=("liveness.interval", "finite")),
    RunCase(id="toml-range-gc-marks", config="[dataroot]\ngc_high = 0.5\ngc_low = 0.9\n",
            names=("dataroot.gc_low", "0.9")),
    RunCase(id="toml-range-oom-score-adj", config="[policy]\ndockerd_oom_score_adj = 5000\n",
            names=("policy.dockerd_oom_score_adj", "5000", "-1000..1000")),
    RunCase(id="toml-policy-garbage-rlimit", config='[policy]\ndockerd_rlimits = "nofile=lots"\n',
            names=("policy.dockerd_rlimits.nofile", "lots")),
    RunCase(id="toml-policy-unknown-rlimit", config='[policy]\ndockerd_rlimits = "files=10"\n',
            names=("policy.dockerd_rlimits", "files")),
    RunCase(id="toml-empty-binary", config='[dockerd]\nbinary = ""\n',
            skip_safe=("DIND_SUPERVISOR_DOCKERD_BINARY",), names=("dockerd.binary",)),
    # Environment.
    RunCase(id="env-tls-san-unknown-type", env={**TLS, "DOCKER_TLS_SAN": "FOO:bar"},
            names=("DOCKER_TLS_SAN", "FOO")),
    RunCase(id="env-tls-san-bad-ip", env={**TLS, "DOCKER_TLS_SAN": "DNS:ok IP:999.1.1.1"},
            names=("DOCKER_TLS_SAN", "999.1.1.1")),
    RunCase(id="env-tls-san-empty-dns", env={**TLS, "DOCKER_TLS_SAN": "DNS:"},
            names=("DOCKER_TLS_SAN", "DNS:")),
    # DOCKER_HOST that is not unix:// is ignored (docker:dind's rule); our own setting is not.
    RunCase(id="env-dockerd-host-tcp", env={"DIND_SUPERVISOR_DOCKERD_HOST": "tcp://127.0.0.1:2375"},
            names=("DIND_SUPERVISOR_DOCKERD_HOST", "tcp://127.0.0.1:2375", "unix socket")),
    RunCase(id="env-dockerd-host-no-scheme",
            env={"DIND_SUPERVISOR_DOCKERD_HOST": "/var/run/docker.sock"},
            names=("DIND_SUPERVISOR_DOCKERD_HOST", "/var/run/docker.sock")),
    RunCase(id="env-dockerd-host-empty-path", env={"DIND_SUPERVISOR_DOCKERD_HOST": "unix://"},
            names=("DIND_SUPERVISOR_DOCKERD_HOST", "unix://")),
    RunCase(id="env-unknown-variable", env={"DIND_SUPERVISOR_NOPE": "1"},
            names=("DIND_SUPERVISOR_NOPE", "no such setting")),
    RunCase(id="env-bad-bool", env={"DIND_SUPERVISOR_DOCKERD_LIVE_RESTORE": "maybe"},
            names=("DIND_SUPERVISOR_DOCKERD_LIVE_RESTORE", "maybe")),
    RunCase(id="env-out-of-range", env={"DIND_SUPERVISOR_LIVENESS_FAILURES": "0"},
            names=("DIND_SUPERVISOR_LIVENESS_FAILURES", "liveness.failures")),
    RunCase(id="env-config-missing", env={"DIND_SUPERVISOR_CONFIG": "/run/no-such.toml"},
            names=("DIND_SUPERVISOR_CONFIG", "/run/no-such.toml", "not found")),
    RunCase(id="env-certdir-is-a-file", env={"DOCKER_TLS_CERTDIR": "/certs/not-a-dir"},
            certs=certdir_is_a_file, names=("/certs/not-a-dir",)),
    # A program to run instead of the agent (docker:dind's `IMAGE sh`) that does not exist.
    RunCase(id="exec-program-not-found", args=("--", "no-such-program", "-x"), code=127,
            names=("no-such-program", "No such file")),
    # Flags.
    RunCase(id="flag-unknown", args=("--no-such-flag",), names=("--no-such-flag",)),
    RunCase(id="flag-missing-value", args=("--config",), names=("--config", "expected one")),
    RunCase(id="flag-bad-duration", args=("--liveness-interval", "soon"),
            names=("--liveness-interval", "liveness.interval", "'soon'")),
    RunCase(id="flag-bad-listen", args=("--http-listen", "nowhere"),
            names=("--http-listen", "http.listen", "'nowhere'")),
    # An address that cannot be bound is a configuration error: exit 2 before dockerd runs.
    RunCase(id="flag-listen-without-port", args=("--http-listen", "::1"),
            names=("http-listen", "::1")),
    RunCase(id="flag-listen-unresolvable", args=("--http-listen", "no-such-host.invalid:9324"),
            names=("http-listen", "no-such-host.invalid")),
    RunCase(id="http-port-in-use",
            setup=f"({PYTHON} -c 'import socket, time; s = socket.socket();"
                  " s.bind((\"0.0.0.0\", 9324)); s.listen(); time.sleep(300)' &)"
                  " && until ss -Hltn sport = :9324 | grep -q LISTEN; do sleep 0.05; done",
            names=("http-listen", "9324", "Address already in use")),
    RunCase(id="flag-bad-key-type", args=("--tls-key-type", "dsa"),
            names=("tls.key_type", "'dsa'")),
    RunCase(id="flag-bad-policy-mode", args=("--policy-mode", "maybe"),
            names=("policy.mode", "maybe")),
    RunCase(id="flag-bad-mode-octal", args=("--tls-client-key-mode", "rw-r--r--"),
            names=("tls.client_key_mode", "rw-r--r--")),
    # Certificate files (TLS on; the certdir starts as a valid agent-issued set).
    RunCase(id="cert-truncated", env=TLS, certs=truncated_server_cert,
            names=("/certs/server/cert.pem", "not a valid PEM")),
    RunCase(id="cert-swapped-cert-and-key", env=TLS, certs=swapped_server_cert_and_key,
            names=("/certs/server/",)),
    RunCase(id="cert-wrong-key", env=TLS, certs=wrong_server_key,
            names=("/certs/server/key.pem", "/certs/server/cert.pem")),
    RunCase(id="cert-truncated-ca-key", env=TLS, certs=truncated_ca_key,
            names=("/certs/ca/key.pem",)),
    RunCase(id="cert-expired-user-ca", env=TLS, certs=expired_user_ca,
            names=("/certs/server/ca.pem", "expired")),
    RunCase(id="cert-key-symlink-elsewhere", env=TLS, certs=key_symlink_elsewhere,
            names=("/certs/server/key.pem",)),
    RunCase(id="cert-client-dir-symlink-elsewhere", env=TLS, certs=client_dir_symlink_elsewhere,
            names=("/certs/client/key.pem",)),
    # dockerd's configuration: daemon.json and flags. Refused before dockerd's spawn when the
    # agent can tell; else at dockerd's first exit, quoting its line (no second start).
    RunCase(id="daemon-json-hosts", daemon_json='{"hosts": ["tcp://0.0.0.0:2375"]}',
            names=("/etc/docker/daemon.json", "hosts", "remove `hosts`"), within=5),
    RunCase(id="daemon-json-syntax", daemon_json='{\n  "debug": true,\n}\n',
            names=("/etc/docker/daemon.json", "line 3 column 1", "comma"), within=5),
    RunCase(id="daemon-json-storage-driver", daemon_json='{"storage-driver": "bogus"}',
            names=("/etc/docker/daemon.json", "storage-driver", "'bogus'", "overlay2"),
            within=5),
    RunCase(id="daemon-json-tls-clash", env=TLS, daemon_json='{"tlsverify": true}',
            names=("/etc/docker/daemon.json", "tlsverify", "DOCKER_TLS_CERTDIR"), within=5),
    RunCase(id="daemon-json-data-root-clash", daemon_json='{"data-root": "/srv/docker"}',
            names=("data-root", "DIND_SUPERVISOR_DOCKERD_DATA_ROOT"), within=5),
    RunCase(id="daemon-json-unknown-key-real-dockerd", daemon_json='{"not-an-option": 1}',
            skip_safe=("DIND_SUPERVISOR_DOCKERD_BINARY", "DIND_SUPERVISOR_RESTART_MAX_FAILURES"),
            names=("don't match any configuration option: not-an-option", "not restarting",
                   "remove or rename"), within=10),
    RunCase(id="daemon-json-wrong-type-real-dockerd", daemon_json='{"debug": "yes"}',
            skip_safe=("DIND_SUPERVISOR_DOCKERD_BINARY", "DIND_SUPERVISOR_RESTART_MAX_FAILURES"),
            names=("cannot unmarshal string", "`debug`", "bool"), within=10),
    RunCase(id="dockerd-unknown-flag-real-dockerd", args=("--", "--no-such-dockerd-flag"),
            skip_safe=("DIND_SUPERVISOR_DOCKERD_BINARY", "DIND_SUPERVISOR_RESTART_MAX_FAILURES"),
            names=("unknown flag: --no-such-dockerd-flag", "remove --no-such-dockerd-flag"),
            within=10),
    RunCase(id="dockerd-binary-missing",
            env={"DIND_SUPERVISOR_DOCKERD_BINARY": "/run/no-such-dockerd"},
            skip_safe=("DIND_SUPERVISOR_DOCKERD_BINARY",),
            names=("/run/no-such-dockerd", "--dockerd-binary"), within=5),
    # A full, nearly full or inode-less data root: refused before anything is written there.
    RunCase(id="dataroot-full", disk=DiskImage(size_mib=2, fill=FILL),
            names=("/var/lib/docker", "(nearly) full", "0 B free", "min_free"), within=5),
    RunCase(id="dataroot-nearly-full", disk=DiskImage(size_mib=16, fill=(
                "fallocate -l 12M /var/lib/docker/fill")),
            env={"DIND_SUPERVISOR_DATAROOT_MIN_FREE": "8MiB"},
            names=("/var/lib/docker", "MiB free of", "below the 8.0 MiB needed"), within=5),
    RunCase(id="dataroot-no-inodes", disk=DiskImage(size_mib=16, inodes=64, fill=(
                "i=0; while touch /var/lib/docker/i$i 2>/dev/null; do i=$((i+1)); done")),
            env={"DIND_SUPERVISOR_DATAROOT_MIN_FREE": "1MiB"},
            names=("/var/lib/docker", "free inodes of", "below the 1000 needed"), within=5),
    # With GC on, a full disk is let through for dockerd to prune; dockerd cannot even
    # start there, and the give-up (exit 1) says the disk is full.
    RunCase(id="dataroot-full-gc-real-dockerd", disk=DiskImage(size_mib=8, fill=FILL),
            env={"DIND_SUPERVISOR_DATAROOT_GC_ENABLED": "true"},
            skip_safe=("DIND_SUPERVISOR_DOCKERD_BINARY",), code=1,
            names=("data_root_low_space", "run_not_recorded", "the disk is full"), within=30),
    RunCase(id="toml-dataroot-min-free-garbage", config='[dataroot]\nmin_free = "lots"\n',
            names=("dataroot.min_free", "lots", "size")),
    RunCase(id="env-dataroot-low-space-bad", env={"DIND_SUPERVISOR_DATAROOT_LOW_SPACE": "maybe"},
            names=("DIND_SUPERVISOR_DATAROOT_LOW_SPACE", "refuse or warn")),
    # Data root.
    RunCase(id="dataroot-not-a-directory", args=("--dockerd-data-root", "/var/lib/docker/file"),
            setup="echo data > /var/lib/docker/file",
            names=("/var/lib/docker/file", "not a directory")),
    RunCase(id="dataroot-read-only", setup="mount -o remount,bind,ro /var/lib/docker",
            names=("/var/lib/docker", "Read-only")),
]


def tree_hashes(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def destroyed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return [name for name, digest in before.items() if after.get(name) != digest]


@pytest.fixture(scope="module")
def valid_certdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    certdir = tmp_path_factory.mktemp("valid-certs") / "certs"
    made = subprocess.run(
        [PYTHON, "-m", "supervisor", "certs", "generate", "--certdir", str(certdir)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(certdir.parent)},
    )
    assert made.returncode == 0, made.stderr
    return certdir


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=f"BUG {c.bug}")]
                  if c.bug else []) for c in RUN_CASES],
)
def test_bad_run_input_exits_with_its_code_naming_it(
    case: RunCase, tmp_path: Path, valid_certdir: Path, reliability_tally: ReliabilityTally
) -> None:
    """A bad file, variable, flag, certificate or data root: documented exit code, the input
    named in the message, nothing destroyed."""
    root = tmp_path / "box"
    certs = root / "certs"
    shutil.copytree(valid_certdir, certs, symlinks=True)
    data_root = root / "lib"
    data_root.mkdir(parents=True)
    (data_root / "volumes").mkdir()
    (data_root / "volumes" / "keep.txt").write_text("state from an earlier run\n")
    run_dir = root / "run"
    (run_dir / "fakebin").mkdir(parents=True)
    fake = run_dir / "fakebin" / "dockerd"
    fake.write_text(FAKE_DOCKERD)
    fake.chmod(0o755)
    args = list(case.args)
    if case.config is not None:
        data = case.config.encode() if isinstance(case.config, str) else case.config
        (run_dir / "case.toml").write_bytes(data)
        args = ["--config", "/run/case.toml", *args]
    if case.certs is not None:
        case.certs(certs, data_root)
    env = {k: v for k, v in SAFE_ENV.items() if k not in case.skip_safe}
    setups = [case.setup] if case.setup else []
    if case.daemon_json is not None:
        (run_dir / "daemon.json").write_text(case.daemon_json)
        setups.append(DAEMON_JSON_SETUP)
    if case.disk is not None:
        case.disk.make(run_dir)
        setups.append(case.disk.setup())
    before = {"certs": tree_hashes(certs), "lib": tree_hashes(data_root)}
    box = Sandbox(root, env={**env, **case.env}, setup=" && ".join(setups),
                  command=[PYTHON, "-m", "supervisor", "run", *args])
    started = time.monotonic()
    box.start()
    try:
        code: int | None = box.wait(timeout=60)
        took: float | None = time.monotonic() - started  # namespace, mounts, agent: all in
    except subprocess.TimeoutExpired:
        code = took = None
    finally:
        box.destroy()
        poll(lambda: not box.ns_processes(), timeout=20, what="an empty namespace")
    output = box.log_text()
    after = {"certs": tree_hashes(certs), "lib": tree_hashes(data_root)}
    lost = destroyed(before["certs"], after["certs"]) + destroyed(before["lib"], after["lib"])
    if case.disk is not None:
        names, lock = disk_contents(run_dir)
        if lock != OLD_LOCK and case.code == 2:
            lost.append(f"lock file: {lock!r}")
        written = set(names) - {"lost+found", ".dind-supervisor.lock", "fill"} - {
            n for n in names if n.startswith("i") and n[1:].isdigit()}
        if case.code == 2 and written:
            lost.append(f"written on a refused data root: {sorted(written)}")
        assert lock.strip(), "the lock file was left empty"
    named = [word for word in case.names if word not in output]
    late = case.within is not None and (took is None or took > case.within)
    reliability_tally.bad_inputs += 1
    if lost:
        reliability_tally.data_lost += 1
    if code == case.code and not named and not late:
        reliability_tally.clear_errors += 1
    if took is not None:
        print(f"FIGURE {case.id}: exit {code} after {took:.2f} s")
    assert not lost, f"destroyed: {lost}"
    assert code == case.code, f"exit {code}, expected {case.code}:\n{output[-3000:]}"
    assert not named, f"the message does not name {named}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert not late, f"exit after {took} s, expected within {case.within} s"
    assert not (run_dir / "fake-dockerd-started").exists() or case.code != 2, (
        "dockerd was started before the bad input was refused"
    )


# The HTTP endpoint ---------------------------------------------------------------

HTTP_CLIENT = textwrap.dedent(
    """
    import json, socket, sys, time
    spec = json.loads(sys.stdin.readline())

    def exchange(raw, timeout=5.0):
        s = socket.create_connection(("127.0.0.1", 9324), timeout=timeout)
        try:
            s.sendall(raw.encode("latin-1"))
            data = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, TimeoutError, socket.timeout):
                    break
                if not chunk:
                    break
                data += chunk
                if b"\\r\\n\\r\\n" in data and b"Connection: close" not in raw.encode():
                    head = data.split(b"\\r\\n\\r\\n", 1)[0].decode("latin-1")
                    length = [l for l in head.split("\\r\\n")
                              if l.lower().startswith("content-length:")]
                    body = data.split(b"\\r\\n\\r\\n", 1)[1]
                    if length and len(body) >= int(length[0].split(":")[1]):
                        break
            return data.decode("latin-1", "replace")
        finally:
            s.close()

    if spec["kind"] == "raw":
        print(json.dumps({"response": exchange(spec["raw"])}))
    else:
        idle = []
        for _ in range(spec["count"]):
            idle.append(socket.create_connection(("127.0.0.1", 9324), timeout=5))
        print(json.dumps({"opened": len(idle)}), flush=True)
        sys.stdin.readline()  # the test looks at the agent while they are open
        started = time.monotonic()
        answer = exchange("GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        print(json.dumps({"response": answer, "seconds": time.monotonic() - started}),
              flush=True)
        sys.stdin.readline()
        for s in idle:
            s.close()
    """
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpCase:
    id: str
    raw: str
    status: tuple[int, ...]
    names: tuple[str, ...] = ()


HUGE = "x" * 100_000
HTTP_CASES = [
    HttpCase(id="garbage-request-line", raw="GARBAGE\r\n\r\n", status=(400,),
             names=("Bad Request",)),
    HttpCase(id="bad-http-version", raw="GET /healthz HTTP/9.Z\r\nHost: x\r\n\r\n",
             status=(400, 505), names=("version",)),
    HttpCase(id="header-without-colon", raw="GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
             status=(400,), names=("Bad Request",)),
    HttpCase(id="huge-header", raw=f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {HUGE}\r\n\r\n",
             status=(400, 431), names=("8190",)),
    HttpCase(id="huge-url", raw=f"GET /{HUGE} HTTP/1.1\r\nHost: x\r\n\r\n",
             status=(400, 414), names=("8190",)),
    HttpCase(id="many-headers",
             raw="GET /healthz HTTP/1.1\r\nHost: x\r\n"
                 + "".join(f"X-H{i}: {i}\r\n" for i in range(20_000)) + "\r\n",
             status=(400, 431), names=("Bad Request",)),
    HttpCase(id="bad-content-length",
             raw="POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
             status=(400,), names=("Content-Length",)),
    HttpCase(id="wrong-method", raw="DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close"
             "\r\n\r\n", status=(405,), names=("Method Not Allowed",)),
    HttpCase(id="unknown-path", raw="GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection:"
             " close\r\n\r\n", status=(404,), names=("Not Found",)),
]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One agent serving its endpoint (dockerd real), shared by the HTTP cases."""
    box = Sandbox(tmp_path_factory.mktemp("http-box"))
    box.start()
    try:
        box.wait_ready(timeout=60)
        yield box
    finally:
        box.destroy()
        poll(lambda: not box.ns_processes(), timeout=20, what="an empty namespace")


def _client(box: Sandbox) -> subprocess.Popen[str]:
    """A Python client inside the sandbox's network; its spec is the first line of stdin."""
    assert box.pid1 is not None
    return subprocess.Popen(
        ["nsenter", "-t", str(box.pid1), "-n", "--", PYTHON, "-c", HTTP_CLIENT],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _status_line(response: str) -> int | None:
    first = response.split("\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else None


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.id for c in HTTP_CASES])
def test_bad_http_request_gets_its_status_and_the_endpoint_lives_on(
    case: HttpCase, endpoint: Sandbox, reliability_tally: ReliabilityTally
) -> None:
    """A malformed or oversized request gets a 4xx/5xx that says why; nothing restarts."""
    box = endpoint
    restarts = box.status()["dockerd"]["restarts"]
    before = {"certs": tree_hashes(box.certs), "lib": tree_hashes(box.data_root)}
    client = _client(box)
    out, err = client.communicate(json.dumps({"kind": "raw", "raw": case.raw}) + "\n", timeout=30)
    assert client.returncode == 0, err
    response = json.loads(out)["response"]
    status = _status_line(response)
    named = [word for word in case.names if word.lower() not in response.lower()]
    lost = destroyed(before["certs"], tree_hashes(box.certs)) + destroyed(
        before["lib"], tree_hashes(box.data_root)
    )
    alive = box.alive and box.http("/healthz")[0] == 200
    reliability_tally.bad_inputs += 1
    if lost:
        reliability_tally.data_lost += 1
    if status in case.status and not named and alive:
        reliability_tally.clear_errors += 1
    assert status in case.status, response[:2000]
    assert not named, f"the answer does not say {named}: {response[:2000]}"
    assert alive
    assert box.status()["dockerd"]["restarts"] == restarts
    assert not lost


def test_many_idle_connections_are_bounded(
    endpoint: Sandbox, reliability_tally: ReliabilityTally
) -> None:
    """1000 idle connections: /healthz still answers at once and the agent's fds come back."""
    box = endpoint
    agent = box.agent_pid()
    assert agent is not None

    def fds() -> int:
        return len(os.listdir(f"/proc/{agent}/fd"))

    baseline = fds()
    client = _client(box)
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        client.stdin.write(json.dumps({"kind": "idle", "count": 1000}) + "\n")
        client.stdin.flush()
        opened = json.loads(client.stdout.readline())
        assert opened == {"opened": 1000}
        while_open = fds()
        client.stdin.write("\n")
        client.stdin.flush()
        answer = json.loads(client.stdout.readline())
        client.stdin.write("\n")
        client.stdin.flush()
        client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    settled = poll(lambda: fds() <= baseline + 4, timeout=20, what="the agent's fds to settle")
    ok = _status_line(answer["response"]) == 200 and answer["seconds"] < 2.0 and bool(settled)
    reliability_tally.bad_inputs += 1
    if ok:
        reliability_tally.clear_errors += 1
    assert _status_line(answer["response"]) == 200, answer
    assert answer["seconds"] < 2.0, answer
    assert while_open <= baseline + 1000 + 8, (baseline, while_open)
    assert box.alive


def test_check_entered_without_the_pid_namespace_explains_instead_of_crashing(
    endpoint: Sandbox, reliability_tally: ReliabilityTally
) -> None:
    """`nsenter -n -m` (no -p) then `check`: /proc is the container's, /proc/self does not
    exist; check says so with the remedy, still reports the other topics, no traceback."""
    assert endpoint.pid1 is not None
    result = subprocess.run(
        ["nsenter", "-t", str(endpoint.pid1), "-n", "-m", "--", PYTHON, "-m", "supervisor",
         "check"], capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
    output = result.stdout + result.stderr
    words = ("another pid namespace", "nsenter -t PID -m -n -p", "dockerd executable")
    named = [word for word in words if word not in output]
    clear = result.returncode in (0, 1) and not named and "Traceback" not in output
    reliability_tally.bad_inputs += 1
    if clear:
        reliability_tally.clear_errors += 1
    assert "Traceback" not in output, output
    assert result.returncode in (0, 1), output
    assert not named, output
