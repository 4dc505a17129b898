#!/usr/bin/env bash
# On a lent CUDA machine: make the default model and the carried wheels usable (sourced by
# the other gpu_*.sh scripts).
#
# The device tool carries at most 64 MiB per call, so the 94 MiB GGUF travels in two parts:
# .gpu/a/gguf.part.aa in a first call, which copies it to /root/fp (bash scripts/gpu_prepare.sh
# stash); .gpu/b/gguf.part.ab in the next call, which joins, checks and converts them once
# into $MODEL.  Keep both calls within the machine's warm window (30 s): a bare machine
# forgets /root/fp.  Make the parts here with
#   mkdir -p .gpu/a .gpu/b && split -b 60M <gguf> .gpu/gguf.part. && mv .gpu/gguf.part.aa .gpu/a/ \
#     && mv .gpu/gguf.part.ab .gpu/b/ && sha256sum <gguf> | cut -d' ' -f1 > .gpu/a/gguf.sha256
set -euo pipefail
MODEL=${MODEL:-/root/fp/model}
if [ "${1:-}" = stash ]; then
  mkdir -p /root/fp && cp .gpu/a/gguf.part.aa .gpu/a/gguf.sha256 /root/fp/ && ls -la /root/fp
  exit 0
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
[ -d /tmp/site/gguf ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/gguf-*.whl
export PYTHONPATH=/tmp/site:$PWD
if [ ! -f $MODEL/config.json ]; then
  cat /root/fp/gguf.part.aa .gpu/b/gguf.part.ab > /tmp/smollm2.gguf
  echo "$(cat /root/fp/gguf.sha256)  /tmp/smollm2.gguf" | sha256sum -c -
  mkdir -p /tmp/gg && mv /tmp/smollm2.gguf /tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf
  python3 -c "
from pathlib import Path
from editor_core.loading import convert_gguf
convert_gguf(Path('/tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf'), Path('$MODEL').resolve())"
fi
