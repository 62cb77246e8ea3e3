"""The data root's acceptance tests (issue 5) against a real dockerd, the agent PID 1.

State that survives a kill -9 of the whole namespace, one agent per data
root, stale pid files, where the data root lives (overlay, a real volume)
and disk-pressure GC on a small tmpfs. Data roots are shared between
sandboxes by passing the same ``data_root``; special filesystems are mounted
over /var/lib/docker by the sandbox's ``setup`` inside its own mount
namespace, so they vanish with it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import import_busybox
from tests.integration.sandbox import Sandbox, poll

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
RUN = ("run", "--network", "none")  # the sandbox's dockerd has no bridge


def inner_pid(box: Sandbox, host_pid: int | None) -> int:
    """The pid a host process has inside the sandbox's pid namespace."""
    assert host_pid is not None
    return box.ns_processes()[host_pid][0]


def container_running(box: Sandbox, name: str) -> bool:
    result = box.docker("inspect", "--format", "{{.State.Running}}", name, check=False)
    return result.stdout.strip() == "true"


def data_root_info(box: Sandbox) -> dict[str, str]:
    """The labels of the one dind_data_root_info series."""
    from prometheus_client.parser import text_string_to_metric_families

    code, body = box.http("/metrics")
    assert code == 200, body
    samples = [
        sample
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "dind_data_root_info"
    ]
    assert len(samples) == 1, samples
    assert samples[0].value == 1.0
    return dict(samples[0].labels)


def driver_reported(box: Sandbox) -> str | None:
    events = box.events_named("storage_driver_reported")
    return str(events[-1]["storage_driver"]) if events else None


# Survival and the clean-shutdown marker -------------------------------------


def test_kill_9_of_the_namespace_keeps_images_containers_volumes_and_counts_it(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path, tmp_path: Path
) -> None:
    """After kill -9 of all, a new agent finds images, a restart=always container, volume data."""
    data = tmp_path / "data"
    first = sandboxes(data_root=data)
    first.wait_ready()
    image = import_busybox(first, busybox_tar)
    image_id = first.docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    first.docker("volume", "create", "keep")
    written = first.docker(
        *RUN, "--rm", "-v", "keep:/data", image, "sh", "-c",
        "head -c 4194304 /dev/urandom > /data/blob && sha256sum /data/blob",
    ).stdout.split()[0]
    first.docker(*RUN, "-d", "--name", "always", "--restart=always", image, "sleep", "3600")
    assert container_running(first, "always")
    first_agent = first.events_named("agent_started")[0]["pid"]

    first.destroy()  # SIGKILL to PID 1: the kernel kills dockerd, containerd, shims, sleep
    poll(lambda: not first.ns_processes(), timeout=20, what="the first namespace gone")

    second = sandboxes(data_root=data)
    second.wait_ready()
    assert second.docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip() == (
        image_id
    )
    poll(lambda: container_running(second, "always"), timeout=30, what="`always` running again")
    names = second.docker("ps", "--format", "{{.Names}}").stdout.split()
    assert names == ["always"]
    read = second.docker(
        *RUN, "--rm", "-v", "keep:/data", image, "sha256sum", "/data/blob"
    ).stdout.split()[0]
    assert read == written
    assert second.metric("dind_unclean_shutdowns_total") == 1.0
    [event] = second.events_named("unclean_shutdown_detected")
    assert event["previous_pid"] == first_agent
    assert event["previous_host"] == socket.gethostname()
    assert event["level"] == "warning"
    assert second.status()["data_root"]["unclean_previous_stop"]["previous_pid"] == first_agent


def test_clean_stop_then_start_counts_no_unclean_shutdown(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """SIGTERM, exit 0, then a new agent on the same data root counts 0 unclean stops."""
    data = tmp_path / "data"
    first = sandboxes(data_root=data)
    first.wait_ready()
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=25) == 0

    second = sandboxes(data_root=data)
    second.wait_ready()
    assert second.metric("dind_unclean_shutdowns_total") == 0.0
    assert second.events_named("unclean_shutdown_detected") == []
    assert second.status()["data_root"]["unclean_previous_stop"] is None


# One agent per data root ----------------------------------------------------


