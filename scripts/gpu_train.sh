#!/usr/bin/env bash
# Meta-train the default editor on a lent CUDA machine, in resumable pieces.
#
# The device tool carries at most 64 MiB per call, so the 94 MiB GGUF travels in two halves
# (.gpu/a/gguf.part.aa in one call, copied to /root/fp; .gpu/b/gguf.part.ab in the next); this script joins,
# checks and converts them once, then trains for $MINUTES and copies the best checkpoint
# (split under the 16 MiB limit on returned files) to $OUT.
#   usage: bash scripts/gpu_train.sh MINUTES [extra `factpatch train` args]
set -euo pipefail
MINUTES=${1:-8}; shift || true
RUN=${RUN:-/root/fp/run}    # outside the repo: carried paths are replaced on every call
MODEL=/root/fp/model
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/gguf-*.whl
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
resume=""; [ -d $RUN/last ] && resume="--resume"
python3 - train --model $MODEL --data .gpu/facts/train.jsonl --val-data .gpu/facts/val.jsonl \
  --out $RUN --device cuda --max-minutes "$MINUTES" $resume "$@" <<'PY' 2>&1 | tr '\r' '\n' | grep -v '^meta-train' | tail -n 60
import argparse, logging, sys
from service.commands import train
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
p = argparse.ArgumentParser(); sub = p.add_subparsers(); train.register(sub)
a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))
PY
python3 - <<'PY'
import json, os
for h in json.load(open(os.environ.get("RUN", "/root/fp/run") + "/last/trainer_state.json"))["history"]:
    if "ES" in h: print(json.dumps({k: round(v, 4) for k, v in h.items()}))
PY
if [ -n "${OUT:-}" ] && [ -d $RUN/best ]; then
  cp $RUN/best/config.json $RUN/best/manifest.json "$OUT"/
  split -b 15M $RUN/best/editor.safetensors "$OUT"/editor.safetensors.part.
  [ -f $RUN/best/preserve.safetensors ] && cp $RUN/best/preserve.safetensors "$OUT"/
  cp $RUN/last/trainer_state.json "$OUT"/
fi
