"""Tests for supervisor.config: precedence of sources, docker:dind variables, coercion, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import config
from supervisor.config import load, parse_duration, parse_listen
from supervisor.errors import EXIT_USAGE, ConfigError

pytestmark = pytest.mark.unit


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dind.toml"
    path.write_text(text)
    return path


def assert_names(exc: ConfigError, *, key: str, value: object, source: str) -> None:
    """The error carries key, value and source, and its message shows all three."""
    assert exc.key == key
    assert exc.value == value
    assert source in exc.source
    message = str(exc)
    assert key in message
    assert repr(value) in message
    assert source in message
    assert exc.exit_code == EXIT_USAGE


# Precedence ----------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    """With no file, no variables and no flags, the documented defaults apply."""
    cfg = load(env={})
    assert cfg.dockerd.data_root == Path("/var/lib/docker")
    assert cfg.dockerd.exec_root == Path("/var/run/docker")
    assert cfg.dockerd.host == "unix:///var/run/docker.sock"
    assert cfg.http.listen == "0.0.0.0:9324"
    assert cfg.tls.listen == "tcp://0.0.0.0:2376"
    assert cfg.dockerd.plain_tcp is True  # docker:dind's 2375 when TLS is off
    assert cfg.plain_tcp_served is True
    assert cfg.dockerd.exact_args is False
    assert cfg.tls_enabled is False
    assert dict(cfg.sources) == {}


def test_file_then_env_then_flags_later_wins(tmp_path: Path) -> None:
    """defaults < TOML < environment < flags, key by key, with each value's source recorded."""
    path = write_toml(
        tmp_path,
        '[dockerd]\nstart_timeout = "10s"\nstop_timeout = 25\nmtu = 1400\n'
        '[log]\nlevel = "debug"\n',
    )
    env = {
        "DIND_SUPERVISOR_DOCKERD_START_TIMEOUT": "20s",
        "DIND_SUPERVISOR_DOCKERD_STOP_TIMEOUT": "30",
    }
    cfg = load(env=env, config_file=path, flags={("dockerd", "start_timeout"): "40s"})
    assert cfg.dockerd.start_timeout == 40.0  # flag over env over file
    assert cfg.dockerd.stop_timeout == 30.0  # env over file
    assert cfg.dockerd.mtu == 1400  # file over default
    assert cfg.log.level == "debug"
    assert cfg.liveness.interval == 5.0  # default
    assert cfg.sources["dockerd.start_timeout"] == "flag --dockerd-start-timeout"
    assert cfg.sources["dockerd.stop_timeout"] == "environment DIND_SUPERVISOR_DOCKERD_STOP_TIMEOUT"
    assert cfg.sources["dockerd.mtu"] == f"config file {path}"
    assert "liveness.interval" not in cfg.sources


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    """DIND_SUPERVISOR_CONFIG names the TOML file when --config is not given."""
    path = write_toml(tmp_path, '[log]\nformat = "console"\n')
    cfg = load(env={"DIND_SUPERVISOR_CONFIG": str(path)})
    assert cfg.log.format == "console"


def test_config_flag_wins_over_config_variable(tmp_path: Path) -> None:
    """An explicit config file replaces the one DIND_SUPERVISOR_CONFIG names."""
    ignored = tmp_path / "ignored.toml"
    ignored.write_text('[log]\nformat = "json"\n')
    chosen = write_toml(tmp_path, '[log]\nformat = "console"\n')
    cfg = load(env={"DIND_SUPERVISOR_CONFIG": str(ignored)}, config_file=chosen)
    assert cfg.log.format == "console"


