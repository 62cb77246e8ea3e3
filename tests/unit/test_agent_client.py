"""Tests for supervisor.agent_client: which endpoints are asked, and unreachable vs answered."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from pathlib import Path

import pytest

from supervisor import agent_client, config
from supervisor.agent_client import Endpoint, Unreachable, ask, endpoints, reason
from supervisor.errors import ConfigError
from tests.unit.fake_agent import serve

pytestmark = pytest.mark.unit


def _config(**env: str) -> config.Config:
    return config.load(env=env)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Which endpoints ------------------------------------------------------------------


def test_url_alone_when_given(tmp_path: Path) -> None:
    """--url is the only endpoint asked, even when the default socket exists."""
    sock = tmp_path / "agent.sock"
    sock.touch()
    cfg = config.load(env={}, flags={("http", "socket"): str(sock)})
    assert endpoints(cfg, url="http://10.0.0.1:1/") == [Endpoint(url="http://10.0.0.1:1")]


def test_socket_option_alone_when_given() -> None:
    """--socket is the only endpoint asked, whether or not it exists yet."""
    assert endpoints(_config(), socket_path="/no/such.sock") == [
        Endpoint(socket_path="/no/such.sock")
    ]


def test_socket_set_on_purpose_is_the_only_one(tmp_path: Path) -> None:
    """DIND_SUPERVISOR_HTTP_SOCKET names the socket to ask: no TCP fallback behind it."""
    cfg = _config(DIND_SUPERVISOR_HTTP_SOCKET=str(tmp_path / "missing.sock"))
    assert endpoints(cfg) == [Endpoint(socket_path=str(tmp_path / "missing.sock"))]


def test_default_socket_first_when_it_exists_then_tcp(tmp_path: Path) -> None:
    """Not set on purpose: the socket when its file exists, then TCP on loopback."""
    sock = tmp_path / "agent.sock"
    cfg = config.Config(http=config.HttpConfig(socket=str(sock)))  # no source: a default
    assert endpoints(cfg) == [Endpoint(url="http://127.0.0.1:9324")]
    sock.touch()
    assert endpoints(cfg) == [Endpoint(socket_path=str(sock)), Endpoint(url="http://127.0.0.1:9324")]


def test_tcp_off_leaves_the_socket_even_if_missing() -> None:
    """http.listen empty: the socket is still asked, so the error says 'no such socket'."""
    cfg = config.load(env={}, flags={("http", "listen"): ""})
    assert endpoints(cfg) == [Endpoint(socket_path=config.HttpConfig().socket)]


def test_endpoint_off_is_a_configuration_error() -> None:
    """Both http.listen and http.socket empty: nothing to ask, exit 2 naming the settings."""
    cfg = config.load(env={}, flags={("http", "listen"): "", ("http", "socket"): ""})
    with pytest.raises(ConfigError, match=r"http\.listen and http\.socket are both empty"):
        endpoints(cfg)


@pytest.mark.parametrize("url", ["not a url", "ftp://host:1", "http://", "http://h:99999"])
def test_bad_url_is_a_usage_error(url: str) -> None:
    """A --url that is not http(s)://HOST[:PORT] is refused before any request."""
    with pytest.raises(ConfigError) as caught:
        endpoints(_config(), url=url)
    assert caught.value.exit_code == 2
    assert caught.value.key == "--url"


def test_agent_url_brackets_ipv6_and_uses_loopback_for_wildcards() -> None:
    """A wildcard listener is asked on 127.0.0.1; an IPv6 host gets brackets."""
    assert agent_client.agent_url(_config()) == "http://127.0.0.1:9324"
    cfg = config.load(env={}, flags={("http", "listen"): "[::1]:9400"})
    assert agent_client.agent_url(cfg) == "http://[::1]:9400"


# Asking ---------------------------------------------------------------------------


