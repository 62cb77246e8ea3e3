"""The launch: what must hold before dockerd starts, done before the event loop exists.

Time to ready is the time to dockerd's spawn plus dockerd's own start. So
the agent does only what must precede dockerd, synchronously and with the
standard library plus its own light modules: anyio, structlog,
prometheus_client and aiohttp are imported afterwards, while dockerd starts.
In order:

1. everything that can refuse the configuration (the resource policy,
   DOCKER_TLS_SAN, dockerd's daemon.json), before anything is touched;
2. the data root's free space (a full disk is refused here, not 77 s
   later, before anything is written there) and its lock (a second agent
   leaves having touched nothing);
3. the resource policy applied to the agent (strict mode refuses here);
4. the container preparation (as a container's PID 1): cgroups, mounts,
   iptables;
5. the certificates: their record (``tls.manifest``) proves in microseconds
   that the set is unchanged and not due; otherwise they are issued here;
6. dockerd's sockets, held by the agent (listening once the client
   certificates exist); containerd, when the agent runs it, started and
   answering on its socket (``supervisor.containerd``);
7. dockerd's spawn, unless a TERM/INT/QUIT is already waiting (then nothing
   is started).

An agent that follows one that died (``fdstore``) finds the lock, the
sockets and the running dockerd among its inherited descriptors and takes
them over instead; the container is not prepared again.

Log events are kept in an ``EarlyLog`` until structlog is loaded, then
emitted with their own timestamps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor import fdstore, prelisten, state
from supervisor.config import Config
from supervisor.dataroot.disk import DiskFigures, disk_figures
from supervisor.dataroot.ownership import DataRootLock, Holder, acquire, adopt_lock, read_marker
from supervisor.dataroot.pidfiles import PidFileAction, clean_stale_pid_files
from supervisor.dockerd import listeners as held_sockets
from supervisor.dockerd import version
from supervisor.dockerd.process import build_argv
from supervisor.dockerd.spawner import Incarnation, Spawner, dockerd_environment
from supervisor.init import ROLE_RUN, ROLE_STOP, STOP_SIGNALS
from supervisor.network import detect_mtu
from supervisor.policy.plan import Plan, PolicyDeviation, plan, strict_error
from supervisor.policy.spec import Mode, Policy
from supervisor.prelisten import LISTENER_NAME
from supervisor.tls.files import TlsFiles
from supervisor.tls.manifest import Manifest, fast_check
from supervisor.tls.model import CertReport
from supervisor.tls.san import SanSet
from supervisor.tls.settings import sans_from_config, spec_from_config, utcnow

if TYPE_CHECKING:
    from supervisor.containerd.plan import Setup as ContainerdSetup
    from supervisor.containerd.process import ContainerdProcess, Runner

LOCK_NAME = "data-root-lock"


class EarlyLog:
    """Log events kept until structlog is configured (its import alone takes ~40 ms)."""

    def __init__(self) -> None:
        self.records: list[tuple[float, str, str, dict[str, Any]]] = []
        self.flushed = False

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.records.append((time.time(), level, event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)

    def flush(self) -> None:
        """Emit every kept event through structlog, each with the time it happened."""
        from supervisor.logs import get_logger

        for stamp, level, event, fields in self.records:
            moment = dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat().replace("+00:00", "Z")
            getattr(get_logger(), level)(event, timestamp=moment, **fields)
        self.records.clear()
        self.flushed = True


@dataclass(slots=True)
class Launched:
    """What the launch made ready, handed to the agent's parts."""

    config: Config
    role: str
    under_init: bool
    policy: Policy
    plan: Plan
    deviations: list[PolicyDeviation]
    lock: DataRootLock | None
    previous_run: Holder | None
    disk: DiskFigures | None
    listeners: held_sockets.Listeners
    spawner: Spawner
    depositor: fdstore.Depositor
    log: EarlyLog
    agent_restarts: int = 0
    takeover: bool = False
    prepare: dict[str, Any] | None = None
    prepare_env: dict[str, str] = field(default_factory=dict)
    sans: SanSet | None = None
    certs: CertReport | None = None
    manifest: Manifest | None = None
    incarnation: Incarnation | None = None
    stop_pending: bool = False
    milestones: dict[str, float] = field(default_factory=dict)
    inherited: list[tuple[str, int]] = field(default_factory=list)
    http_socket: socket.socket | None = None
    containerd_setup: ContainerdSetup | None = None
    containerd_runner: Runner | None = None
    containerd: ContainerdProcess | None = None

    def milestone(self, name: str) -> None:
        self.milestones[name] = time.time()

    @property
    def stop_requested(self) -> bool:
        """A stop signal came during the launch, or this agent only finishes a stop."""
        return self.stop_pending or self.role == ROLE_STOP

    def agent_status(self) -> dict[str, Any]:
        from supervisor import __version__

        return {
            "version": __version__, "pid": os.getpid(), "under_init": self.under_init,
            "started_at": self.milestones["agent_started"], "restarts": self.agent_restarts,
            "took_over": self.takeover,
        }


