"""Real TLS handshakes on loopback with the issued folders, as dockerd and the CLI use them."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tls_helpers import SANS

from supervisor.tls import certs, rotation
from supervisor.tls.model import CertSpec

pytestmark = pytest.mark.unit


def server_context(folder: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    ctx.load_verify_locations(folder / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # dockerd --tlsverify
    return ctx


def client_context(folder: Path, *, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca or folder / "ca.pem")
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ctx


def exchange(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> tuple[str, str]:
    """One connection: (client outcome, server outcome), each 'ok' or the SSL error."""
    outcome: dict[str, str] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(5)
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.recv(4))
                outcome["server"] = "ok"
            except (ssl.SSLError, OSError) as err:
                outcome["server"] = f"error: {err}"

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client.wrap_socket(raw, server_hostname=name) as tls:
                    tls.sendall(b"ping")
                    # TLS 1.3: a refused client certificate shows up on the first read.
                    got = tls.recv(4)
                outcome["client"] = "ok" if got == b"ping" else f"error: got {got!r}"
        except (ssl.SSLError, OSError) as err:
            outcome["client"] = f"error: {err}"
        finally:
            thread.join(timeout=10)
    return outcome["client"], outcome["server"]


@pytest.fixture
def issued(tmp_path: Path) -> Path:
    certdir = tmp_path / "certs"
    certs.ensure(certdir, CertSpec(), SANS, datetime.now(UTC))
    return certdir


@pytest.mark.parametrize("name", ["localhost", "docker", "127.0.0.1"])
def test_client_folder_talks_to_server_folder(issued: Path, name: str) -> None:
    """server/ and client/ complete a mutual TLS handshake by name and by IP."""
    result = exchange(server_context(issued / "server"), client_context(issued / "client"), name)
    assert result == ("ok", "ok")


def test_client_cert_from_another_ca_is_refused(issued: Path, tmp_path: Path) -> None:
    """A client certificate from another CA is refused by the server (--tlsverify)."""
    other = tmp_path / "other"
    certs.ensure(other, CertSpec(), SANS, datetime.now(UTC))
    client = client_context(other / "client", ca=issued / "client" / "ca.pem")
    client_result, server_result = exchange(server_context(issued / "server"), client, "docker")
    assert server_result.startswith("error")
    assert "certificate" in server_result
    assert client_result.startswith("error")


def test_name_not_in_sans_is_refused(issued: Path) -> None:
    """A client connecting by a name the certificate does not cover refuses the server."""
    client_result, _ = exchange(
        server_context(issued / "server"), client_context(issued / "client"), "elsewhere.example"
    )
    assert "match" in client_result or "mismatch" in client_result


def test_handshake_after_forced_rotation(issued: Path) -> None:
    """After `certs rotate` the folders still pair up (same keys, new serials)."""
    rotation.rotate(issued, CertSpec(), SANS, datetime.now(UTC), force=True)
    server, client = server_context(issued / "server"), client_context(issued / "client")
    assert exchange(server, client, "docker") == ("ok", "ok")
