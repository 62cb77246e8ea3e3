"""A rootless machine for one test: the agent as uid 1000, PID 1 of private namespaces.

Built on ``Sandbox`` (PID, mount and network namespaces; /run, /certs and the
data folder bind-mounted from the test's own folders). Before the agent is
exec'd as uid 1000 (``setpriv``), the namespace's root prepares what the
docker:dind-rootless image would hold, each only in the sandbox's own mount
namespace: a password file naming user ``rootless`` (1000) and its
/etc/subuid and /etc/subgid entries (bind-mounted temporary files, so the
machine's own are never touched), a tmpfs /home with /home/rootless, the
/run/user folders, /certs owned by the user, and a /dev/net/tun the user may
open (this machine's is 0600; a tmpfs on /dev/net holds a 0666 node of the
same device). ``breakage`` takes away one prerequisite, to test its error.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.sandbox import PYTHON, Sandbox

UID = 1000
USER = "rootless"
HOME = f"/home/{USER}"
RUNTIME_DIR = f"/run/user/{UID}"
DATA_ROOT = f"{HOME}/.local/share/docker"
SUBIDS = f"{USER}:100000:65536\n"


def _etc_files(folder: Path, subids: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    # uid 1000 may have another name on this machine: ours replaces it.
    passwd, group = (
        "".join(f"{line}\n" for line in Path(f"/etc/{name}").read_text().splitlines()
                if line.split(":")[2:3] != [str(UID)])
        for name in ("passwd", "group")
    )
    files = {
        "passwd": passwd + f"{USER}:x:{UID}:{UID}:Rootless:{HOME}:/bin/sh\n",
        "group": group + f"{USER}:x:{UID}:\n",
        "subuid": subids,
        "subgid": subids,
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return {name: folder / name for name in files}


def _blocked_ancestor(path: Path) -> Path | None:
    """The first folder above ``path`` that others may not enter (e.g. /root, 0700)."""
    for folder in reversed(path.parents):
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def interpreter_reachable(root: Path) -> list[str]:
    """Commands that let uid 1000 reach the agent's interpreter where it lives below a folder
    closed to others (a pyenv Python under /root): that folder becomes a tmpfs in the
    sandbox holding only the interpreter's installation, bind-mounted back in place."""
    prefix = Path(os.path.realpath(sys.base_prefix))
    blocked = _blocked_ancestor(prefix)
    if blocked is None:
        return []
    keep = root / "interpreter"
    keep.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    return [
        f"mount --bind {q(str(prefix))} {q(str(keep))}",
        f"mount -t tmpfs -o mode=0755 tmpfs {q(str(blocked))}",
        f"mkdir -p {q(str(prefix))}",
        f"mount --move {q(str(keep))} {q(str(prefix))}",
    ]


def setup_script(root: Path, data_root: Path, *, subids: str = SUBIDS, breakage: str = "") -> str:
    """What the namespace's root does before it becomes uid 1000."""
    etc = _etc_files(root / "etc", subids)
    q = shlex.quote
    lines = interpreter_reachable(root)
    lines += [f"mount --bind {q(str(path))} /etc/{name}" for name, path in etc.items()]
    lines += [
        "mount -t tmpfs -o mode=0755 tmpfs /home",
        f"mkdir -p {DATA_ROOT}",
        f"mount --bind {q(str(data_root))} {DATA_ROOT}",
        f"chown -R {UID}:{UID} {HOME}",
        "mkdir -p /run/user && chmod 1777 /run/user",
        f"mkdir -p {RUNTIME_DIR} && chown {UID}:{UID} {RUNTIME_DIR} && chmod 0700 {RUNTIME_DIR}",
        f"chown {UID}:{UID} /certs",
        "mount -t tmpfs -o mode=0755 tmpfs /dev/net",
        "mknod -m 0666 /dev/net/tun c 10 200",
    ]
    if breakage:
        lines.append(breakage)
    return " && ".join(lines)


def agent_command(agent_args: list[str], dockerd_args: list[str]) -> list[str]:
    return [
        "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
        PYTHON, "-m", "supervisor", "run", "--log-level", "debug", *agent_args,
        "--", *dockerd_args,
    ]


class RootlessSandbox(Sandbox):
    """A Sandbox whose agent is uid 1000; dockerd's socket is under /run/user/1000."""

    @property
    def socket(self) -> Path:
        return self.run_dir / "user" / str(UID) / "docker.sock"


def rootless_box(make: Any, *, agent_args: list[str] | None = None,
                 dockerd_args: list[str] | None = None, env: dict[str, str] | None = None,
                 subids: str = SUBIDS, breakage: str = "") -> RootlessSandbox:
    """Start a RootlessSandbox through the ``sandboxes`` fixture's factory."""
    return make(
        factory=RootlessSandbox,
        command=agent_command(list(agent_args or []), list(dockerd_args or [])),
        env={"HOME": HOME, "XDG_RUNTIME_DIR": RUNTIME_DIR, **(env or {})},
        setup_for=lambda where: setup_script(where, where / "lib", subids=subids,
                                             breakage=breakage),
    )


def interpreter_works_as_user() -> str | None:
    """None when uid 1000 can run the agent's interpreter and import it, else why not."""
    result = subprocess.run(
        ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", PYTHON, "-c",
         "import supervisor.app"],
        capture_output=True, text=True, timeout=60, check=False, cwd=str(Path(__file__).parents[2]),
    )
    return None if result.returncode == 0 else result.stderr.strip()[-500:]
