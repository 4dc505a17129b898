#!/usr/bin/env bash
# Sourced by the device scripts that run against a deadline (gpu_round.sh, gpu_clamp.sh):
# BUDGET seconds from now (the caller's first argument, default 480), `left` prints what
# remains; DEVICE and MODEL default to the lent CUDA machine's.
BUDGET=${1:-480}
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-/root/fp/model}
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