def test_own_variables_for_every_section() -> None:
    """DIND_SUPERVISOR_<SECTION>_<KEY> reaches the key, including keys with underscores."""
    env = {
        "DIND_SUPERVISOR_RESTART_BACKOFF_INITIAL": "250ms",
        "DIND_SUPERVISOR_RESTART_MAX_FAILURES": "7",
        "DIND_SUPERVISOR_LIVENESS_FAILURES": "4",
        "DIND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:9999",
        "DIND_SUPERVISOR_AGENT_STATE_DIR": "/tmp/agent-state",
        "DIND_SUPERVISOR_DOCKERD_LIVE_RESTORE": "false",
        "DIND_SUPERVISOR_DOCKERD_ARGS": "--debug  --storage-driver vfs",
    }
    cfg = load(env=env)
    assert cfg.restart.backoff_initial == 0.25
    assert cfg.restart.max_failures == 7
    assert cfg.liveness.failures == 4
    assert cfg.http.listen == "127.0.0.1:9999"
    assert cfg.agent.state_dir == Path("/tmp/agent-state")
    assert cfg.dockerd.live_restore is False
    assert cfg.dockerd.args == ("--debug", "--storage-driver", "vfs")


def test_unrelated_variables_are_ignored() -> None:
    """Variables outside our prefix (PATH, HOME, DOCKER_*) never cause errors."""
    cfg = load(env={"PATH": "/bin", "HOME": "/root", "DOCKER_BUILDKIT": "1", "DIND_X": "y"})
    assert cfg == load(env={})


def test_dockerd_args_appended_after_configured_args(tmp_path: Path) -> None:
    """Arguments after `--` come after the configured dockerd args, in their order."""
    path = write_toml(tmp_path, '[dockerd]\nargs = ["--debug", "--mtu=1400"]\n')
    cfg = load(env={}, config_file=path, dockerd_args=["--storage-driver", "overlay2"])
    assert cfg.dockerd.args == ("--debug", "--mtu=1400", "--storage-driver", "overlay2")
    assert cfg.sources["dockerd.args"] == "arguments after --"


def test_dockerd_args_alone() -> None:
    """Arguments after `--` alone become dockerd.args verbatim."""
    cfg = load(env={}, dockerd_args=["--log-level", "debug", "--tls=false"])
    assert cfg.dockerd.args == ("--log-level", "debug", "--tls=false")


# docker:dind's variables ------------------------------------------------------


def test_docker_tls_certdir_empty_disables_tls() -> None:
    """DOCKER_TLS_CERTDIR='' (docker:dind's way to turn TLS off) leaves TLS off."""
    cfg = load(env={"DOCKER_TLS_CERTDIR": ""})
    assert cfg.tls_enabled is False
    assert cfg.tls.certdir == ""


def test_docker_tls_certdir_set_enables_tls() -> None:
    """DOCKER_TLS_CERTDIR=/certs turns TLS on with that directory."""
    cfg = load(env={"DOCKER_TLS_CERTDIR": "/certs"})
    assert cfg.tls_enabled is True
    assert cfg.tls.certdir == "/certs"
    assert cfg.sources["tls.certdir"] == "environment DOCKER_TLS_CERTDIR"


def test_own_variable_overrides_docker_tls_certdir() -> None:
    """Our own variable is read after docker:dind's, so it wins."""
    cfg = load(env={"DOCKER_TLS_CERTDIR": "/certs", "DIND_SUPERVISOR_TLS_CERTDIR": "/mine"})
    assert cfg.tls.certdir == "/mine"


def test_docker_tls_san_kept_verbatim() -> None:
    """DOCKER_TLS_SAN reaches tls.san unchanged."""
    cfg = load(env={"DOCKER_TLS_SAN": "DNS:foo IP:10.0.0.1"})
    assert cfg.tls.san == "DNS:foo IP:10.0.0.1"


def test_docker_host_unix_socket() -> None:
    """DOCKER_HOST=unix://... sets the socket dockerd serves and the one we ping."""
    cfg = load(env={"DOCKER_HOST": "unix:///run/d.sock"})
    assert cfg.dockerd.host == "unix:///run/d.sock"
    assert cfg.socket_path == Path("/run/d.sock")


def test_docker_host_empty_is_ignored() -> None:
    """An empty DOCKER_HOST leaves the default socket."""
    assert load(env={"DOCKER_HOST": ""}).dockerd.host == "unix:///var/run/docker.sock"


