"""PID 1's early sockets: opened from the previous run's record, under the record's conditions."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor import launch, prelisten
from supervisor.tls.files import TlsFiles
from tests.unit.test_containerd import Recorder


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    found: list[socket.socket] = []
    yield found
    for sock in found:
        sock.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _client_dir(tmp_path: Path, files: tuple[str, ...] = prelisten.CLIENT_FILES) -> Path:
    folder = tmp_path / "client"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("x")
    return folder


def test_a_recorded_tcp_port_listens_before_anyone_accepts(
    tmp_path: Path, opened: list[socket.socket]
) -> None:
    """A client connecting before dockerd exists is queued, not refused."""
    port = _free_port()
    record = tmp_path / prelisten.RECORD_NAME
    prelisten.write_record(str(record), [prelisten.tcp_row("127.0.0.1", port,
                                                           str(_client_dir(tmp_path)))])
    opened += prelisten.open_recorded(str(record))
    assert len(opened) == 1
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # completed by the kernel's backlog: nobody has called accept()


def test_the_tls_port_stays_closed_without_every_client_file(
    tmp_path: Path, opened: list[socket.socket]
) -> None:
    """GitLab starts the job when a service port accepts: not before /certs/client is whole."""
    port = _free_port()
    record = tmp_path / prelisten.RECORD_NAME
    partial = _client_dir(tmp_path, files=("ca.pem", "cert.pem"))
    prelisten.write_record(str(record), [prelisten.tcp_row("127.0.0.1", port, str(partial))])
    opened += prelisten.open_recorded(str(record))
    assert opened == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize("files", [prelisten.CLIENT_FILES, ("ca.pem", "cert.pem"), ()])
@pytest.mark.parametrize("empty", [None, "key.pem"])
def test_pid_1_and_the_agent_agree_on_when_client_files_are_present(
    tmp_path: Path, files: tuple[str, ...], empty: str | None
) -> None:
    """PID 1 opens the TLS port early exactly when the agent would listen on it."""
    folder = _client_dir(tmp_path, files)
    if empty in files:
        (folder / empty).write_text("")  # a half-written file is not a certificate yet
    assert prelisten.client_files_present(str(folder)) == TlsFiles.of(
        tmp_path, "client").all_present()


def test_a_plain_port_needs_no_certificates(tmp_path: Path, opened: list[socket.socket]) -> None:
    record = tmp_path / prelisten.RECORD_NAME
    prelisten.write_record(str(record), [prelisten.tcp_row("127.0.0.1", _free_port(), None)])
    opened += prelisten.open_recorded(str(record))
    assert len(opened) == 1


def test_a_unix_socket_gets_the_recorded_mode_and_replaces_a_stale_file(
    tmp_path: Path, opened: list[socket.socket]
) -> None:
    path = tmp_path / "docker.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file of a dead daemon
    record = tmp_path / prelisten.RECORD_NAME
    prelisten.write_record(str(record), [prelisten.unix_row(str(path), 0o660, os.getgid())])
    opened += prelisten.open_recorded(str(record))
    assert len(opened) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))


def test_a_live_unix_socket_or_a_plain_file_is_left_alone(
    tmp_path: Path, opened: list[socket.socket]
) -> None:
    """Another daemon's socket is not taken over (the agent names that problem), a file is
    not deleted."""
    live_path, file_path = tmp_path / "live.sock", tmp_path / "file.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(live_path))
    live.listen(1)
    file_path.write_text("keep me")
    record = tmp_path / prelisten.RECORD_NAME
    prelisten.write_record(str(record), [prelisten.unix_row(str(live_path), 0o660, 0),
                                         prelisten.unix_row(str(file_path), 0o660, 0)])
    try:
        opened += prelisten.open_recorded(str(record))
        assert opened == []
        assert file_path.read_text() == "keep me"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(live_path))  # still the other process's socket
    finally:
        live.close()


@pytest.mark.parametrize("line", [
    "", "tcp", "tcp docker 2376 -", "tcp 127.0.0.1 notaport -", "tcp 127.0.0.1 99999 -",
    "unix relative.sock 660 0", "unix /x 9z9 0", "udp 127.0.0.1 53 -", "\x00\x01binary",
])
def test_odd_lines_are_skipped_never_raised(
    tmp_path: Path, opened: list[socket.socket], line: str
) -> None:
    """The record is a hint: PID 1 must never fail on it (a host name is not resolved
    either: PID 1 must not wait on DNS)."""
    record = tmp_path / prelisten.RECORD_NAME
    record.write_text(line + "\n")
    opened += prelisten.open_recorded(str(record))
    assert opened == []


def test_no_record_or_an_unreadable_one_opens_nothing(tmp_path: Path) -> None:
    assert prelisten.open_recorded(str(tmp_path / "absent")) == []
    assert prelisten.open_recorded(str(tmp_path)) == []  # a directory


def test_no_rows_remove_the_record(tmp_path: Path) -> None:
    record = tmp_path / prelisten.RECORD_NAME
    prelisten.write_record(str(record), [prelisten.tcp_row("127.0.0.1", 2376, None)])
    prelisten.write_record(str(record), [])
    assert not record.exists()


def test_the_record_is_found_where_the_data_root_is() -> None:
    assert prelisten.record_path({}) == "/var/lib/docker/" + prelisten.RECORD_NAME
    assert prelisten.record_path({prelisten.DATA_ROOT_ENV: "/data"}) == (
        "/data/" + prelisten.RECORD_NAME)
    assert prelisten.record_path({}, "/srv/docker") == "/srv/docker/" + prelisten.RECORD_NAME


class _Item:
    def __init__(self, adopted: bool) -> None:
        self.adopted = adopted

    def fileno(self) -> int:
        return 3


class _Listeners:
    def __init__(self, *adopted: bool) -> None:
        self.items = [_Item(flag) for flag in adopted]


@pytest.mark.parametrize(("adopted", "inherited", "expected"), [
    # all the store's sockets adopted: deposit only the new one
    ((True, False), 1, [("store", "listener")]),
    # PID 1 opened one this configuration does not name: the store is emptied and refilled
    ((True, False), 2, [("remove", "listener"), ("store", "listener"), ("store", "listener")]),
    ((False,), 0, [("store", "listener")]),
])
def test_sockets_not_kept_leave_pid_1s_store_too(
    adopted: tuple[bool, ...], inherited: int, expected: list[tuple[str, object]]
) -> None:
    """Else a client could queue for good on a port nobody will ever accept on."""
    depositor = Recorder()
    launch._deposit_listeners(_Listeners(*adopted), depositor,  # type: ignore[arg-type]
                              inherited=inherited, log=launch.EarlyLog())
    assert depositor.calls == expected