def _stop_pending() -> bool:
    """A TERM/INT/QUIT is waiting (still blocked): the user wants us gone, not dockerd started."""
    return bool(signal.sigpending() & STOP_SIGNALS)


def launch(
    config: Config, policy: Policy, *, under_init: bool, env: MutableMapping[str, str],
    log: EarlyLog,
) -> Launched:
    """Everything before dockerd's spawn; raises SupervisorError (with its exit code).

    A start refused (a SupervisorError: the agent exits with its code, and PID 1 with it)
    leaves no socket file behind, neither the agent's nor those PID 1 opened from the
    previous run's record. A crash leaves them: PID 1 starts a new agent, which adopts the
    sockets it kept. A running dockerd taken over keeps its sockets either way."""
    started = time.time()
    role = env.pop(fdstore.ROLE_ENV, ROLE_RUN)
    inherited = fdstore.inherited(env)
    takeover = any(name == "dockerd" for name, _fd in inherited) or role == ROLE_STOP
    with contextlib.ExitStack() as on_failure:
        if not takeover:
            on_failure.push(_when_refused(_unlink_socket_files, _unix_socket_paths(inherited)))
        launched = _launch(config, policy, under_init=under_init, env=env, log=log,
                           started=started, role=role, inherited=inherited,
                           takeover=takeover, on_failure=on_failure)
        on_failure.pop_all()  # started: nothing to undo
    return launched


def _when_refused(undo: Callable[..., None], *args: Any) -> Callable[..., bool]:
    """An exit callback for ExitStack.push: ``undo(*args)`` when the launch refused to start
    (a SupervisorError), never on a crash (a new agent needs what this one made)."""

    def on_exit(_kind: object, error: BaseException | None, _trace: object) -> bool:
        from supervisor.errors import SupervisorError

        if isinstance(error, SupervisorError):
            undo(*args)
        return False

    return on_exit


def _unix_socket_paths(inherited: list[tuple[str, int]]) -> list[str]:
    paths = []
    for name, fd in inherited:
        if name != LISTENER_NAME:
            continue
        sock = socket.socket(fileno=fd)
        try:
            path = held_sockets.unix_path(held_sockets.local_address(sock) or "")
        finally:
            sock.detach()
        if path:
            paths.append(path)
    return paths


