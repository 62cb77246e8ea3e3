"""Rootless mode: dockerd as an unprivileged user, through rootlesskit, as docker:dind-rootless.

Owns what differs when the agent is not root: the default paths under
``$HOME`` and ``$XDG_RUNTIME_DIR`` (``paths``), the prerequisites checked
before anything runs (``prereqs``), finding the real dockerd below rootlesskit
and whether nested cgroup limits can apply (``tree``, ``cgroups``), and the
``rootless`` part of /status (``status``). The rootlesskit command line lives
with dockerd's own in ``supervisor.dockerd.rootlesskit``. Standard library
only: the launch stage imports it before dockerd's spawn.
"""
