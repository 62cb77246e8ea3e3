#!/usr/bin/env bash
# Runs the agent for real on this machine, isolated from its own Docker:
# dockerd from Debian's packages, state under ./.local-state, the agent as
# PID 1 of private PID, mount and network namespaces (so /var/lib/docker,
# /run and /certs inside are bind mounts of local folders, and docker0 and
# iptables rules stay in the namespace). TLS is on (certificates in
# ./.local-state/certs). Stop with Ctrl-C: the agent stops dockerd and exits 0.
# Extra arguments go to the agent's `run`, e.g. `-- --debug` for dockerd.
#
# Installs only what running needs (scripts/setup.sh --runtime), and prints
# the host-side commands that reach the agent: its HTTP endpoint also listens
# on a unix socket under /run, which is ./.local-state/run on the host, so
# `status`, `wait` and `check` need no nsenter.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# Bash's own clock, so the ready line can say how long the whole start took.
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
started=$(now_ms)

scripts/setup.sh --runtime

state=${DIND_LOCAL_STATE:-$repo/.local-state}
mkdir -p "$state"/{lib,run,certs} /var/lib/docker /certs
state=$(cd "$state" && pwd) # absolute, so the printed commands work from anywhere
cli=$repo/.venv/bin/dind-supervisor
agent_sock=$state/run/dind-supervisor/agent.sock

# Shell-quoted, so each printed command can be pasted as it is.
q_cli=$(printf '%q' "$cli")
q_sock=$(printf '%q' "$agent_sock")
cat <<EOF
run-local: state in $state (TLS on: certificates in $state/certs)
run-local: from another shell on this host:
  docker -H $(printf '%q' "unix://$state/run/docker.sock") info
  $q_cli status --socket $q_sock
  $q_cli wait --socket $q_sock --timeout 60
  $q_cli check --socket $q_sock
  curl -s --unix-socket $q_sock http://agent/metrics
  (or export DIND_SUPERVISOR_HTTP_SOCKET=$q_sock, and leave out --socket)
run-local: starting the agent; Ctrl-C stops dockerd gracefully and exits 0
EOF

# One line once dockerd answers, with the time since this script started. The
# waiter polls in one-second slices and gives up as soon as this script's
# process (unshare, after the exec below) is gone, so it never outlives the agent.
# Started through a subshell that exits at once, so it is not unshare's child:
# unshare waits only for the namespace's PID 1 and would leave it a zombie.
announce_ready() {
  local parent=$1
  local code ms
  while kill -0 "$parent" 2>/dev/null; do
    code=0
    "$cli" wait --socket "$agent_sock" --timeout 1 2>/dev/null || code=$?
    case $code in
      0) ms=$(($(now_ms) - started))
         printf 'run-local: dockerd ready, %d.%d s after the start of run-local.sh\n' \
           $((ms / 1000)) $((ms % 1000 / 100))
         return ;;
      1) ;;       # not up or not ready yet: the next slice
      *) return ;; # wait itself failed (usage error): polling again would only spin
    esac
  done
}
(announce_ready $$ &)

# The client-side hint above must not move the agent's own socket.
unset DIND_SUPERVISOR_HTTP_SOCKET
exec unshare --pid --fork --mount --net --mount-proc --propagation private -- /bin/sh -c "
  mount --bind '$state/lib' /var/lib/docker &&
  mount --bind '$state/run' /run &&
  mount --bind '$state/certs' /certs &&
  ip link set lo up &&
  DOCKER_TLS_CERTDIR=/certs exec '$cli' run --log-format console \"\$@\"
" dind-supervisor "$@"