def _unlink_socket_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _launch(
    config: Config, policy: Policy, *, under_init: bool, env: MutableMapping[str, str],
    log: EarlyLog, started: float, role: str, inherited: list[tuple[str, int]],
    takeover: bool, on_failure: contextlib.ExitStack,
) -> Launched:
    raw_restarts = env.pop(fdstore.RESTARTS_ENV, "0")
    depositor = fdstore.Depositor.from_env(env)
    # 1. Refuse bad configuration before anything is touched (the policy was, by the CLI).
    if config.rootless_on:
        _check_rootless(config, env, log)
    if not takeover:
        _check_dockerd_binary(config, env)
        _check_daemon_json(config, env, log)
    sans = sans_from_config(config) if config.tls_enabled else None
    depositor.set(
        restart_limit=config.agent.restart_limit,
        restart_window=config.agent.restart_window,
        stop_timeout=config.dockerd.stop_timeout,
    )
    http_socket = _bind_http(config)
    # 2. The data root: with room to work (nothing written there before), and ours alone.
    data_root = Path(config.dockerd.data_root)
    disk = _check_disk(config, log, takeover=takeover)
    lock, previous = _take_data_root(config, depositor, inherited, takeover)
    # 3. The policy, for the agent now and dockerd at its spawn.
    planned, deviations = _apply_policy(policy, log, under_init)
    # dockerd's sockets, held by us: the unix ones queue clients from now on (the data root
    # is ours, so no other daemon of it serves them); TCP once the client certificates exist.
    held = held_sockets.plan(config, tls=config.tls_enabled)
    inherited_sockets = [socket.socket(fileno=fd) for name, fd in inherited
                         if name == LISTENER_NAME]
    listeners = held_sockets.open_listeners(held, config, inherited_sockets)
    if not held.active and held.why_not:
        log.info("sockets_not_held", reason=held.why_not)
    if not takeover:
        on_failure.push(_when_refused(listeners.close))
    listeners.listen(tcp=False)
    _deposit_listeners(listeners, depositor, inherited=len(inherited_sockets), log=log)
    milestones = {"agent_started": started}
    saved = state.read(Path(config.agent.state_dir)) if takeover else {}
    # 4. The container, as docker:dind's scripts prepare it (once per container).
    prepared: dict[str, Any] | None = None
    prepare_env: dict[str, str] = {}
    if takeover and "prepare" in saved:
        prepared, prepare_env = saved.get("prepare"), dict(saved.get("prepare_env") or {})
    elif _should_prepare(config, under_init):
        prepared, prepare_env = _prepare(config, log, env)
    if not takeover:
        _clean_pid_files(config, log)
    milestones["prepared"] = time.time()
    # 5. Certificates.
    certs: CertReport | None = None
    record: Manifest | None = None
    if config.tls_enabled and sans is not None:
        certs, record = _certificates(config, log, sans, takeover=takeover)
        milestones["certificates_ready"] = time.time()
    # 6. The TCP sockets listen once the client certificates exist.
    if not config.tls_enabled or TlsFiles.of(config.tls.certdir, "client").all_present():
        listeners.listen()
    containerd_setup, runner, containerd = _containerd(
        config, planned, dockerd_environment(env, prepare_env), depositor=depositor,
        inherited=inherited, may_spawn=role != ROLE_STOP, log=log)
    spawner = _spawner(config, planned, prepare_env, listeners=listeners, depositor=depositor,
                       env=env, data_root=data_root,
                       containerd_flags=containerd_setup.dockerd_flags())
    launched = Launched(
        config=config, role=role, under_init=under_init, policy=policy, plan=planned,
        deviations=deviations, lock=lock, previous_run=previous, disk=disk,
        listeners=listeners, spawner=spawner, depositor=depositor, log=log,
        agent_restarts=int(raw_restarts) if raw_restarts.isdigit() else 0, takeover=takeover,
        prepare=prepared, prepare_env=prepare_env, sans=sans, certs=certs, manifest=record,
        milestones=milestones, inherited=inherited, http_socket=http_socket,
        containerd_setup=containerd_setup, containerd_runner=runner, containerd=containerd,
    )
    # 7. dockerd: adopted, or started now unless a stop is already waiting.
    if takeover:
        launched.incarnation = spawner.adopt(inherited, int(saved.get("incarnation", 0)) + 1)
        if launched.incarnation is not None:
            log.info("dockerd_taken_over", pid=launched.incarnation.process.pid,
                     agent_restarts=launched.agent_restarts)
    if launched.incarnation is None and role != ROLE_STOP:
        if _stop_pending():
            launched.stop_pending = True
            log.info("dockerd_not_started", reason="a stop signal arrived during start-up")
        else:
            state.update(Path(config.agent.state_dir), incarnation=1)
            launched.incarnation = spawner.spawn(1)
            launched.milestone("dockerd_spawned")
            log.info("dockerd_started", component="dockerd",
                     pid=launched.incarnation.process.pid, **spawner.describe_last(),
                     seconds_since_agent_start=round(time.time() - started, 3))
    _record_listeners(config, listeners, env)
    return launched


def _deposit_listeners(listeners: held_sockets.Listeners, depositor: fdstore.Depositor, *,
                       inherited: int, log: EarlyLog) -> None:
    """Give the fd store a copy of each held socket. Inherited sockets the plan does not
    name (PID 1 opened them from an older record, or the configuration changed) were
    closed here; the store must drop its copies too, or clients would queue on them for
    good: it is emptied of listeners and given the ones held now."""
    adopted = sum(1 for item in listeners.items if item.adopted)
    refill = adopted < inherited
    if refill:
        depositor.remove(LISTENER_NAME)
        log.info("sockets_not_kept", count=inherited - adopted,
                 reason="opened from the previous run's record, not in this configuration")
    for item in listeners.items:
        if refill or not item.adopted:
            depositor.store(LISTENER_NAME, item.fileno())


