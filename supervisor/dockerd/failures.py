"""Known dockerd and containerd failure lines: what each means and what to do.

Owns the table (pattern → category, cause, remedy, whether dockerd cannot
start because of it) and ``explain(line)``, a pure function over one line of
dockerd's output. It recognises runc's "error setting rlimit type N" only to
classify it: decoding it is ``policy/explain.py``'s work. It does not read
dockerd's pipe, count anything or decide on restarts; the caller does.

The patterns were written against real lines of dockerd 20.10.24 (Go 1.19,
containerd 1.6) and 26.1.5 (containerd 1.7), captured with
``scripts/capture_dockerd_failures.sh`` and kept in
``tests/unit/fixtures/dockerd_lines/``. Their wording differs between the two,
e.g. "failed to create API server:" became "invalid TLS configuration:", the
pid-file message was reworded, "unexpected EOF" became "unexpected end of JSON
input", and Go 1.20+ says "failed to verify certificate" where Go 1.19 said
"failed to verify client certificate"; each pattern accepts both.

Client TLS handshake failures ("http: TLS handshake error from ADDR: ...") are
the client's problem, not dockerd's: they get category ``client_handshake``
and a ``reason`` label (eof, unknown_ca, bad_certificate, ...) to be counted
apart, never an error of dockerd.

Some messages span two lines (an iptables error ends with "\\n (exit status
4)"; an unknown flag with "See 'dockerd --help'."); ``is_continuation`` tells
such second lines, so the reader can join them to the line before.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.logs import DockerdLine, parse_dockerd_line


class Category(enum.StrEnum):
    CONFIG = "config"  # dockerd's flags or daemon.json
    STORAGE = "storage"  # storage driver, data root
    NETWORK = "network"  # iptables, bridge, listeners
    DISK = "disk"  # a full filesystem
    CONTAINERD = "containerd"
    TLS = "tls"  # dockerd's own certificate files
    CLIENT_HANDSHAKE = "client_handshake"  # a client failed the TLS handshake: its problem
    STATE = "state"  # leftovers of an earlier dockerd (pid file)
    RUNTIME = "runtime"  # runc refused a container's settings
    UNKNOWN = "unknown"  # dockerd failed, for a reason the table does not know


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """What one line means, with the values taken from it."""

    rule: str  # the table entry that matched
    category: Category
    cause: str  # one sentence, with the line's values
    remedy: str
    fatal: bool  # the line reports that dockerd stops or cannot start
    reason: str | None = None  # client handshakes: eof, unknown_ca, bad_certificate, ...
    details: dict[str, str] = field(default_factory=dict)


Builder = Callable[[re.Match[str]], tuple[str, str, dict[str, str]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    category: Category
    fatal: bool
    build: Builder  # match → (cause, remedy, details)


_CONFIG_FILE = r"unable to configure the Docker daemon with file (?P<path>\S+?): "
_DATA_ROOT_VOLUME = (
    "put the data root on a volume or a host folder (`-v dind-data:/var/lib/docker`)"
)


def _g(match: re.Match[str], name: str, default: str = "") -> str:
    value = match.groupdict().get(name)
    return value if value is not None else default


# Builders ----------------------------------------------------------------------------------


def _clash(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    keys = re.findall(r"(?:^|, )([\w.-]+): \(from flag: ", m["list"])
    path = _g(m, "path", "daemon.json")
    names = ", ".join(keys)
    if "hosts" in keys:
        remedy = (
            f"remove `hosts` from {path}: the agent passes dockerd's sockets itself; give your"
            " own listeners as dockerd arguments (`IMAGE -H tcp://...`) instead"
        )
    else:
        remedy = f"remove {names} from {path}, or stop passing the same option as a flag"
    cause = f"{path} sets {names}, which dockerd's command line also sets"
    return cause, remedy, {"path": path, "keys": names}


def _unknown_keys(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = _g(m, "path", "daemon.json")
    keys = m["keys"].strip()
    return (
        f"{path} holds keys this dockerd does not know: {keys}",
        f"remove or rename them in {path} (the file uses the long flag names of"
        " `dockerd --help`; options removed in newer dockerd, like oom-score-adjust or"
        " graph, are refused too)",
        {"path": path, "keys": keys},
    )


def _json_syntax(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    error = m["error"]
    if error in ("EOF", "unexpected EOF", "unexpected end of JSON input"):
        what = (
            "ends before its JSON does" if error != "EOF" else "is empty (dockerd 20.10 needs {})"
        )
    else:
        what = f"is not valid JSON ({error})"
    return (
        f"{path} {what}",
        f"fix {path} (`python3 -m json.tool {path}` or `dind-supervisor check` shows the line"
        " and column), write {} for no settings, or remove the file",
        {"path": path, "error": error},
    )


def _json_type(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = _g(m, "path", "daemon.json")
    field_path = _g(m, "field")
    if not field_path:
        return (
            f"{path} holds {m['got']} at its top level, where dockerd needs a JSON object",
            'write the settings as one object, e.g. {"storage-driver": "overlay2"}',
            {"path": path},
        )
    key = field_path.rsplit(".", 1)[-1]
    return (
        f"{path}: `{key}` is {m['got']} but dockerd needs {m['want']}",
        f"give `{key}` a value of type {m['want']} in {path}",
        {"path": path, "key": key},
    )


def _file_read(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    return (
        f"dockerd cannot read its configuration file {path}: {m['error']}",
        f"make {path} a JSON file dockerd can read, or point --config-file at one",
        {"path": path},
    )


def _config_other(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    return (
        f"dockerd refuses its configuration file {path}: {m['error']}",
        f"correct {path} (`dockerd --validate` on dockerd 23+ checks it without starting)",
        {"path": path},
    )


def _unknown_flag(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    flag = m["flag"]
    if flag == "--validate":
        return (
            "this dockerd (before 23.0) has no --validate",
            "check daemon.json with `dind-supervisor check` instead",
            {"flag": flag},
        )
    return (
        f"dockerd does not know the flag {flag}",
        f"remove {flag} from the dockerd arguments (after --); `dockerd --help` lists the"
        " flags of this version",
        {"flag": flag},
    )


def _usage_continuation(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        "dockerd refused its command line (the reason is on the line before)",
        "correct the dockerd arguments (after --)",
        {},
    )


def _bad_flag_value(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        f"dockerd cannot use {m['value']!r} for {m['flag']}",
        f"give {m['flag']} a valid value in the dockerd arguments",
        {"flag": m["flag"], "value": m["value"]},
    )


def _pidfile(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    pid = _g(m, "pid")
    who = f"process {pid}" if pid else "a running process"
    return (
        f"the pid file {path} names {who}, so dockerd assumes another dockerd runs",
        f"stop the other dockerd; if none runs (a pid reused after a crash), delete {path}",
        {"path": path, **({"pid": pid} if pid else {})},
    )


def _driver_not_supported(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    driver = _g(m, "driver")
    name = driver or "the chosen storage driver"
    return (
        f"{name} cannot run on the data root's filesystem (unknown name, missing kernel"
        " support, or overlay on overlay: the data root is on the container's own layer)",
        f"{_DATA_ROOT_VOLUME}, or choose a driver that works there (--storage-driver=vfs is"
        " slow but runs anywhere)",
        {"driver": driver} if driver else {},
    )


def _driver_prerequisites(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    driver = _g(m, "driver")
    return (
        f"the storage driver {driver or '(the chosen one)'} needs another filesystem under the"
        " data root",
        f"use the storage driver that fits the data root's filesystem (overlay2 on ext4/xfs),"
        f" or {_DATA_ROOT_VOLUME}",
        {"driver": driver} if driver else {},
    )


def _driver_unknown(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    driver = _g(m, "driver")
    return (
        f"there is no storage driver named {driver!r}",
        "use one of overlay2, fuse-overlayfs, btrfs, zfs, vfs (--storage-driver)",
        {"driver": driver},
    )


def _overlay_mount(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        f"the kernel refused an overlay mount ({m['error']}); on a data root that is itself"
        " overlay (the container's own layer) overlay2 cannot work",
        _DATA_ROOT_VOLUME,
        {},
    )


def _data_root_path(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    return (
        f"the data root {path} cannot be used: {m['error']}",
        "point --data-root at a folder (not a file) on a writable filesystem",
        {"path": path},
    )


def _read_only(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    return (
        f"{path} is on a read-only filesystem",
        f"mount a writable volume at {path} (or drop the :ro / --read-only that covers it)",
        {"path": path},
    )


def _no_space(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = _g(m, "path")
    where = f" writing {path}" if path else ""
    return (
        f"the disk is full{where} (no space left on device)",
        "free space on the data root's filesystem (`docker system prune`, larger volume); a"
        " full data root also stops containerd from starting",
        {"path": path} if path else {},
    )


def _containerd_timeout(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        "containerd did not answer within dockerd's start-up wait; this often means a full"
        " disk under the data root or a containerd stuck on its state (a hung mount)",
        "check free space and inodes of the data root (`df -h`, `df -i`), then look for a"
        " stuck containerd process and its log",
        {},
    )


def _containerd_no_plugins(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        "containerd started without its core plugins because it could not write its"
        " metadata under the data root: most often a full disk (look for 'no space left on"
        " device' above), else a read-only data root",
        "free space on the data root's filesystem (`df -h`, `df -i`) or make it writable,"
        " then start again",
        {"socket": m["socket"]},
    )


def _containerd_dial(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    socket = m["socket"]
    return (
        f"dockerd cannot reach containerd at {socket}: {m['error']}",
        "check that containerd runs and listens on that socket (--containerd), or drop"
        " --containerd so dockerd starts its own",
        {"socket": socket},
    )


def _containerd_start(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        f"dockerd could not start containerd: {m['error']}",
        "check that the containerd binary is on PATH and that its state folders are writable",
        {},
    )


def _containerd_events(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        "dockerd lost its event stream from containerd (containerd exited or is restarting)",
        "if it repeats while dockerd is up, look at containerd's own lines before this one",
        {},
    )


def _nat_chain(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    chain, error = m["chain"], m["error"]
    if re.search(r"iptables not found", error, re.I):
        remedy = "install iptables in the image, or start dockerd with --iptables=false"
    elif re.search(r"permission denied", error, re.I):
        remedy = (
            "the container lacks CAP_NET_ADMIN: run it with --privileged (or --cap-add"
            " NET_ADMIN), or start dockerd with --iptables=false"
        )
    else:
        remedy = (
            "check that the iptables backend (legacy or nf_tables) matches the host's, and"
            " that the container may change netfilter rules (CAP_NET_ADMIN)"
        )
    return (
        f"dockerd cannot create the iptables chain {chain}: {error.strip()}",
        remedy,
        {"chain": chain},
    )


def _network_controller(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        f"dockerd cannot set up its networking: {m['error'].strip()}",
        "the container needs CAP_NET_ADMIN and working iptables; or start dockerd with"
        " --iptables=false --bridge=none",
        {},
    )


def _address_in_use(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    address = m["address"]
    return (
        f"the address {address} is already taken by another process",
        f"stop whatever listens on {address} (`ss -ltnp`), or give dockerd another -H",
        {"address": address},
    )


def _tls_key_pair(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    cert, key, error = m["cert"], m["key"], m["error"]
    missing = re.match(r"open (\S*): no such file or directory", error)
    if missing:
        cause = f"dockerd's TLS file {missing[1] or '(empty path)'} does not exist"
    elif "does not match" in error:
        cause = f"the TLS key {key} does not belong to the certificate {cert}"
    else:
        cause = f"dockerd cannot load its TLS certificate {cert} and key {key}: {error}"
    return (
        cause,
        "let the agent issue the certificates (`dind-supervisor certs generate`), or put a"
        " matching cert.pem/key.pem pair in $DOCKER_TLS_CERTDIR/server/",
        {"cert": cert, "key": key},
    )


def _tls_ca(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    return (
        f"dockerd's CA file {path} holds no PEM certificate",
        f"put the CA certificate (PEM) at {path}, or let the agent issue the certificates",
        {"path": path},
    )


def _tls_ca_read(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    path = m["path"]
    return (
        f"dockerd cannot read its CA file {path}: {m['error']}",
        f"put the CA certificate at {path}, or let the agent issue the certificates",
        {"path": path},
    )


_HANDSHAKE_REASONS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("eof", re.compile(r"^EOF$"), "the client closed the connection during the handshake"
     " (port probes and TCP health checks do this)"),
    ("reset", re.compile(r"connection reset by peer"), "the client reset the connection"),
    ("timeout", re.compile(r"i/o timeout"), "the client stopped answering mid-handshake"),
    ("plain_http", re.compile(r"client sent an HTTP request to an HTTPS server"),
     "the client spoke plain HTTP to the TLS port"),
    ("not_tls", re.compile(r"first record does not look like a TLS handshake"),
     "the client spoke something other than TLS to the TLS port"),
    ("no_client_cert", re.compile(r"client didn't provide a certificate"),
     "the client sent no certificate, and dockerd requires one (--tlsverify)"),
    ("client_cert_rejected", re.compile(r"failed to verify (?:client )?certificate"),
     "dockerd rejected the client's certificate (another CA, or expired)"),
    ("unknown_ca", re.compile(r"remote error: tls: unknown certificate authority"),
     "the client does not trust dockerd's CA"),
    ("bad_certificate", re.compile(r"remote error: tls: bad certificate"),
     "the client rejected dockerd's certificate (name mismatch or untrusted)"),
    ("bad_record_mac", re.compile(r"bad record MAC"),
     "the handshake broke off; seen when a TLS 1.3 client rejects dockerd's certificate"),
    ("unsupported_version", re.compile(r"client offered only unsupported versions"),
     "the client offers only TLS versions dockerd refuses (older than 1.2)"),
)  # fmt: skip


HANDSHAKE_REASONS: tuple[str, ...] = (*(label for label, _p, _s in _HANDSHAKE_REASONS), "other")
_HANDSHAKE_LINE = re.compile(r"http: TLS handshake error from (?P<client>\S+?): (?P<error>.*)$")


def client_handshake(text: str) -> tuple[str, str] | None:
    """(client address, reason label) when ``text`` is a client's failed TLS handshake."""
    match = _HANDSHAKE_LINE.search(text)
    if match is None:
        return None
    return match["client"], handshake_reason(match["error"])[0]


