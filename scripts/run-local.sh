#!/usr/bin/env bash
# Runs the agent for real on this machine, isolated from its own Docker:
# dockerd from Debian's packages, state under ./.local-state, the agent as
# PID 1 of private PID, mount and network namespaces (so /var/lib/docker,
# /run and /certs inside are bind mounts of local folders, and docker0 and
# iptables rules stay in the namespace). TLS is on (certificates in
# ./.local-state/certs). Stop with Ctrl-C: the agent stops dockerd and exits 0.
# Extra arguments go to the agent's `run`, e.g. `-- --debug` for dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

state=${DIND_LOCAL_STATE:-$PWD/.local-state}
mkdir -p "$state"/{lib,run,certs} /var/lib/docker /certs
echo "state: $state"
echo "docker CLI: docker -H unix://$state/run/docker.sock info"
echo "agent endpoint (inside the namespace): nsenter -t <pid of dind-supervisor> -n curl -s localhost:9324/status"
exec unshare --pid --fork --mount --net --mount-proc --propagation private -- /bin/sh -c "
  mount --bind '$state/lib' /var/lib/docker &&
  mount --bind '$state/run' /run &&
  mount --bind '$state/certs' /certs &&
  ip link set lo up &&
  DOCKER_TLS_CERTDIR=/certs exec '$PWD/.venv/bin/dind-supervisor' run --log-format console \"\$@\"
" dind-supervisor "$@"