def _record_listeners(config: Config, listeners: held_sockets.Listeners,
                      env: MutableMapping[str, str]) -> None:
    """What PID 1 may open at the next start before the agent runs (``prelisten``): the
    sockets listening now, each with the condition it was opened on."""
    rows = []
    client_dir = str(Path(config.tls.certdir) / "client") if config.tls_enabled else None
    for item in listeners.items:
        if not item.listening:
            continue
        try:
            path = held_sockets.unix_path(item.endpoint.address)
            if path is not None:
                found = os.stat(path)
                rows.append(prelisten.unix_row(path, stat.S_IMODE(found.st_mode), found.st_gid))
            else:
                host, port = held_sockets.split_tcp(item.endpoint.address)
                rows.append(prelisten.tcp_row(host or "0.0.0.0", port, client_dir))
        except (OSError, ValueError):
            continue
    with contextlib.suppress(OSError):
        prelisten.write_record(prelisten.record_path(env, str(config.dockerd.data_root)), rows)


def _check_rootless(config: Config, env: MutableMapping[str, str], log: EarlyLog) -> None:
    """Rootless mode's prerequisites, as docker:dind's entrypoint checks them (exit 2)."""
    from supervisor.rootless import prereqs

    prereqs.require(config, prereqs.Host(env=env))
    log.info("rootless_mode", uid=os.geteuid(), rootlesskit=config.rootless.rootlesskit,
             data_root=str(config.dockerd.data_root), host=config.dockerd.host)


def _check_dockerd_binary(config: Config, env: MutableMapping[str, str]) -> None:
    """dockerd can be found and run: else exit 2 now, not a spawn error later."""
    import shutil

    from supervisor.errors import ConfigError

    binary = config.dockerd.binary
    found = shutil.which(binary, path=env.get("PATH") or os.defpath)
    if found is None:
        where = "does not exist or is not executable" if "/" in binary else (
            "is not on PATH" + (f" ({env.get('PATH')})" if env.get("PATH") else ""))
        from supervisor.dockerd.failures import INSTALL_DOCKERD

        raise ConfigError(
            key="dockerd.binary", value=binary,
            source=config.sources.get("dockerd.binary", "default"), reason=where,
            remedy=INSTALL_DOCKERD,
        )


def _check_daemon_json(config: Config, env: MutableMapping[str, str], log: EarlyLog) -> None:
    """dockerd's daemon.json as dockerd would read it with the agent's flags: what it would
    refuse exits 2 now (ConfigError) instead of after five failed starts."""
    from supervisor.dockerd import daemonjson
    from supervisor.dockerd.process import config_view
    from supervisor.dockerd_flags import config_file_of

    view = config_view(config, env)
    found: int | None = None
    if config_file_of(view.argv, view.default_file)[0].is_file():  # its version matters then
        found = version.major(config.dockerd.binary, cache_dir=Path(config.dockerd.data_root),
                              path=env.get("PATH"))
    warnings = daemonjson.preflight(
        view.argv, agent_options=view.agent_options, default_file=view.default_file,
        version=None if found is None else (found, 0),
    )
    for warning in warnings:
        log.warning("daemon_json_warning", message=warning.message, remedy=warning.remedy)


def _bind_http(config: Config) -> socket.socket | None:
    """The endpoint's TCP port, bound now (a busy port is a configuration error before
    anything runs) but accepting only once the endpoint serves, after dockerd's spawn."""
    from supervisor.config import parse_listen
    from supervisor.errors import ConfigError
    from supervisor.network import bind_listener

    address = config.http.listen
    if not address:
        return None
    try:
        return bind_listener(*parse_listen(address), listen=False)
    except OSError as exc:
        raise ConfigError(
            key="http.listen",
            value=address,
            source=config.sources.get("http.listen", "default"),
            reason=f"cannot listen there: {exc.strerror or exc}",
            remedy="free that port or set --http-listen to another address"
            " (an empty value turns the endpoint off)",
        ) from None


