#!/usr/bin/env bash
# Installs what dind-supervisor needs on Debian 12 (as root), in one of two profiles:
#
#   scripts/setup.sh            everything: running, plus the tools the tests and
#                               benchmarks use and the package's dev and bench extras
#                               (scripts/test.sh, and so .ci/run, use this)
#   scripts/setup.sh --runtime  only what running the agent needs: dockerd and the
#                               system tools it calls, and the package's own runtime
#                               dependencies (scripts/run-local.sh uses this)
#
# One virtualenv, .venv, serves both: the full profile upgrades a runtime-only
# venv in place, and a full venv already satisfies --runtime. Safe to run
# again: on an up-to-date machine it costs one dpkg query and a hash, so that
# run-local.sh starts in seconds. Prints one line per step.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/setup.sh [--runtime | --dev]   (default: --dev, everything)"
}
profile=dev
case "${1:-}" in
  "" | --dev) profile=dev ;;
  --runtime) profile=runtime ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

RUNTIME_APT=(
  docker.io       # dockerd 20.10, containerd, runc: the daemon we supervise
  iptables        # dockerd's networking (both legacy and nft backends)
  iproute2        # ip: loopback inside the quick start's and the tests' namespaces
  util-linux      # unshare, nsenter, mount, prlimit
  ca-certificates # pip's downloads
  python3-venv    # the virtualenv (Debian splits ensurepip out of python3)
)
DEV_APT=(
  busybox-static  # the tiny test image (docker import)
  prometheus      # promtool: checks metrics and alert rules
  debootstrap     # the rootfs of the nested DinD test image, and of the VM lane's guest
  qemu-system-x86 # the VM lane (tests/vm): a cgroup v2 host with systemd, under KVM or TCG
  e2fsprogs       # mkfs.ext4 -d: the VM lane's disks from folders, without a loop mount
  xfsprogs        # an xfs loop image for the d_type preflight test
  systemd         # systemd-analyze verifies the unit file
  wrk             # HTTP load for the benchmarks
  strace          # bench/signal_window.py: exec to the block of PID 1's signals
  rootlesskit     # rootless mode: dockerd as an unprivileged user (tests/integration/test_rootless.py)
  slirp4netns     # its network driver (vpnkit is not packaged in Debian)
  uidmap          # newuidmap/newgidmap: the subordinate id ranges
  curl procps psmisc
)

# The clock for the per-step figures: bash's own, so a step costs no fork to time.
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
step() { printf 'setup: %s' "$*"; }

packages=("${RUNTIME_APT[@]}")
[[ $profile == dev ]] && packages+=("${DEV_APT[@]}")

# 1. Debian packages: one dpkg query for all of them (unknown names print nothing).
started=$(now_ms)
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for pkg in "${packages[@]}"; do
  grep -qx "$pkg installed" <<<"$installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  step "apt: installing ${missing[*]} ... "
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "done ($(since "$started"))"
else
  echo "setup: apt: ${#packages[@]} packages present"
fi

# 2. The virtualenv. Debian's docker.io may start a system dockerd through its
# init scripts; the agent and the tests never use it, and must not share its paths.
# When the interpreter has a pip that can install into another one (--python,
# pip 22.3 and later), the venv is made without its own pip: bootstrapping pip
# (ensurepip) is about 3 s of a cold start that running never needs. The dev
# profile installs pip into the venv, so a dev venv is an ordinary one.
PYTHON=${PYTHON:-python3}
base_pip_drives_others() {
  "$PYTHON" -c 'import pip, sys; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (22, 3))' \
    2>/dev/null
}
if [[ ! -x .venv/bin/python ]]; then
  started=$(now_ms)
  step "venv: creating .venv with $("$PYTHON" -c 'import sys; print(sys.executable)') ... "
  if base_pip_drives_others; then
    "$PYTHON" -m venv --without-pip .venv
  else
    "$PYTHON" -m venv .venv
  fi
  echo "done ($(since "$started"))"
fi
choose_pip() { # sets pip: the venv's own, else the interpreter's driving the venv
  if .venv/bin/python -c 'import pip' 2>/dev/null; then
    pip=(.venv/bin/python -m pip)
  elif base_pip_drives_others; then
    pip=("$PYTHON" -m pip --python .venv/bin/python)
  else
    .venv/bin/python -m ensurepip -q >/dev/null
    pip=(.venv/bin/python -m pip)
  fi
}

# 3. The package in the venv, editable (code changes need no reinstall). The stamp
# holds the profile and pyproject.toml's hash: a changed dependency list, or a
# runtime venv asked for the dev profile, reinstalls; anything else is a no-op.
stamp=.venv/.dind-supervisor-installed
want_hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
read -r have_profile have_hash 2>/dev/null <"$stamp" || true
if [[ ${have_profile:-} == dev && $profile == runtime ]]; then
  profile=dev # never downgrade: the dev venv already holds everything running needs
fi
if [[ ${have_profile:-} != "$profile" || ${have_hash:-} != "$want_hash" ]]; then
  started=$(now_ms)
  log=.venv/.setup-pip.log
  choose_pip
  if [[ $profile == dev ]]; then
    step "python: installing dind-supervisor with its dev and bench extras ... "
    target='.[dev,bench]'
  else
    step "python: installing dind-supervisor and its runtime dependencies ... "
    target='.'
  fi
  # pip itself (into the venv, or upgraded there) is left to the dev profile: it
  # costs seconds the quick start does not need.
  if ! { if [[ $profile == dev ]]; then "${pip[@]}" install -q --upgrade pip; fi &&
    "${pip[@]}" install -q -e "$target"; } >"$log" 2>&1; then
    echo "failed; pip said:"
    tail -n 30 "$log"
    exit 1
  fi
  echo "$profile $want_hash" >"$stamp"
  echo "done ($(since "$started"))"
else
  echo "setup: python: dind-supervisor ($profile) up to date in .venv"
fi