def handshake_reason(error: str) -> tuple[str, str]:
    """The label and a sentence for the error part of a handshake line."""
    for label, pattern, sentence in _HANDSHAKE_REASONS:
        if pattern.search(error):
            return label, sentence
    return "other", f"the TLS handshake failed: {error}"


def _handshake(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    client, error = m["client"], m["error"]
    label, sentence = handshake_reason(error)
    return (
        f"client {client}: {sentence} ({error})",
        "nothing to fix in dockerd; if the client is yours, give it $DOCKER_TLS_CERTDIR/client/"
        " (ca.pem, cert.pem, key.pem) and DOCKER_TLS_VERIFY=1",
        {"client": client, "error": error, "reason": label},
    )


def _rlimit(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        f"runc could not set rlimit type {m['type']} for a container ({m['error']})",
        "see the agent's policy explanation of this line (it decodes the limit and says"
        " what the container may ask for)",
        {"rlimit_type": m["type"]},
    )


INSTALL_DOCKERD = (
    "install dockerd (Debian: apt-get install docker.io) or point --dockerd-binary"
    " (DIND_SUPERVISOR_DOCKERD_BINARY) at it"
)


def _cannot_run(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    program = m["program"]
    return (
        f"the dockerd executable {program} cannot be run ({m['error'].strip()})",
        f"{INSTALL_DOCKERD}; in a container, check that nothing mounts over the folder it is in",
        {"program": program},
    )


def _go_crash(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        f"dockerd crashed: {m['error'].strip()}",
        "a bug in dockerd (or a plugin): the goroutine dump that follows in the log shows"
        " where; report it with dockerd's version",
        {},
    )


def _failed_to_start(m: re.Match[str]) -> tuple[str, str, dict[str, str]]:
    return (
        f"dockerd could not start: {m['error'].strip()}",
        "read dockerd's lines before this one for the cause",
        {},
    )


# The table ---------------------------------------------------------------------------------


def _rule(
    name: str, pattern: str, category: Category, fatal: bool, build: Builder, *, flags: int = 0
) -> Rule:
    return Rule(
        name=name,
        pattern=re.compile(pattern, flags),
        category=category,
        fatal=fatal,
        build=build,
    )


C = Category
# First match wins: the specific entries come before the general ones.
RULES: tuple[Rule, ...] = (
    _rule("client_handshake", r"http: TLS handshake error from (?P<client>\S+?): (?P<error>.*)$",
          C.CLIENT_HANDSHAKE, False, _handshake),
    _rule("config_clash", rf"(?:{_CONFIG_FILE})?the following directives are specified both as"
          r" a flag and in the configuration file: (?P<list>.*)$", C.CONFIG, True, _clash),
    _rule("config_unknown_keys", rf"(?:{_CONFIG_FILE})?the following directives don't match any"
          r" configuration option: (?P<keys>.*)$", C.CONFIG, True, _unknown_keys),
    _rule("config_json_type", rf"(?:{_CONFIG_FILE})?json: cannot unmarshal (?P<got>\w+) into Go"
          r" (?:struct field (?P<field>[\w.]+)|value) of type (?P<want>.+)$", C.CONFIG, True,
          _json_type),
    _rule("config_json_syntax", _CONFIG_FILE + r"(?P<error>invalid character .*|unexpected EOF"
          r"|unexpected end of JSON input|EOF)$", C.CONFIG, True, _json_syntax),
    _rule("config_file_read", _CONFIG_FILE + r"(?:open|read) \S+: (?P<error>.+)$", C.CONFIG,
          True, _file_read),
    _rule("config_other", _CONFIG_FILE + r"(?P<error>.+)$", C.CONFIG, True, _config_other),
    _rule("unknown_flag", r"unknown (?:shorthand )?flag: (?P<flag>'?-[^\s']+)", C.CONFIG, True,
          _unknown_flag),
    _rule("bad_flag_value", r"invalid argument \"(?P<value>[^\"]*)\" for \"(?P<flag>[^\"]+)\""
          r" flag", C.CONFIG, True, _bad_flag_value),
    _rule("usage_continuation", r"^See 'dockerd --help'", C.CONFIG, True, _usage_continuation),
    _rule("pidfile", r"ensure docker is not running or delete (?P<path>[^\s:]+)"
          r"(?:: process with PID (?P<pid>\d+) is still running)?", C.STATE, True, _pidfile),
    _rule("storage_driver_unknown", r"Failed to GetDriver graph.*driver=(?P<driver>\S+)",
          C.STORAGE, False, _driver_unknown),
    _rule("storage_driver_not_supported", r"error initializing graphdriver: driver not"
          r" supported(?:: (?P<driver>\S+))?", C.STORAGE, True, _driver_not_supported),
    _rule("storage_driver_prerequisites", r"prerequisites for driver not satisfied \(wrong"
          r" filesystem\?\)(?:: (?P<driver>\S+))?", C.STORAGE, True, _driver_prerequisites),
    _rule("overlay_mount", r"failed to mount overlay: (?P<error>.+?)(?: storage-driver=|$)",
          C.STORAGE, False, _overlay_mount),
    _rule("data_root_path", r"Unable to get the full path to root \((?P<path>[^)]+)\):"
          r" (?P<error>.+)$", C.STORAGE, True, _data_root_path),
    _rule("no_space", r"(?:(?:write|open|mkdir|create|copy) (?P<path>/\S+?): )?no space left on"
          r" device", C.DISK, False, _no_space),
    _rule("read_only", r"(?P<path>/[^\s:]*): read-only file system", C.STORAGE, True, _read_only),
    _rule("containerd_timeout", r"timeout waiting for containerd to start", C.CONTAINERD, True,
          _containerd_timeout),
    _rule("containerd_no_plugins", r"failed to dial \"(?P<socket>[^\"]+)\": unknown service"
          r" containerd\.services\.\S+: not implemented", C.DISK, True,
          _containerd_no_plugins),
    _rule("containerd_dial_failed", r"failed to dial \"(?P<socket>[^\"]+)\": (?P<error>.+)$",
          C.CONTAINERD, True, _containerd_dial),
    _rule("containerd_dialing", r"error while dialing:? dial unix:(?://)?(?P<socket>[^\s\"]+?):"
          r" (?P<error>[^\"\\.]+)", C.CONTAINERD, False, _containerd_dial, flags=re.I),
    _rule("containerd_start", r"failed to start containerd: (?P<error>.+)$", C.CONTAINERD, True,
          _containerd_start),
    _rule("containerd_events", r"Failed to get event.*(?:Unavailable|EOF)", C.CONTAINERD, False,
          _containerd_events),
    _rule("iptables_nat_chain", r"(?:failed to create|Failed to program) NAT chain"
          r" (?P<chain>\S+?):? (?P<error>.+)$", C.NETWORK, True, _nat_chain, flags=re.S),
    _rule("network_controller", r"Error initializing network controller: (?P<error>.+)$",
          C.NETWORK, True, _network_controller, flags=re.S),
    _rule("address_in_use", r"listen (?:tcp|tcp4|tcp6|unix) (?P<address>\S+): bind: address"
          r" already in use", C.NETWORK, True, _address_in_use),
    _rule("tls_key_pair", r"(?:Could not load|Error reading) X509 key pair \(cert: \"(?P<cert>"
          r"[^\"]*)\", key: \"(?P<key>[^\"]*)\"\): (?P<error>.+)$", C.TLS, True, _tls_key_pair),
    _rule("tls_ca_pem", r"failed to append certificates from PEM file: \"(?P<path>[^\"]+)\"",
          C.TLS, True, _tls_ca),
    _rule("tls_ca_read", r"could not read CA certificate \"(?P<path>[^\"]+)\": (?P<error>.+)$",
          C.TLS, True, _tls_ca_read),
    _rule("runc_rlimit", r"error setting rlimit type (?P<type>\d+): (?P<error>[a-z ]+)",
          C.RUNTIME, False, _rlimit),
    _rule("failed_to_start", r"failed to start daemon[:,] (?P<error>.+)$", C.UNKNOWN, True,
          _failed_to_start),
    _rule("cannot_run", r"^dind-supervisor policy: cannot run (?P<program>\S+): (?P<error>.+)$",
          C.CONFIG, True, _cannot_run),
    _rule("go_crash", r"^(?:panic|fatal error): (?P<error>.+)$", C.UNKNOWN, True, _go_crash),
)  # fmt: skip

_CONTINUATION = re.compile(r"^(?:\s+\(exit status \d+\)\s*$|See 'dockerd --help'\.)")


def is_continuation(line: str) -> bool:
    """Whether a line only ends the message of the line before (join them to explain)."""
    return bool(_CONTINUATION.match(line))


def _text(line: DockerdLine | str) -> str:
    parsed = parse_dockerd_line(line) if isinstance(line, str) else line
    text = parsed.message
    if not parsed.structured and isinstance(line, str):
        text = line.rstrip("\r\n")  # keep a multi-line message whole
    # logrus lines carry the cause in their error= field ("failed to load plugin"
    # ... error="write ...: no space left on device").
    extra = []
    if "error" in parsed.fields:
        extra.append(parsed.fields["error"])
    if "driver" in parsed.fields:
        extra.append(f"driver={parsed.fields['driver']}")
    return " ".join([text, *extra])


def explain(line: DockerdLine | str) -> Explanation | None:
    """The first table entry matching the line; None when the line is not a known failure."""
    text = _text(line)
    if not text.strip():
        return None
    for rule in RULES:
        match = rule.pattern.search(text)
        if match is None:
            continue
        cause, remedy, details = rule.build(match)
        return Explanation(
            rule=rule.name,
            category=rule.category,
            cause=cause,
            remedy=remedy,
            fatal=rule.fatal,
            reason=details.get("reason"),
            details=details,
        )
    return None