def _take_data_root(
    config: Config, depositor: fdstore.Depositor,
    inherited: list[tuple[str, int]], takeover: bool,
) -> tuple[DataRootLock | None, Holder | None]:
    data_root = Path(config.dockerd.data_root)
    lock: DataRootLock | None = None
    if config.dataroot.lock:
        adopted = next((fd for name, fd in inherited if name == LOCK_NAME), None)
        if adopted is not None:
            lock = adopt_lock(data_root, adopted, pid=os.getpid())
        else:
            lock = acquire(
                data_root,
                host=socket.gethostname(),
                now=dt.datetime.now(dt.UTC),
                pid=os.getpid(),
                check_daemon_locks=config.dataroot.check_daemon_locks and not takeover,
            )
            depositor.store(LOCK_NAME, lock.fileno())
    previous = None if takeover else read_marker(data_root)
    return lock, previous


def _check_disk(config: Config, log: EarlyLog, *, takeover: bool) -> DiskFigures | None:
    """The data root's room: a (nearly) full filesystem is refused (DataRootFullError, exit
    2) unless dockerd already runs (a takeover), GC may free it once dockerd runs, or the
    user asked for a warning only."""
    from supervisor.dataroot.disk import existing_ancestor, low_space, refuse_low_space

    settings = config.dataroot
    where = existing_ancestor(Path(config.dockerd.data_root))
    try:
        figures = disk_figures(where)
    except OSError as exc:
        log.warning("data_root_statvfs_failed", path=str(where), error=exc.strerror or str(exc))
        return None
    if takeover or settings.gc_enabled or settings.low_space == "warn":
        shortage = low_space(figures, min_free=settings.min_free,
                             min_free_inodes=settings.min_free_inodes)
        if shortage is not None:
            why = ("dockerd runs already" if takeover else "gc_enabled: the agent prunes once"
                   " dockerd is ready" if settings.gc_enabled else "low_space = warn")
            log.warning("data_root_low_space", path=str(config.dockerd.data_root),
                        shortage=shortage, starting_anyway=why,
                        free_bytes=figures.free_bytes, free_inodes=figures.free_inodes)
        return figures
    refuse_low_space(Path(config.dockerd.data_root), figures, min_free=settings.min_free,
                     min_free_inodes=settings.min_free_inodes)
    return figures


def _apply_policy(
    policy: Policy, log: EarlyLog, under_init: bool
) -> tuple[Plan, list[PolicyDeviation]]:
    from supervisor.policy.apply import apply_to_agent
    from supervisor.policy.probe import read_facts

    facts = read_facts(init_pid=1 if under_init else None)
    planned = plan(policy, facts, check=False)
    if planned.deviations and policy.mode is Mode.STRICT:
        raise strict_error(planned.deviations)
    refused = apply_to_agent(planned)
    for deviation in planned.deviations:
        log.warning("policy_clamped", **deviation.as_event())
    for deviation in refused:
        log.warning("policy_refused", **deviation.as_event())
    log.info(
        "policy_applied",
        mode=policy.mode.value,
        deviations=len(planned.deviations) + len(refused),
        dockerd_oom_score_adj=planned.dockerd.expected_oom_score_adj,
    )
    return planned, [*planned.deviations, *refused]


def _should_prepare(config: Config, under_init: bool) -> bool:
    enabled = config.prepare.enabled
    return enabled == "true" or (enabled == "auto" and under_init)


