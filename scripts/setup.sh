#!/usr/bin/env bash
# Installs everything dind-supervisor needs on a fresh Debian 12 machine (as root):
# the distribution's dockerd and the tools the tests use, and a virtualenv in .venv
# holding the package with its development extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  docker.io       # dockerd 20.10, containerd, runc: the daemon we supervise
  iptables        # dockerd's networking (both legacy and nft backends)
  iproute2        # ip: loopback and veths inside test namespaces
  util-linux      # unshare, nsenter, mount, prlimit
  busybox-static  # the tiny test image (docker import)
  prometheus      # promtool: checks metrics and alert rules
  debootstrap     # the rootfs of the nested DinD test image
  xfsprogs        # an xfs loop image for the d_type preflight test
  systemd         # systemd-analyze verifies the unit file
  wrk             # HTTP load for the benchmarks
  rootlesskit     # rootless mode: dockerd as an unprivileged user (tests/integration/test_rootless.py)
  slirp4netns     # its network driver (vpnkit is not packaged in Debian)
  uidmap          # newuidmap/newgidmap: the subordinate id ranges
  curl procps psmisc ca-certificates
  python3-venv
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  [[ $pkg == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's docker.io may start a system dockerd through its init scripts; the
# agent and the tests never use it, and must not share its paths.
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the package's metadata changed (an editable install
# picks up code changes by itself).
stamp=.venv/.dind-supervisor-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev,bench]'
  echo "$want" > "$stamp"
fi