def test_second_agent_on_same_data_root_exits_2_naming_holder_first_undisturbed(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """A second agent exits 2 naming pid, host and since; the first keeps its dockerd and serves."""
    data = tmp_path / "data"
    first = sandboxes(data_root=data)
    first.wait_ready()
    dockerd = first.dockerd_pid()
    holder_pid = first.events_named("agent_started")[0]["pid"]
    since = json.loads((data / ".dind-supervisor.lock").read_text())["since"]

    second = sandboxes(data_root=data)
    assert second.wait(timeout=30) == 2
    text = second.log_text()
    assert (
        f"data root /var/lib/docker is in use by pid {holder_pid}"
        f" on host {socket.gethostname()!r} since {since}"
    ) in text
    assert second.events_named("dockerd_started") == []
    assert not second.socket.exists()

    assert first.alive
    assert first.http("/readyz")[0] == 200
    assert first.dockerd_pid() == dockerd
    first.docker("volume", "create", "after-refusal")
    assert "after-refusal" in first.docker("volume", "ls", "--format", "{{.Name}}").stdout
    assert first.status()["dockerd"]["restarts"] == {}
    assert first.status()["data_root"]["locked"] is True
    # The refused agent left the first one's records alone.
    marker = json.loads((data / ".dind-supervisor.running").read_text())
    assert marker["pid"] == holder_pid
    assert json.loads((data / ".dind-supervisor.lock").read_text())["since"] == since


def test_agent_refuses_data_root_of_a_bare_dockerd(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """A dockerd started without the agent holds the data root: the agent exits 2 and says so."""
    data = tmp_path / "data"
    bare = sandboxes(data_root=data, command=["dockerd", "--bridge=none", "--iptables=false"])
    poll(bare.docker_answers, timeout=30, what="the bare dockerd answering")

    agent = sandboxes(data_root=data)
    assert agent.wait(timeout=30) == 2
    [failed] = agent.events_named("agent_failed")
    assert failed["exit_code"] == 2
    # The bare dockerd lives in another pid namespace: no pid to give, and it says so.
    assert "a dockerd not started by dind-supervisor holds volumes/metadata.db" in failed["error"]
    assert "its pid is not visible here" in failed["error"]
    assert agent.events_named("dockerd_started") == []
    assert bare.docker_answers()


# Stale pid files ------------------------------------------------------------


@pytest.mark.parametrize(
    ("seeded", "state"),
    [
        # Pids in a new namespace count up from 1: this one cannot exist yet.
        (30000, "dead"),
        # PID 1 is the agent's init: alive, and not a daemon.
        (1, "unrelated"),
    ],
)
def test_stale_pid_files_are_removed_and_dockerd_starts(
    sandboxes: Callable[..., Sandbox], tmp_path: Path, seeded: int, state: str
) -> None:
    """dockerd/containerd pid files naming a dead or unrelated pid are removed; dockerd starts."""
    root = tmp_path / "box"
    dockerd_file = root / "run" / "docker.pid"
    containerd_file = root / "run" / "docker" / "containerd" / "containerd.pid"
    for path in (dockerd_file, containerd_file):
        path.parent.mkdir(parents=True)
        path.write_text(f"{seeded}\n")

    box = sandboxes(root=root)
    box.wait_ready()
    checked = {event["path"]: event for event in box.events_named("pid_file_checked")}
    assert set(checked) == {"/var/run/docker.pid", "/var/run/docker/containerd/containerd.pid"}
    for event in checked.values():
        assert (event["state"], event["action"], event["pid"]) == (state, "removed", seeded)
        if state == "unrelated":
            assert event["process"] not in (None, "dockerd", "containerd")
    # The files now name the daemons that really run.
    assert int(dockerd_file.read_text()) == inner_pid(box, box.dockerd_pid())
    [containerd] = box.host_pids("containerd")
    assert int(containerd_file.read_text()) == inner_pid(box, containerd)
    assert box.docker_answers()


def test_without_cleaning_a_live_unrelated_pid_blocks_dockerd(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """Control: the same seeded pid file with cleaning off makes dockerd refuse to start."""
    root = tmp_path / "box"
    (root / "run").mkdir(parents=True)
    (root / "run" / "docker.pid").write_text("1\n")
    box = sandboxes(
        root=root,
        agent_args=["--no-dataroot-clean-pid-files", "--restart-max-failures", "1"],
    )
    assert box.wait(timeout=30) == 1
    assert "pid file found, ensure docker is not running" in box.log_text()


# Where the data root lives --------------------------------------------------


def test_overlay_data_root_is_warned_and_reported_not_persistent(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """On an overlay mount: a warning with remedy, fstype overlay, persistent false, the driver."""
    layers = {name: tmp_path / name for name in ("lower", "upper", "work")}
    for path in layers.values():
        path.mkdir()
    options = ",".join(f"{name}dir={path}" for name, path in layers.items())
    box = sandboxes(setup=f"mount -t overlay overlay -o {options} /var/lib/docker")
    box.wait_ready()
    driver = box.docker("info", "--format", "{{.Driver}}").stdout.strip()
    assert driver != "overlay2"  # dockerd refuses overlay2 on an overlay backing fs
    poll(lambda: driver_reported(box), timeout=10, what="the storage driver reported")
    assert data_root_info(box) == {
        "fstype": "overlay", "persistent": "false", "storage_driver": driver,
    }
    warnings = [
        event for event in box.events_named("data_root_finding") if event["level"] == "warning"
    ]
    overlay = [event for event in warnings if "is on an overlay mount" in event["message"]]
    assert len(overlay) == 1
    assert "mount a volume on the data root" in overlay[0]["remedy"]
    if driver == "vfs":
        assert any("uses the vfs storage driver" in event["message"] for event in warnings)
    # dockerd really wrote into the overlay's upper layer, not the bind-mounted folder.
    assert (layers["upper"] / driver).is_dir()


def test_real_volume_data_root_uses_overlay2_and_is_persistent(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """On a bind-mounted local folder (a volume): overlay2, persistent true, no warning."""
    box = sandboxes()
    box.wait_ready()
    assert box.docker("info", "--format", "{{.Driver}}").stdout.strip() == "overlay2"
    host_fstype = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(box.data_root)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    poll(lambda: driver_reported(box), timeout=10, what="the storage driver reported")
    assert data_root_info(box) == {
        "fstype": host_fstype, "persistent": "true", "storage_driver": "overlay2",
    }
    [inspected] = box.events_named("data_root_inspected")
    assert inspected["mount_point"] == "/var/lib/docker"
    assert inspected["overlay2_supported"] is True
    levels = {event["level"] for event in box.events_named("data_root_finding")}
    # Only free space may warn (a nearly full test machine); never the filesystem.
    assert not any(
        event["level"] == "warning" and "GiB free" not in event["message"]
        for event in box.events_named("data_root_finding")
    ), levels


# Disk-pressure GC -------------------------------------------------------------

GC_FS_MIB = 200
GC_HIGH = 0.60  # 120 MiB
GC_LOW = 0.35  # 70 MiB
KEPT_MIB = 20  # the image a stopped container uses, plus busybox
UNUSED_MIB = 20  # each of four unused images: 4 x 20 + 20 + ~2 = 102 MiB, 51 %
FILLER_MIB = 30  # a volume growing past the high mark: 132 MiB, 66 %; after GC 52 MiB, 26 %
STUCK_MIB = 80  # then the volume alone takes it to 132 MiB, 66 %: nothing left to prune


def random_image_tar(path: Path, size: int, *, base: Path | None = None) -> Path:
    """A tar with ``size`` bytes of random data (incompressible, no layer shared), on ``base``."""
    with tarfile.open(path, "w") as tar:
        if base is not None:
            with tarfile.open(base) as source:
                for member in source.getmembers():
                    tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("blob")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return path


def test_gc_prunes_unused_images_below_low_mark_and_keeps_image_in_use(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path, tmp_path: Path
) -> None:
    """Crossing gc_high on a small tmpfs prunes unused images below gc_low; an in-use one stays."""
    box = sandboxes(
        setup=f"mount -t tmpfs -o size={GC_FS_MIB}m tmpfs /var/lib/docker",
        agent_args=[
            "--dataroot-gc-enabled", "--dataroot-gc-high", str(GC_HIGH),
            "--dataroot-gc-low", str(GC_LOW), "--dataroot-gc-interval", "1",
        ],
    )
    box.wait_ready()
    assert box.metric("dind_data_root_size_bytes") == GC_FS_MIB * MIB

    def used() -> float:
        size = box.metric("dind_data_root_size_bytes")
        free = box.metric("dind_data_root_free_bytes")
        assert size
        assert free is not None
        return 1 - free / size

    kept_tar = random_image_tar(tmp_path / "kept.tar", KEPT_MIB * MIB, base=busybox_tar)
    box.docker("import", str(kept_tar), "kept:1")
    box.docker(*RUN, "--name", "user", "kept:1", "true")  # exits: a stopped container
    unused = [f"unused:{n}" for n in range(4)]
    for tag in unused:
        box.docker("import", str(random_image_tar(tmp_path / "u.tar", UNUSED_MIB * MIB)), tag)
    assert used() < GC_HIGH
    assert box.metric("dind_gc_runs_total") == 0.0

    box.docker(
        *RUN, "--rm", "-v", "scratch:/data", "kept:1",
        "dd", "if=/dev/zero", "of=/data/fill", "bs=1048576", f"count={FILLER_MIB}",
    )
    [finished] = poll(lambda: box.events_named("gc_finished"), timeout=20, what="a GC pass")
    assert finished["used_before"] >= GC_HIGH
    assert finished["used_after"] < GC_LOW
    assert finished["error"] is None
    assert used() < GC_LOW
    assert box.metric("dind_gc_runs_total") == 1.0
    reclaimed = box.metric("dind_gc_reclaimed_bytes_total")
    assert reclaimed is not None
    assert reclaimed >= len(unused) * UNUSED_MIB * MIB * 0.95

    def survivors() -> None:
        images = box.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        assert images == ["kept:1"]
        state = box.docker("inspect", "--format", "{{.State.Status}}", "user").stdout.strip()
        assert state == "exited"
        assert box.docker("volume", "ls", "--format", "{{.Name}}").stdout.split() == ["scratch"]

    survivors()
    # Pressure from what is in use: GC finds nothing to free, warns, and still keeps kept:1.
    box.docker(
        *RUN, "--rm", "-v", "scratch:/data", "kept:1",
        "dd", "if=/dev/zero", "of=/data/more", "bs=1048576", f"count={STUCK_MIB}",
    )
    stuck = poll(
        lambda: [e for e in box.events_named("gc_finished") if e["level"] == "warning"],
        timeout=20, what="a GC pass that cannot reach the low mark",
    )[0]
    assert stuck["used_after"] >= GC_HIGH
    assert stuck["reclaimed_bytes"] == 0
    assert "give the data root more room" in stuck["remedy"]
    survivors()