@pytest.mark.parametrize(
    "host", ["tcp://docker:2376", "tcp://127.0.0.1:2375", "unix://", "/var/run/docker.sock"]
)
def test_docker_host_not_a_unix_socket_is_ignored(host: str) -> None:
    """A DOCKER_HOST that is not unix://PATH is ignored, as docker:dind does, with one notice."""
    cfg = load(env={"DOCKER_HOST": host})
    assert cfg.dockerd.host == "unix:///var/run/docker.sock"
    assert "dockerd.host" not in cfg.sources
    [(event, message)] = cfg.notices
    assert event == "docker_host_ignored"
    assert repr(host) in message


@pytest.mark.parametrize("host", ["tcp://127.0.0.1:2375", "unix://", "/var/run/docker.sock"])
def test_our_own_host_setting_must_be_a_unix_socket(host: str) -> None:
    """DIND_SUPERVISOR_DOCKERD_HOST is ours alone: a non-unix value is an error naming it."""
    with pytest.raises(ConfigError) as info:
        load(env={"DIND_SUPERVISOR_DOCKERD_HOST": host})
    assert_names(
        info.value, key="dockerd.host", value=host,
        source="environment DIND_SUPERVISOR_DOCKERD_HOST",
    )


@pytest.mark.parametrize(
    ("args", "socket"),
    [
        ((), "unix:///var/run/docker.sock"),
        (("--host=unix:///run/x.sock", "--group=12"), "unix:///run/x.sock"),
        (("-H", "tcp://0.0.0.0:2375", "-H", "unix:///run/y.sock"), "unix:///run/y.sock"),
        (("-H", "tcp://0.0.0.0:2375"), "unix:///run/dind-supervisor/dockerd.sock"),
    ],
)
def test_exact_mode_pings_the_socket_dockerd_flags_name(
    args: tuple[str, ...], socket: str
) -> None:
    """With exact arguments the agent's socket comes from dockerd's own --host flags (DOCKER_HOST
    and dockerd.host do not apply); only TCP hosts mean the agent's private socket."""
    cfg = load(
        env={"DOCKER_HOST": "unix:///elsewhere.sock", "DOCKER_TLS_CERTDIR": "/certs"},
        dockerd_args=args,
        exact_args=True,
    )
    assert cfg.dockerd.host == socket
    assert cfg.tls_enabled is False  # docker:dind issues no certificates for `dockerd ARGS`
    assert cfg.live_restore_on is False
    assert cfg.plain_tcp_served is False


def test_live_restore_follows_the_users_own_flag() -> None:
    """The final stop's container handling follows the --live-restore dockerd really gets."""
    assert load(env={}).live_restore_on is True
    assert load(env={}, dockerd_args=("--live-restore=false",)).live_restore_on is False
    exact = load(env={}, dockerd_args=("--live-restore",), exact_args=True)
    assert exact.live_restore_on is True


