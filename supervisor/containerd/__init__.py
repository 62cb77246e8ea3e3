"""containerd: who runs it (the agent, or dockerd itself), and watching it either way.

``plan`` decides (pure): who manages containerd, its paths, its configuration
file, the restart delay. ``probe`` asks its socket whether it answers.
``process`` starts or adopts the containerd the agent manages (synchronous:
the launch stage uses it before the event loop). ``service`` is the agent's
part: it sees containerd's exits, restarts it when it is the agent's, and
keeps ``dind_containerd_up`` and ``/readyz`` true to what containerd can do.
Why the agent manages it: docs/reliability.md, "containerd".
"""
