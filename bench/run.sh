#!/bin/sh
# Run the benchmarks (as root): bench/run.sh [--quick]. Needs wrk (Debian: apt-get install wrk)
# and matplotlib in the venv (pip install matplotlib); see docs/benchmarks.md.
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m bench.run "$@"