# Values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("30d", 30 * 86400.0),
        ("1.5h", 5400.0),
        (" 10 s ", 10.0),
        ("45", 45.0),
        ("0", 0.0),
        (12, 12.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    """Durations are numbers of seconds or strings with ms/s/m/h/d units."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["-5s", "-1", -1, -0.5, "5x", "5 minutes", "", "ms", "1e3", True, None, [5]]
)
def test_parse_duration_rejects(value: object) -> None:
    """Negative numbers, unknown units, booleans and non-durations are refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_boolean_variables(raw: str, expected: bool) -> None:
    """Boolean variables accept true/false, 1/0, yes/no, on/off in any case."""
    cfg = load(env={"DIND_SUPERVISOR_DOCKERD_PLAIN_TCP": raw})
    assert cfg.dockerd.plain_tcp is expected


def test_boolean_from_toml_and_flags(tmp_path: Path) -> None:
    """TOML booleans and flag booleans (from --x/--no-x) are taken as they are."""
    path = write_toml(tmp_path, "[dockerd]\nlive_restore = false\nplain_tcp = true\n")
    cfg = load(env={}, config_file=path, flags={("dockerd", "plain_tcp"): False})
    assert cfg.dockerd.live_restore is False
    assert cfg.dockerd.plain_tcp is False


def test_duration_keys_accept_units_everywhere(tmp_path: Path) -> None:
    """Duration keys take unit strings from TOML, variables and flags alike."""
    path = write_toml(tmp_path, '[liveness]\ninterval = "2m"\n')
    cfg = load(
        env={"DIND_SUPERVISOR_LIVENESS_TIMEOUT": "1500ms"},
        config_file=path,
        flags={("liveness", "kill_grace"): "1m"},
    )
    assert cfg.liveness.interval == 120.0
    assert cfg.liveness.timeout == 1.5
    assert cfg.liveness.kill_grace == 60.0


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:9324", ("0.0.0.0", 9324)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:9324", ("::1", 9324)),
        (":9324", ("0.0.0.0", 9324)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(address: str, expected: tuple[str, int]) -> None:
    """HOST:PORT (IPv6 in brackets; empty host = all addresses) splits into its parts."""
    assert parse_listen(address) == expected


@pytest.mark.parametrize(
    "address", ["localhost", "h:", "h:0", "h:65536", "h:http", "::1:9324", "::1", "[::1]"]
)
def test_parse_listen_rejects(address: str) -> None:
    """No port, a port out of range, or IPv6 without brackets is refused with an example."""
    with pytest.raises(ValueError, match=r"\[::1\]:9324|0\.0\.0\.0:9324"):
        parse_listen(address)


def test_empty_http_listen_turns_endpoint_off() -> None:
    """An empty [http] listen is valid: the endpoint is off."""
    assert load(env={"DIND_SUPERVISOR_HTTP_LISTEN": ""}).http.listen == ""


# Bad inputs -------------------------------------------------------------------

TOML_CASES = [
    # (id, toml text, key, value)
    ("unknown section", "[bogus]\nx = 1\n", "bogus.x", 1),
    ("unknown key", "[dockerd]\nstart_timeot = 5\n", "dockerd.start_timeot", 5),
    ("wrong type int", '[restart]\nmax_failures = "many"\n', "restart.max_failures", "many"),
    ("float for int", "[restart]\nmax_failures = 2.5\n", "restart.max_failures", 2.5),
    ("bool for int", "[liveness]\nfailures = true\n", "liveness.failures", True),
    ("wrong type str", "[log]\nlevel = 3\n", "log.level", 3),
    ("wrong type bool", '[dockerd]\nlive_restore = "sometimes"\n', "dockerd.live_restore",
     "sometimes"),
    ("wrong type list", "[dockerd]\nargs = [1, 2]\n", "dockerd.args", [1, 2]),
    ("negative duration", "[dockerd]\nstart_timeout = -1\n", "dockerd.start_timeout", -1),
    ("bad duration unit", '[dockerd]\nstop_timeout = "5y"\n', "dockerd.stop_timeout", "5y"),
    ("zero timeout", "[dockerd]\nstart_timeout = 0\n", "dockerd.start_timeout", 0.0),
    ("mtu out of range", "[dockerd]\nmtu = 70000\n", "dockerd.mtu", 70000),
    ("factor below 1", "[restart]\nbackoff_factor = 0.5\n", "restart.backoff_factor", 0.5),
    ("zero max failures", "[restart]\nmax_failures = 0\n", "restart.max_failures", 0),
    ("zero liveness failures", "[liveness]\nfailures = 0\n", "liveness.failures", 0),
    ("log level", '[log]\nlevel = "loud"\n', "log.level", "loud"),
    ("log format", '[log]\nformat = "xml"\n', "log.format", "xml"),
    ("listen without port", '[http]\nlisten = "localhost"\n', "http.listen", "localhost"),
    ("listen port 0", '[http]\nlisten = "0.0.0.0:0"\n', "http.listen", "0.0.0.0:0"),
    ("listen port too big", '[http]\nlisten = "0.0.0.0:70000"\n', "http.listen", "0.0.0.0:70000"),
    ("listen port not a number", '[http]\nlisten = "h:http"\n', "http.listen", "h:http"),
    ("tcp docker host", '[dockerd]\nhost = "tcp://0.0.0.0:2375"\n', "dockerd.host",
     "tcp://0.0.0.0:2375"),
    ("timeout above interval", '[liveness]\ninterval = "2s"\ntimeout = "3s"\n',
     "liveness.timeout", 3.0),
    ("backoff max below initial", '[restart]\nbackoff_initial = 10\nbackoff_max = 5\n',
     "restart.backoff_max", 5.0),
    ("empty path", '[dockerd]\ndata_root = ""\n', "dockerd.data_root", ""),
    ("scalar at top level", "start_timeout = 5\n", "start_timeout", 5),
]


@pytest.mark.parametrize(
    ("text", "key", "value"), [case[1:] for case in TOML_CASES], ids=[c[0] for c in TOML_CASES]
)
def test_bad_toml_values(tmp_path: Path, text: str, key: str, value: object) -> None:
    """Each bad TOML value is a ConfigError naming the key, the value and the file."""
    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(env={}, config_file=path)
    assert_names(info.value, key=key, value=value, source=f"config file {path}")


def test_malformed_toml(tmp_path: Path) -> None:
    """A file that is not TOML is a ConfigError naming the file and the parse error."""
    path = write_toml(tmp_path, "[dockerd\nstart_timeout = 5\n")
    with pytest.raises(ConfigError) as info:
        load(env={}, config_file=path)
    assert info.value.value == str(path)
    assert str(path) in str(info.value)
    assert "not valid TOML" in str(info.value)
    assert info.value.exit_code == EXIT_USAGE


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that does not exist is an error naming --config and the path."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load(env={}, config_file=path)
    assert_names(info.value, key="--config", value=str(path), source="command line")
    assert "not found" in str(info.value)


ENV_CASES = [
    ("DIND_SUPERVISOR_RESTART_MAX_FAILURES", "lots", "restart.max_failures"),
    ("DIND_SUPERVISOR_DOCKERD_START_TIMEOUT", "-3s", "dockerd.start_timeout"),
    ("DIND_SUPERVISOR_DOCKERD_PLAIN_TCP", "maybe", "dockerd.plain_tcp"),
    ("DIND_SUPERVISOR_RESTART_BACKOFF_FACTOR", "fast", "restart.backoff_factor"),
    ("DIND_SUPERVISOR_DOCKERD_NO_SUCH_KEY", "1", "dockerd.no_such_key"),
    ("DIND_SUPERVISOR_HTTP_LISTEN", "9324", "http.listen"),
]


@pytest.mark.parametrize(("name", "raw", "key"), ENV_CASES)
def test_bad_environment_values(name: str, raw: str, key: str) -> None:
    """A bad value in one of our variables names the key, the value and the variable."""
    with pytest.raises(ConfigError) as info:
        load(env={name: raw})
    assert_names(info.value, key=key, value=raw, source=f"environment {name}")


def test_unknown_variable_with_our_prefix() -> None:
    """DIND_SUPERVISOR_<unknown section>_... is an error naming the variable."""
    with pytest.raises(ConfigError) as info:
        load(env={"DIND_SUPERVISOR_BOGUS_THING": "1"})
    assert_names(info.value, key="DIND_SUPERVISOR_BOGUS_THING", value="1", source="environment")


@pytest.mark.parametrize(
    ("flags", "key", "value"),
    [
        ({("log", "level"): "loud"}, "log.level", "loud"),
        ({("dockerd", "mtu"): "big"}, "dockerd.mtu", "big"),
        ({("liveness", "interval"): "-1s"}, "liveness.interval", "-1s"),
        ({("http", "listen"): "nowhere"}, "http.listen", "nowhere"),
        ({("liveness", "timeout"): "10s"}, "liveness.timeout", 10.0),
    ],
)
def test_bad_flag_values(flags: dict[tuple[str, str], object], key: str, value: object) -> None:
    """A bad flag value names the key, the value and the flag."""
    with pytest.raises(ConfigError) as info:
        load(env={}, flags=flags)
    section, name = key.split(".")
    assert_names(info.value, key=key, value=value, source=f"flag {config.flag_name(section, name)}")


def test_flag_name_spelling() -> None:
    """Flags are --<section>-<key> with dashes."""
    assert config.flag_name("dockerd", "start_timeout") == "--dockerd-start-timeout"


def test_later_source_can_repair_earlier_bad_combination(tmp_path: Path) -> None:
    """Validation runs on the merged result: a flag may fix what the file got wrong."""
    path = write_toml(tmp_path, '[liveness]\ninterval = "2s"\ntimeout = "3s"\n')
    cfg = load(env={}, config_file=path, flags={("liveness", "interval"): "10s"})
    assert cfg.liveness.timeout == 3.0


def test_describe_lists_every_setting_with_help() -> None:
    """describe() lists every key of every section, each with a help text."""
    rows = config.describe()
    keys = {(section, key) for section, key, _default, _help in rows}
    assert ("dockerd", "start_timeout") in keys
    assert ("liveness", "failures") in keys
    assert all(help_text for *_rest, help_text in rows)


# Edges found while writing these tests (fixed) -----------------------------------


@pytest.mark.parametrize(("mtu", "ok"), [("0", True), ("10", False), ("67", False), ("68", True)])
def test_mtu_minimum_is_68(mtu: str, ok: bool) -> None:
    """MTU is 0 (detect) or 68..65535: values below the IPv4 minimum are refused."""
    env = {"DIND_SUPERVISOR_DOCKERD_MTU": mtu}
    if ok:
        assert load(env=env).dockerd.mtu == int(mtu)
    else:
        with pytest.raises(ConfigError) as info:
            load(env=env)
        assert_names(info.value, key="dockerd.mtu", value=int(mtu),
                     source="environment DIND_SUPERVISOR_DOCKERD_MTU")


@pytest.mark.parametrize("number", ["nan", "inf", "-inf"])
def test_non_finite_duration_rejected(tmp_path: Path, number: str) -> None:
    """NaN and infinite durations (valid TOML floats) are refused, naming the key and file."""
    path = write_toml(tmp_path, f"[dockerd]\nstart_timeout = {number}\n")
    with pytest.raises(ConfigError) as info:
        load(env={}, config_file=path)
    assert info.value.key == "dockerd.start_timeout"
    assert str(path) in str(info.value)


@pytest.mark.parametrize("number", ["nan", "inf"])
def test_non_finite_number_rejected(number: str) -> None:
    """A float setting given as 'nan' or 'inf' is refused rather than slipping past range checks."""
    with pytest.raises(ConfigError) as info:
        load(env={"DIND_SUPERVISOR_RESTART_BACKOFF_FACTOR": number})
    assert info.value.key == "restart.backoff_factor"
    assert "DIND_SUPERVISOR_RESTART_BACKOFF_FACTOR" in str(info.value)


@pytest.mark.parametrize(("text", "size"), [
    (1024, 1024), ("256MiB", 256 * 2**20), ("2GiB", 2 * 2**30), ("1.5G", 1_500_000_000),
    ("512 mb", 512_000_000), ("100", 100), ("4KiB", 4096),
])
def test_parse_size_accepts(text: object, size: int) -> None:
    """Sizes in bytes, binary (KiB..TiB) or decimal (K..T, KB..TB) units."""
    from supervisor.config import parse_size

    assert parse_size(text) == size


@pytest.mark.parametrize("value", [True, "lots", "5 parsecs", -1.5, ""])
def test_parse_size_rejects(value: object) -> None:
    from supervisor.config import parse_size

    with pytest.raises(ValueError, match=r"size|unit"):
        parse_size(value)


def test_low_space_settings_from_env_and_their_errors() -> None:
    """min_free takes a size from the environment; low_space only refuse or warn."""
    config = load(env={"DIND_SUPERVISOR_DATAROOT_MIN_FREE": "2GiB",
                       "DIND_SUPERVISOR_DATAROOT_LOW_SPACE": "warn"})
    assert config.dataroot.min_free == 2 * 2**30
    assert config.dataroot.low_space == "warn"
    with pytest.raises(ConfigError, match="DIND_SUPERVISOR_DATAROOT_LOW_SPACE"):
        load(env={"DIND_SUPERVISOR_DATAROOT_LOW_SPACE": "maybe"})
    with pytest.raises(ConfigError, match=r"dataroot\.min_free"):
        load(env={"DIND_SUPERVISOR_DATAROOT_MIN_FREE": "lots"})
