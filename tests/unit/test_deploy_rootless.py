"""Dockerfile.rootless, checked against docker:dind-rootless and /Dockerfile (it cannot be
built here: no registry)."""

from __future__ import annotations

import re

import pytest

from tests.unit.test_deploy import DOCKERFILE, REPO, final_stage, instructions, metadata

pytestmark = pytest.mark.unit

ROOTLESS = instructions(REPO / "Dockerfile.rootless")


def _base(found: list[tuple[str, str]]) -> str:
    [default] = [args for kw, args in found if kw == "ARG" and args.startswith("DIND_BASE=")]
    return default.removeprefix("DIND_BASE=")


def test_every_stage_starts_from_docker_dind_rootless_of_the_dind_version() -> None:
    """FROM ${DIND_BASE}, a docker:<x.y.z>-dind-rootless tag of /Dockerfile's own version."""
    assert {args.split()[0] for kw, args in ROOTLESS if kw == "FROM"} == {"${DIND_BASE}"}
    match = re.fullmatch(r"docker:(\d+\.\d+\.\d+)-dind-rootless(@sha256:[0-9a-f]{64})?",
                         _base(ROOTLESS))
    assert match, _base(ROOTLESS)
    root = re.fullmatch(r"docker:(\d+\.\d+\.\d+)-dind(@sha256:[0-9a-f]{64})?", _base(DOCKERFILE))
    assert root
    assert match.group(1) == root.group(1)


def test_installs_as_root_and_runs_as_user_rootless() -> None:
    """Each stage switches to root before apk; the image's last USER is rootless."""
    starts = [i for i, (kw, _) in enumerate(ROOTLESS) if kw == "FROM"]
    for start, end in zip(starts, [*starts[1:], len(ROOTLESS)], strict=True):
        stage = ROOTLESS[start:end]
        first_apk = next(i for i, (kw, args) in enumerate(stage) if "apk add" in args)
        users = [args for kw, args in stage[:first_apk] if kw == "USER"]
        assert users == ["root"]
    assert [args for kw, args in final_stage(ROOTLESS) if kw == "USER"][-1] == "rootless"


def test_the_user_its_subordinate_ids_and_runtime_folder_are_there() -> None:
    """uid 1000 `rootless`, rootless:100000:65536 in /etc/subuid and /etc/subgid, /run/user 1777."""
    runs = " ".join(args for kw, args in final_stage(ROOTLESS) if kw == "RUN")
    assert "adduser -h /home/rootless -g Rootless -D -u 1000 rootless" in runs
    for file in ("/etc/subuid", "/etc/subgid"):
        assert f"echo 'rootless:100000:65536' >> {file}" in runs
    assert "mkdir -p /run/user && chmod 1777 /run/user" in runs
    assert "chown -R rootless:rootless /home/rootless/.local/share/docker" in runs


def test_same_contract_as_the_root_image_but_the_rootless_data_root() -> None:
    """ENTRYPOINT, CMD, HEALTHCHECK, EXPOSE and ENV as /Dockerfile; VOLUME is the user's."""
    rootless, root = metadata(ROOTLESS), metadata(DOCKERFILE)
    assert rootless["VOLUME"] == ["/home/rootless/.local/share/docker"]
    for key in ("ENTRYPOINT", "CMD", "HEALTHCHECK", "EXPOSE", "ENV"):
        assert rootless[key] == root[key], key
    runs = " ".join(args for kw, args in final_stage(ROOTLESS) if kw == "RUN")
    assert "chmod 1777 /certs /certs/client" in runs


def test_it_copies_what_the_root_image_copies() -> None:
    """The same COPY sources as /Dockerfile, so .dockerignore serves both."""
    def sources(found: list[tuple[str, str]]) -> set[str]:
        copied = [args for kw, args in found if kw == "COPY" and "--from" not in args]
        return {src for args in copied for src in args.split()[:-1]}

    assert sources(ROOTLESS) == sources(DOCKERFILE)
