#!/bin/sh
# Run the benchmarks (as root): bench/run.sh [--quick]. Installs what it needs
# first (scripts/setup.sh: wrk, the venv with matplotlib); see docs/benchmarks.md.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${PYTHON:-.venv/bin/python}" -m bench.run "$@"
