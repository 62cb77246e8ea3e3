"""Where the agent runs, so that a remedy names the knob that exists there.

Owns ``detect`` (pure over an environment and a root folder, which tests
point at a fake tree) and ``raise_limit_remedy``: how to give the agent a
higher hard rlimit from outside, said for a Kubernetes pod, a container
(docker, podman, compose), a systemd unit or a plain shell. Decides nothing
else; ``plan.py`` and ``explain.py`` use the remedy.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path


class Placement(enum.StrEnum):
    KUBERNETES = "kubernetes"  # a pod: no per-pod ulimit, the node's runtime decides
    CONTAINER = "container"  # docker/podman/compose: --ulimit at `docker run`
    SYSTEMD = "systemd"  # a unit: Limit*= in it
    SHELL = "shell"  # started from a shell (or anything else) on a host


def detect(env: Mapping[str, str], root: Path = Path("/")) -> Placement:
    """The most specific place the signs point to (a pod is also a container)."""
    if env.get("KUBERNETES_SERVICE_HOST") or (
        root / "var/run/secrets/kubernetes.io/serviceaccount"
    ).is_dir():
        return Placement.KUBERNETES
    # systemd gives every unit's processes INVOCATION_ID (v232+); a container's PID 1
    # never inherits it from the host.
    if env.get("INVOCATION_ID"):
        return Placement.SYSTEMD
    if (
        (root / ".dockerenv").exists()
        or (root / "run/.containerenv").exists()
        or env.get("container")
    ):
        return Placement.CONTAINER
    return Placement.SHELL


def raise_limit_remedy(
    placement: Placement, name: str, soft: str, hard: str, docker_flag: str
) -> str:
    """How to give the agent's process tree a higher ``name`` limit (docker's rlimit name:
    nofile, nproc, ...) from where it was started. ``docker_flag``: ``--ulimit name=s:h``."""
    unit_key = f"Limit{name.upper()}"
    if placement is Placement.KUBERNETES:
        return (
            f"Kubernetes has no per-pod ulimit: the pod gets the limits of the node's container"
            f" runtime, so raise {unit_key}= of containerd's (or CRI-O's) systemd unit on the"
            " nodes, or schedule the pod on nodes that give more"
        )
    if placement is Placement.CONTAINER:
        return (
            f"start this container with {docker_flag} (compose: `ulimits: {name}:"
            f" {{soft: {soft}, hard: {hard}}}`)"
        )
    if placement is Placement.SYSTEMD:
        return (
            f"set {unit_key}={soft}:{hard} in the agent's unit (`systemctl edit"
            " dind-supervisor`), then restart it"
        )
    return (
        f"raise it where the agent is started: as root, `prlimit --{name}={soft}:{hard}"
        " dind-supervisor run ...` (or `ulimit -H` in that shell first); for a user's"
        " sessions, /etc/security/limits.conf"
    )