def _prepare(
    config: Config, log: EarlyLog, env: MutableMapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    from supervisor.prepare import dockerd_env, options_from_config, prepare

    report = prepare(options_from_config(config), env=env)
    prepared, prepare_env = report.as_dict(), dockerd_env(report, env)
    for step in report.steps:
        level = {"error": "error", "warning": "warning"}.get(str(step.severity), "info")
        log.log(
            level, "prepare_step_finished", step=step.step, outcome=str(step.outcome),
            findings=[f.message for f in step.findings],
            remedies=[f.remedy for f in step.findings if f.remedy],
            **{k: v for k, v in step.data.items() if k not in ("step", "outcome")},
        )
    state.update(Path(config.agent.state_dir), prepare=prepared, prepare_env=prepare_env)
    return prepared, prepare_env


def _clean_pid_files(config: Config, log: EarlyLog) -> None:
    if not config.dataroot.clean_pid_files:
        return
    paths = (Path(config.dockerd.pidfile), Path(config.dockerd.containerd_pidfile))
    for outcome in clean_stale_pid_files(paths, Path("/proc")):
        if outcome.action is PidFileAction.NONE:
            continue
        # A kept file (a live daemon) or one that could not be removed makes
        # dockerd refuse to start: that deserves more than an info line.
        level = "info" if outcome.action is PidFileAction.REMOVED else "warning"
        log.log(level, "pid_file_checked", message=outcome.message, **outcome.as_log())


def _certificates(
    config: Config, log: EarlyLog, sans: SanSet, *, takeover: bool
) -> tuple[CertReport | None, Manifest | None]:
    from supervisor.tls import worker

    certdir = Path(config.tls.certdir)
    spec = spec_from_config(config)
    now = utcnow()
    record, why = fast_check(certdir, spec, sans, now)
    if record is not None:
        log.info("certificates_ready", certdir=str(certdir), checked="record",
                 issued=[], full_check="beside dockerd")
        return None, record
    if takeover:
        # The running dockerd loaded the set it has; the TLS part checks it and
        # restarts dockerd if something must change.
        log.info("certificates_check_deferred", certdir=str(certdir), reason=why)
        return None, None
    started = time.monotonic()
    report, _restart = worker.answer(
        worker.run_forked(worker.request(worker.ENSURE, certdir, spec, sans, now))
    )
    log.info(
        "certificates_ready",
        certdir=str(certdir),
        checked="full",
        because=why,
        user_managed=report.user_managed,
        issued=[c.cert for c in report.changes],
        seconds=round(time.monotonic() - started, 3),
    )
    return report, None


def _containerd(
    config: Config, planned: Plan, containerd_env: dict[str, str], *,
    depositor: fdstore.Depositor, inherited: list[tuple[str, int]], may_spawn: bool,
    log: EarlyLog,
) -> tuple[ContainerdSetup, Runner | None, ContainerdProcess | None]:
    """Who runs containerd; when the agent does, it is adopted or started here, before
    dockerd, and answers on its socket before dockerd's spawn."""
    from supervisor.containerd import process as containerd

    setup = containerd.decide(config)
    log.info("containerd_managed", component="containerd", managed_by=setup.managed_by.value,
             reason=setup.reason, address=str(setup.address))
    if not setup.dockerd_flags():
        return setup, None, None
    runner = containerd.runner_for(config, setup, planned, env=lambda: dict(containerd_env),
                                   depositor=depositor)
    process = containerd.start(runner, inherited, may_spawn=may_spawn,
                               timeout=config.dockerd.start_timeout, log=log)
    return setup, runner, process


def _spawner(
    config: Config, planned: Plan, prepare_env: dict[str, str], *,
    listeners: held_sockets.Listeners, depositor: fdstore.Depositor,
    env: MutableMapping[str, str], data_root: Path, containerd_flags: list[str],
) -> Spawner:
    from supervisor.policy.apply import wrap_argv

    tls_files = TlsFiles.of(config.tls.certdir, "server") if config.tls_enabled else None
    expected_oom = planned.dockerd.expected_oom_score_adj
    extra: list[str] = []
    if not config.dockerd.exact_args and expected_oom not in (
        None, version.DOCKERD_DEFAULT_OOM_SCORE_ADJ
    ):
        found = version.major(config.dockerd.binary, cache_dir=data_root, path=env.get("PATH"))
        extra = version.oom_flag(expected_oom, found)
    extra += containerd_flags
    rootless_env: dict[str, str] = {}
    if config.rootless_on:
        from supervisor.dockerd import rootlesskit

        rootless_env = rootlesskit.environment(env)

    def argv() -> list[str]:
        mtu = config.dockerd.mtu or (config.rootless.mtu if config.rootless_on else detect_mtu())
        dockerd = build_argv(config, tls=tls_files, mtu=mtu, extra=extra, held=listeners.plan)
        if config.rootless_on:
            return rootlesskit.command(config, dockerd, path=env.get("PATH"))
        return dockerd

    def environment() -> dict[str, str]:
        return dockerd_environment(env, {**prepare_env, **rootless_env})

    def wrap(command: list[str], dockerd_env: dict[str, str], listen: list[int]) -> list[str]:
        return wrap_argv(planned, command, env=dockerd_env, listen=listen)

    return Spawner(
        argv=argv,
        env=environment,
        wrap=wrap,
        listen_fds=listeners.fds,
        state_dir=Path(config.agent.state_dir),
        depositor=depositor,
        serves=lambda argv: held_sockets.served_addresses(argv, listeners.plan),
    )
