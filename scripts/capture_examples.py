#!/usr/bin/env python3
"""Rewrite docs/examples.md from a real run: `wait`, `status` and `check` against a live agent.

Starts the agent as PID 1 of private namespaces with TLS on (the integration
tests' sandbox, tests/integration/sandbox.py, laid out as scripts/run-local.sh
lays out its state), runs three containers, one that exits and one only
created, then captures each command twice: inside the namespaces, as
`docker exec` would run it, and from the host through the agent's socket,
as the quick start's user would. Nothing is edited by hand afterwards; run
it again to refresh the page (as root, about 20 s):

    .venv/bin/python scripts/capture_examples.py

Every process it starts ends with the sandbox; the state folder
(.local-state/examples) is removed at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from supervisor import __version__  # noqa: E402
from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, poll  # noqa: E402

STATE = REPO / ".local-state" / "examples"
TARGET = REPO / "docs" / "examples.md"
# What a shell that knows nothing of the agent has: no DOCKER_TLS_CERTDIR, no
# DIND_SUPERVISOR_* variable. The commands must find the agent's settings themselves.
SHELL_ENV = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}


def _inside(box: Sandbox, *args: str) -> tuple[str, int, float]:
    """`dind-supervisor ARGS` in the agent's namespaces: (stdout and stderr, exit code, s)."""
    started = time.monotonic()
    result = box.nsenter(sys.executable, "-m", "supervisor", *args, cwd=REPO, env=SHELL_ENV,
                         timeout=120)
    return result.stdout + result.stderr, result.returncode, time.monotonic() - started


def _host(*args: str) -> tuple[str, int]:
    """`dind-supervisor ARGS` on the host, from the repository (relative paths as shown)."""
    # One stream, so a note on stderr shows where it was printed, as on a terminal.
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", *args], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=120, check=False, cwd=REPO, env=SHELL_ENV,
    )
    return result.stdout, result.returncode


def _console(command: str, output: str, code: int | None = None) -> str:
    lines = [f"$ {command}" + ('; echo "exit $?"' if code is not None else "")]
    if output.strip():
        lines.append(output.rstrip("\n"))
    if code is not None:
        lines.append(f"exit {code}")
    return "```console\n" + "\n".join(lines) + "\n```"


def _dockerd_version() -> str:
    found = subprocess.run(["dockerd", "--version"], capture_output=True, text=True, check=False)
    return found.stdout.strip().removeprefix("Docker version ").split(",")[0] or "?"


def capture() -> str:
    if STATE.exists():
        shutil.rmtree(STATE)
    STATE.mkdir(parents=True)
    tar = busybox_rootfs_tar(STATE)
    sock = STATE.relative_to(REPO) / "run" / "dind-supervisor" / "agent.sock"
    box = Sandbox(STATE, env={"DOCKER_TLS_CERTDIR": "/certs"},
                  agent_args=["--log-level", "info"])
    try:
        box.start()
        waited, wait_code, wait_seconds = _inside(box, "wait", "--timeout", "60")
        if wait_code != 0:
            raise SystemExit(f"wait failed:\n{waited}\n{box.log_tail()}")
        box.docker("import", str(tar), "busybox:example")
        for name in ("web", "worker", "cache"):
            box.docker("run", "-d", "--network", "none", "--name", name, "busybox:example",
                       "sleep", "3600")
        box.docker("run", "--network", "none", "--name", "migrate", "busybox:example", "true")
        box.docker("create", "--network", "none", "--name", "later", "busybox:example", "true")
        poll(lambda: (box.status().get("containers") or {}).get("running") == 3
             and box.status()["containers"].get("exited") == 1
             and box.status()["containers"].get("created") == 1,
             timeout=30, what="the container figures to settle")
        status, _c, _s = _inside(box, "status")
        checked, check_code, _s = _inside(box, "check")
        host_status, host_status_code = _host("status", "--socket", str(sock))
        host_check, host_check_code = _host("check", "--socket", str(sock))
        host_wait, host_wait_code = _host("wait", "--socket", str(sock), "--timeout", "5")
    finally:
        box.destroy()
        poll(lambda: not box.ns_processes(), timeout=30, what="an empty namespace")
    gone, gone_code = _host("wait", "--socket", str(sock), "--timeout", "2")
    shutil.rmtree(STATE)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return TEMPLATE.format(
        today=today, version=__version__, dockerd=_dockerd_version(), sock=sock,
        wait=_console("dind-supervisor wait --timeout 60", waited, wait_code),
        wait_seconds=f"{wait_seconds:.1f}",
        status=_console("dind-supervisor status", status),
        check=_console("dind-supervisor check", checked, check_code),
        host_wait=_console(f"dind-supervisor wait --socket {sock} --timeout 5", host_wait,
                           host_wait_code),
        host_status=_console(f"dind-supervisor status --socket {sock}", host_status,
                             host_status_code),
        host_check=_console(f"dind-supervisor check --socket {sock}", host_check,
                            host_check_code),
        gone=_console(f"dind-supervisor wait --socket {sock} --timeout 2", gone, gone_code),
    )


TEMPLATE = """\
# Examples from a real run

Written by `scripts/capture_examples.py` on {today} from a real agent:
dind-supervisor {version} as PID 1 of private PID, mount and network
namespaces (the integration tests' sandbox, laid out as
`scripts/run-local.sh` lays out `.local-state`), supervising Debian's dockerd
{dockerd} with TLS on (`DOCKER_TLS_CERTDIR=/certs`), after `docker run -d` of
three containers, one that ran and exited, and one only created. The machine
grants no CAP_SYS_RESOURCE, so the default resource policy could not be
applied in full: both commands say so and say what to change. Every command
ran in a shell without DOCKER_TLS_CERTDIR or any DIND_SUPERVISOR_* variable:
they find the agent (and `check` its settings) through its unix socket.

## Inside the container (as `docker exec` runs them)

### `dind-supervisor wait`

{wait}

Started together with the agent, it returned after {wait_seconds} s (the first
start includes issuing the certificates). Exit 0 as soon as `/readyz` answers
200; 1 when the timeout passes first, saying whether dockerd was not ready
or the agent could not be reached.

### `dind-supervisor status`

{status}

`dind-supervisor status --json` prints the same document as `GET /status`;
its fields are described in [status.md](status.md).

### `dind-supervisor check`

{check}

The first finding says where the settings came from: here the running
agent, asked over `/run/dind-supervisor/agent.sock`, so the TLS lines are
about its `/certs` although the shell had no DOCKER_TLS_CERTDIR. Warnings do
not fail the check: `run` works around them (best-effort policy). An
`[error  ]` line (for example a missing dockerd binary, or a strict policy
the kernel refuses) makes `check` exit 1.

## From the host (the quick start)

The agent's `/run` is a folder of the host, so its socket is too; its
network namespace is private, so TCP would not reach it.

{host_wait}

{host_status}

{host_check}

`check --socket` found the agent in another mount namespace and ran the
checks there (through `nsenter`), where `/var/lib/docker` and `/certs` are
the agent's, not the host's.

Once the agent has stopped, its socket file is left behind with nobody
listening:

{gone}
"""


def main() -> int:
    if os.geteuid() != 0:
        print("capture_examples: run as root (the sandbox makes namespaces)", file=sys.stderr)
        return 2
    TARGET.write_text(capture())
    print(f"capture_examples: wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