def test_answer_over_the_unix_socket_names_the_peer(tmp_path: Path) -> None:
    """A GET over the socket returns status and body, and the listener's pid (SO_PEERCRED)."""
    with serve(tmp_path / "agent.sock") as agent:
        agent.document = {"schema": 1, "x": "y"}
        answer = ask([Endpoint(socket_path=str(agent.path))], "/status", timeout=2)
    assert answer.status == 200
    assert answer.document() == {"schema": 1, "x": "y"}
    assert answer.peer_pid == os.getpid()
    assert str(answer.endpoint) == f"unix:{agent.path}"


def test_503_is_an_answer_not_a_failure(tmp_path: Path) -> None:
    """/readyz 503 comes back as an answer: the agent was reached."""
    with serve(tmp_path / "agent.sock") as agent:
        answer = ask([Endpoint(socket_path=str(agent.path))], "/readyz", timeout=2)
    assert answer.status == 503


def test_missing_socket_is_no_such_socket(tmp_path: Path) -> None:
    """A socket path with no file: 'no such socket'."""
    where = Endpoint(socket_path=str(tmp_path / "none.sock"))
    with pytest.raises(Unreachable) as caught:
        ask([where], "/status", timeout=1)
    assert caught.value.describe() == f"cannot reach the agent at unix:{tmp_path}/none.sock:" \
        " no such socket"


def test_stale_socket_is_connection_refused(tmp_path: Path) -> None:
    """A socket file nobody listens on (an agent that stopped): 'connection refused'."""
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # bound, never listening: what a dead agent leaves
        with pytest.raises(Unreachable, match="connection refused"):
            ask([Endpoint(socket_path=str(path))], "/status", timeout=1)


def test_silent_listener_is_no_answer_in_time(tmp_path: Path) -> None:
    """A listener that never answers: 'no answer within N s', after about N s."""
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen(1)  # the kernel completes the connect; nobody reads
        with pytest.raises(Unreachable, match=r"no answer within 0\.2 s"):
            ask([Endpoint(socket_path=str(path))], "/status", timeout=0.2)


def test_falls_back_to_tcp_and_names_every_failure(tmp_path: Path) -> None:
    """Socket refused, TCP answering: the TCP answer; both refused: both named."""
    path = tmp_path / "stale.sock"
    handler = type("H", (_Ok,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(path))
            url = f"http://127.0.0.1:{httpd.server_address[1]}"
            answer = ask([Endpoint(socket_path=str(path)), Endpoint(url=url)], "/x", timeout=2)
            assert (answer.status, answer.body, answer.peer_pid) == (200, b"ok", None)
            closed = f"http://127.0.0.1:{_free_port()}"
            with pytest.raises(Unreachable) as caught:
                ask([Endpoint(socket_path=str(path)), Endpoint(url=closed)], "/x", timeout=2)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert caught.value.describe() == (
        f"cannot reach the agent at unix:{path} (connection refused)"
        f" or at {closed} (connection refused)"
    )


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_reasons_read_like_the_failure() -> None:
    """Each kind of failure gets its few words; a mode-0600 socket's refusal says why."""
    unix, tcp = Endpoint(socket_path="/s"), Endpoint(url="http://h:1")
    assert reason(PermissionError(13, "Permission denied"), unix, 1).startswith(
        "permission denied (the socket is mode 0600"
    )
    assert reason(PermissionError(13, "Permission denied"), tcp, 1) == "permission denied"
    assert reason(TimeoutError(), tcp, 2.5) == "no answer within 2.5 s"
    assert reason(OSError(113, "No route to host"), tcp, 1) == "no route to host"
    assert reason(ConnectionResetError(104, "reset"), tcp, 1) == (
        "the connection was closed without an answer"
    )


def test_client_certificate_missing_is_a_certificate_error(tmp_path: Path) -> None:
    """http.tls with no client files: a clear CertificateError, not a traceback."""
    from supervisor.errors import CertificateError

    cfg = config.load(env={"DOCKER_TLS_CERTDIR": str(tmp_path)},
                      flags={("http", "tls"): True})
    with pytest.raises(CertificateError, match="cannot load the client certificate"):
        endpoints(cfg)
