"""dockerd's listening sockets, held by the agent and handed to each dockerd it starts.

Clients must never see "Cannot connect to the Docker daemon" while the agent
lives. So, as systemd's docker.socket does on hosts, the agent binds dockerd's
sockets itself (its unix socket; tcp 2376 with TLS or 2375 without; the
user's own ``-H tcp://`` and ``-H unix://`` addresses) and passes them to
every dockerd through socket activation: the exec wrapper puts them at fds
3.., sets LISTEN_FDS/LISTEN_PID, and dockerd's argv has exactly one
``--host=fd://``. While dockerd restarts, connections wait in the kernel's
backlog instead of being refused. Copies are kept by PID 1 (``fdstore``), so
they also outlive the agent.

Facts this relies on (moby's daemon/listeners and go-systemd's activation):
with TLS every inherited TCP socket is wrapped in TLS and unix sockets stay
plain, so a plain 2375 cannot share a dockerd with a TLS 2376 (the agent
serves 2375 only with TLS off, as docker:dind does); dockerd does not chown
an inherited unix socket, so ``--group`` is applied here (owner root, the
group, mode 0660, as dockerd does for the sockets it creates); go-systemd
unsets LISTEN_* after the first read, hence one ``fd://`` only.

"Safely": a TCP socket is bound at once (a busy port is a configuration
error before anything runs) but listens only once ``listen()`` is called,
after the client certificates exist: CI runners take an open port for "the
service is up". Not held: any ``-H`` the agent cannot bind itself (fd://,
ssh://), or ``IMAGE dockerd ARGS`` (exactly ARGS): dockerd binds then.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.config import Config
from supervisor.dockerd_flags import last_value, option_values
from supervisor.errors import ConfigError
from supervisor.prelisten import BACKLOG, answers

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

PLAIN_TCP_LISTEN = "tcp://0.0.0.0:2375"
ACTIVATION_HOST = "--host=fd://"
_SOCKET_MODE = 0o660
_DEFAULT_GROUP = "docker"
_HOST_OPTIONS = ("--host", "-H")


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    address: str  # unix:///path or tcp://host:port
    source: str  # "agent" or "user"

    @property
    def is_unix(self) -> bool:
        return self.address.startswith("unix://")


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Which sockets the agent holds, and dockerd's arguments without the ones it replaces."""

    endpoints: tuple[Endpoint, ...]
    user_args: tuple[str, ...]
    why_not: str | None = None  # set when nothing is held, and why

    @property
    def active(self) -> bool:
        return bool(self.endpoints)


def served_addresses(argv: Sequence[str], plan: Plan | None) -> list[str]:
    """Where dockerd answers: with held sockets its argv says only ``fd://``."""
    if plan is not None and plan.active:
        return [endpoint.address for endpoint in plan.endpoints]
    return option_values(list(argv[1:]), *_HOST_OPTIONS)


def tcp_ports(addresses: Sequence[str]) -> list[int]:
    """The TCP ports among dockerd's addresses (``tcp://host:port``)."""
    ports = []
    for address in addresses:
        if address.startswith("tcp://"):
            with contextlib.suppress(ValueError):
                ports.append(split_tcp(address)[1])
    return ports


def _without_hosts(args: Sequence[str]) -> list[str]:
    """``args`` minus every --host/-H option (both its forms)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in _HOST_OPTIONS:
            skip = True
            continue
        if arg.startswith(("--host=", "-H=")) or (arg.startswith("-H") and len(arg) > 2):
            continue
        out.append(arg)
    return out


def plan(config: Config, *, tls: bool) -> Plan:
    """The sockets to hold for this configuration (empty with a reason when none)."""
    d = config.dockerd
    if d.exact_args:
        return Plan(endpoints=(), user_args=d.args, why_not="dockerd runs with exactly the given"
                    " arguments (`IMAGE dockerd ARGS`), so it binds its own sockets")
    if not d.socket_activation:
        return Plan(endpoints=(), user_args=d.args,
                    why_not="dockerd.socket_activation is off: dockerd binds its own sockets")
    users = option_values(d.args, *_HOST_OPTIONS)
    odd = [h for h in users if not h.startswith(("unix://", "tcp://"))]
    if odd:
        return Plan(endpoints=(), user_args=d.args, why_not=f"--host {odd[0]} is not a unix://"
                    " or tcp:// address the agent can bind, so dockerd binds its own sockets")
    endpoints = [Endpoint(address=d.host, source="agent")]
    if users:
        endpoints += [Endpoint(address=h, source="user") for h in users if h != d.host]
    elif tls:
        endpoints.append(Endpoint(address=config.tls.listen, source="agent"))
    elif config.plain_tcp_served:
        endpoints.append(Endpoint(address=PLAIN_TCP_LISTEN, source="agent"))
    return Plan(endpoints=tuple(endpoints), user_args=tuple(_without_hosts(d.args)))


def socket_group(args: Sequence[str]) -> tuple[str, int | None]:
    """dockerd's --group (-G): its name or gid, and the gid (None: no such group)."""
    wanted = last_value(args, "--group", "-G") or _DEFAULT_GROUP
    if wanted.isdigit():
        return wanted, int(wanted)
    try:
        return wanted, grp.getgrnam(wanted).gr_gid
    except KeyError:
        return wanted, None


