#!/usr/bin/env bash
# Meta-train the default editor on a lent CUDA machine, in resumable pieces.
#
# The model and the gguf wheel are made ready by scripts/gpu_prepare.sh (the GGUF travels in
# two calls, see there); this script trains for $MINUTES and copies the best checkpoint
# (split under the 16 MiB limit on returned files) to $OUT.
#   usage: bash scripts/gpu_train.sh MINUTES [extra `factpatch train` args]
set -euo pipefail
MINUTES=${1:-8}; shift || true
RUN=${RUN:-/root/fp/run}    # outside the repo: carried paths are replaced on every call
MODEL=${MODEL:-/root/fp/model}
source scripts/gpu_prepare.sh
resume=""; [ -d $RUN/last ] && resume="--resume"
python3 scripts/fp_train.py --model $MODEL --data .gpu/facts/train.jsonl \
  --val-data .gpu/facts/val.jsonl --out $RUN --device cuda --max-minutes "$MINUTES" $resume "$@" \
  2>&1 | tr '\r' '\n' | grep -v '^meta-train' | tail -n 60
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
