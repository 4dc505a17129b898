#!/usr/bin/env bash
# One device call (thirteenth session): malmen-opt's value clamp (value_opt.max_norm, ‖δ‖ ≤
# c·‖residual‖) against the number of simultaneous edits, at the N the CPU cannot reach in a
# session.  Eight mu_sweep processes share the GPU, each one setting over several N:
#   validation N = 256, 512, 1000 (the whole split), μ 3000 and 6000 (× the shipped N/256
#   rule): c = 2 (shipped), 1.5, 1.25, 1; and c = 2 with Adam lr 0.1 instead of 0.5 (does a
#   δ then stop at the stop loss before the bound?);
#   test N = 16, 256, 1024, μ 3000: c = 2, 1.5, 1.25 — for the record: the clamp rule is
#   chosen on the validation rows alone (docs/val_optimise.md says which).
# Rows are gathered into $OUT/rows.jsonl every 10 s, so a run cut short still returns what
# finished.
#   usage (device):  bash scripts/gpu_clamp.sh SECONDS
#   CPU smoke test:  SMOKE=1 DEVICE=cpu MODEL=data/models/smollm2-135m-instruct OUT=/tmp/o \
#                    WORK=/tmp/w F=data/facts bash scripts/gpu_clamp.sh 600
set -uo pipefail
source scripts/gpu_deadline.sh "${1:-480}"
WORK=${WORK:-/root/fp/clamp}
F=${F:-.gpu/facts}
CK=editor_core/checkpoints/smollm2-135m-instruct-optimise
mkdir -p "$OUT" "$WORK"
if [ "$DEVICE" = cuda ]; then
  source scripts/gpu_prepare.sh > "$OUT/log.txt" 2>&1 || { cat "$OUT/log.txt"; exit 1; }
  set +e
  nvidia-smi --query-gpu=name,memory.total --format=csv >> "$OUT/log.txt"
  python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)" >> "$OUT/log.txt"
fi
if [ -n "${SMOKE:-}" ]; then NV=8,12; NT=4,8; BATCH=8; else NV=256,512,1000; NT=16,256,1024; BATCH=128; fi
V=(--facts $F/val.jsonl --locality $F/locality_val.jsonl --neighborhood $F/neighborhood_val.jsonl)
T=(--facts $F/test.jsonl --locality $F/locality_test.jsonl --neighborhood $F/neighborhood_test.jsonl)
echo "start $(date -u +%T), budget ${BUDGET}s, device $DEVICE" >> "$OUT/log.txt"

sweep() {  # sweep NAME SPLIT-ARGS... -- EXTRA-ARGS...: one mu_sweep process in the background
  local name=$1; shift
  timeout $(( $(left) - 25 )) python3 scripts/mu_sweep.py --editor $CK --model "$MODEL" \
    --device "$DEVICE" --value-batch $BATCH --out "$WORK/$name" "$@" > "$WORK/$name.log" 2>&1 &
}
if [ "${ROUND:-1}" = 1 ]; then
  sweep val_c2     "${V[@]}" --n $NV --mu 3000,6000
  sweep val_c1.5   "${V[@]}" --n $NV --mu 3000,6000 --value-max-norm 1.5
  sweep val_c1.25  "${V[@]}" --n $NV --mu 3000,6000 --value-max-norm 1.25
  sweep val_c1     "${V[@]}" --n $NV --mu 3000,6000 --value-max-norm 1
  sweep val_c2_lr  "${V[@]}" --n $NV --mu 3000,6000 --value-lr 0.1
  sweep test_c2    "${T[@]}" --n $NT --mu 3000
  sweep test_c1.5  "${T[@]}" --n $NT --mu 3000 --value-max-norm 1.5
  sweep test_c1.25 "${T[@]}" --n $NT --mu 3000 --value-max-norm 1.25
else  # ROUND=2: the rule c(N) = max(1, 2 − ¼·log2(N/64)) chosen on round 1's validation rows
  R=(--facts editor_core/data/realworld.jsonl --locality editor_core/data/realworld_locality.jsonl
     --neighborhood editor_core/data/realworld_locality.jsonl)
  [ -n "${SMOKE:-}" ] && { N1=8; N2=4; N3=6; } || { N1=1024; N2=128; N3=127; }
  sweep test_c1    "${T[@]}" --n $N1 --mu 3000 --value-max-norm 1
  sweep val_c0.75  "${V[@]}" --n ${NV##*,} --mu 3000 --value-max-norm 0.75
  sweep val_c2     "${V[@]}" --n $N2 --mu 3000
  sweep val_c1.75  "${V[@]}" --n $N2 --mu 3000 --value-max-norm 1.75
  sweep rw_c2      "${R[@]}" --n $N3 --mu 3000
  sweep rw_c1.75   "${R[@]}" --n $N3 --mu 3000 --value-max-norm 1.75
fi

gather() {  # every process's rows, tagged with its name, and the ends of the logs
  python3 - "$WORK" "$OUT" <<'PY'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
rows, logs = [], []
for d in sorted(p for p in work.iterdir() if p.is_dir()):
    f = d / "rows.jsonl"
    if f.exists():
        rows += [json.dumps({"run": d.name, **json.loads(x)}) for x in f.read_text().splitlines()]
for f in sorted(work.glob("*.log")):
    logs.append(f"== {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
(out / "rows.jsonl").write_text("".join(r + "\n" for r in rows))
(out / "logs.txt").write_text("\n".join(logs) + "\n")
PY
}
while [ -n "$(jobs -rp)" ] && [ "$(left)" -gt 15 ]; do gather; sleep 10; done
gather
echo "end $(date -u +%T), $(left)s left, $(wc -l < "$OUT/rows.jsonl") rows" >> "$OUT/log.txt"
tail -n 3 "$OUT/log.txt"