def split_tcp(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(slots=True)
class Listener:
    endpoint: Endpoint
    sock: socket.socket
    adopted: bool = False
    listening: bool = False

    def fileno(self) -> int:
        return self.sock.fileno()


@dataclass(slots=True)
class Listeners:
    """The held sockets; ``listen()`` opens them, ``close()`` at the final stop."""

    plan: Plan
    items: list[Listener] = field(default_factory=list)

    def fds(self) -> list[int]:
        return [item.fileno() for item in self.items]

    def listen(self, *, tcp: bool = True) -> None:
        """Start queueing clients; ``tcp=False`` opens only the unix sockets (a TLS port
        waits for the client certificates, a local socket need not)."""
        for item in self.items:
            if not item.listening and (tcp or item.endpoint.is_unix):
                item.sock.listen(BACKLOG)
                item.listening = True

    async def hold(self, closing: Callable[[], bool], *,
                   task_status: TaskStatus[None] | None = None) -> None:
        """The agent's part: kept while it lives; closed at its end only when ``closing()``
        says dockerd is gone for good (a new agent takes them over otherwise).

        anyio is imported here, not at the top: the launch uses this module before
        dockerd's spawn, when nothing of the event loop is loaded yet."""
        import anyio

        try:
            if task_status is not None:
                task_status.started()
            await anyio.sleep_forever()
        finally:
            if closing():
                self.close()

    def close(self) -> None:
        for item in self.items:
            path = unix_path(item.endpoint.address)
            with contextlib.suppress(OSError):
                item.sock.close()
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # as dockerd removes the sockets it made
        self.items.clear()


def unix_path(address: str) -> str | None:
    return address.removeprefix("unix://") if address.startswith("unix://") else None


def local_address(sock: socket.socket) -> str | None:
    """``unix:///path`` or ``tcp://host:port`` of a bound socket, None when unbound."""
    try:
        name = sock.getsockname()
    except OSError:
        return None
    if sock.family == socket.AF_UNIX:
        return f"unix://{name}" if isinstance(name, str) and name else None
    host, port = name[0], name[1]
    return f"tcp://{host}:{port}" if ":" not in host else f"tcp://[{host}]:{port}"


def _same_tcp(a: str, b: str) -> bool:
    try:
        return split_tcp(a) == split_tcp(b)
    except ValueError:
        return False


def open_listeners(
    plan_: Plan, config: Config, inherited: Sequence[socket.socket] = ()
) -> Listeners:
    """Adopt inherited sockets matching the plan, bind the others (not listening yet).

    Raises ConfigError (exit 2) for an address that cannot be bound, before
    anything else runs. Inherited sockets the plan does not name are closed.
    """
    held = Listeners(plan=plan_)
    spare = list(inherited)
    for endpoint in plan_.endpoints:
        match = next(
            (s for s in spare if (local := local_address(s)) is not None
             and (local == endpoint.address or _same_tcp(local, endpoint.address))),
            None,
        )
        if match is not None:
            spare.remove(match)
            held.items.append(Listener(endpoint=endpoint, sock=match, adopted=True,
                                       listening=_is_listening(match)))
            continue
        try:
            sock = _bind(endpoint, config)
        except BaseException:
            held.close()
            raise
        held.items.append(Listener(endpoint=endpoint, sock=sock))
    for sock in spare:
        sock.close()
    return held


def _is_listening(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


def _refuse(endpoint: Endpoint, config: Config, reason: str, remedy: str) -> ConfigError:
    key = "dockerd.host" if endpoint.source == "agent" and endpoint.is_unix else (
        "tls.listen" if endpoint.address == config.tls.listen else "dockerd.args"
    )
    source = config.sources.get(key, "default")
    return ConfigError(key=key, value=endpoint.address, source=source, reason=reason,
                       remedy=remedy)


def _bind(endpoint: Endpoint, config: Config) -> socket.socket:
    path = unix_path(endpoint.address)
    if path is not None:
        return _bind_unix(endpoint, path, config)
    host, port = split_tcp(endpoint.address)
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _refuse(endpoint, config, f"cannot listen there: {exc.strerror or exc}",
                      "give an address of this container") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise _refuse(
            endpoint, config, f"cannot listen there: {exc.strerror or exc}",
            "another process (a dockerd not started by the agent?) holds that port: stop it,"
            " or choose another address",
        ) from None
    return sock


def _bind_unix(endpoint: Endpoint, path: str, config: Config) -> socket.socket:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise _refuse(endpoint, config, f"cannot look at {path}: {exc.strerror}",
                      "make its folder accessible to root") from None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise _refuse(endpoint, config, f"{path} exists and is not a socket",
                          "move that file away, or give another socket path")
        if answers(path):
            raise _refuse(endpoint, config, f"{path} is served by another process",
                          "stop the dockerd already serving it (one daemon per socket),"
                          " or give this one another --dockerd-host")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket file left by a dead daemon
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        _group, gid = socket_group(config.dockerd.args)
        os.chmod(path, _SOCKET_MODE)
        if os.geteuid() == 0:
            # dockerd's own rule: the socket belongs to its --group when that exists.
            os.chown(path, 0, gid if gid is not None else 0)
    except OSError as exc:
        sock.close()
        raise _refuse(endpoint, config, f"cannot create the socket: {exc.strerror}",
                      "make the folder writable by the agent") from None
    return sock
