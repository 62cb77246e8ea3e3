#!/usr/bin/env bash
# Times the quick start: from `scripts/run-local.sh` to `docker info` answering
# on its socket, then stops the agent (SIGTERM to its PID 1: a graceful stop)
# and removes what the run left. Each run uses a fresh state folder, so the
# certificates are issued as on a first start. Run it as root.
#
#   scripts/time-run-local.sh            with .venv as it is (warm: one dpkg query)
#   rm -rf .venv && scripts/time-run-local.sh
#                                        from a fresh venv (cold: venv + pip install)
#
# Prints one line: the seconds and whether the venv existed. The agent's log is
# kept (next to the state folder) only when the run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

venv=warm
[[ -x .venv/bin/python ]] || venv=cold
mkdir -p .local-state
state=$(mktemp -d "$PWD/.local-state/timing.XXXXXX")
log=$state.log
started=$(now_ms)
# Its own session, so the signals below reach only this run.
DIND_LOCAL_STATE=$state setsid scripts/run-local.sh >"$log" 2>&1 &
runner=$!

pid1() { # the namespace's PID 1: unshare's only child
  local children
  children=$(cat "/proc/$runner/task/$runner/children" 2>/dev/null || true)
  echo "${children%% *}"
}
stop() {
  local pid
  pid=$(pid1)
  [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
  wait "$runner" 2>/dev/null || true
  rm -rf "$state"
}
trap stop EXIT

deadline=$((started + 180000))
until docker -H "unix://$state/run/docker.sock" info >/dev/null 2>&1; do
  if ! kill -0 "$runner" 2>/dev/null; then
    echo "time-run-local: run-local.sh ended before docker answered; log: $log" >&2
    exit 1
  fi
  if (($(now_ms) > deadline)); then
    echo "time-run-local: docker did not answer within 180 s; log: $log" >&2
    exit 1
  fi
  sleep 0.05 # the poll's pace, not a synchronisation: the loop checks the outcome
done
ms=$(($(now_ms) - started))
printf 'time-run-local: docker info answered %d.%d s after run-local.sh started (venv %s)\n' \
  $((ms / 1000)) $((ms % 1000 / 100)) "$venv"
rm -f "$log" # kept only when something went wrong
