#!/usr/bin/env bash
# CPU against CUDA on the same synthetic studies: agreement and per-stage speed-up, at most 5 min.
#
#   bash benchmarks/gpu_check.sh [options of benchmarks/gpu_check.py]
#   bash benchmarks/gpu_check.sh --require-cuda --json benchmarks/results/gpu-check.json
#
# Runs with $TRIAGE_PYTHON, else the checkout's .venv/bin/python, else python3 (its torch must be
# a CUDA build for the GPU part). Needs only this repository and that environment: nothing is
# downloaded. Exit status: 0 agreed (or no CUDA: the CPU part ran and it says so), 1 a result
# disagreed, 2 --require-cuda without CUDA, 124 it ran past 5 minutes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${TRIAGE_PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$root"
exec timeout --kill-after=10 300 "$python" "$root/benchmarks/gpu_check.py" "$@"
