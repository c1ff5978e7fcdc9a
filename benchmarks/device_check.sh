#!/bin/bash
# The GPU checks in one call, for a machine lent for a few minutes (docs/training.md, "The GPU
# path"): the training-step benchmark at real size (base student, 224 px, batch 8) eager in fp32
# and bf16, then bf16 with torch.compile, then the CLI end to end on CUDA (distill with bf16-mixed,
# compile and fused AdamW; pretrain; finetune). Each part has its own time limit and is killed
# outright when it runs over (Lightning catches SIGTERM and may not exit while compiling), so
# one stuck part cannot eat the others' time. Logs go to $OUT (default ./device-check).
#
#   bash benchmarks/device_check.sh [STORE LABELS VAL_STORE]
#
# Without a chip store the CLI part runs on the synthetic default. Where hyperkd is not installed
# (a bare GPU machine), wheels in .whl/ (hyperkd's own from `pip wheel --no-deps .`, and any
# missing dependency such as rasterio) are installed into /tmp/site first.
OUT=${OUT:-device-check}
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - T0)) s] $*"; }
export PYTHONUNBUFFERED=1
if ! python3 -c "import hyperkd" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
fi
python3 -c "import torch, hyperkd; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1

stamp "train_step eager, fp32 and bf16"
timeout -k 10 200 python3 benchmarks/train_step.py --device cuda --student base --sizes 224 \
  --kinds pretrain "distill cold" "distill cached" --precisions fp32 bf16 --steps 5 --rounds 3 \
  >"$OUT/train_step_eager.log" 2>&1
echo "exit $?"; grep -v -i warn "$OUT/train_step_eager.log"

stamp "train_step bf16 + torch.compile"
timeout -k 10 ${COMPILE_S:-240} python3 benchmarks/train_step.py --device cuda --student base --sizes 224 \
  --kinds pretrain "distill cached" --precisions bf16 --compile --steps 5 --rounds 3 --no-optimizer \
  >"$OUT/train_step_compile.log" 2>&1
echo "exit $? (124: over its limit)"; grep -v -E "^W[0-9]{4} |Warning" "$OUT/train_step_compile.log" | tail -12

stamp "CLI end to end on CUDA"
STORE=${1:-synthetic} LABELS=${2:-} VAL=${3:-}
E2E=$(mktemp -d)
(
  set -x
  timeout -k 10 ${CLI_S:-150} hyperkd distill --teacher prithvi-tiny-synth --student enmap --data "$STORE" \
    --out "$E2E/kd" --precision bf16-mixed --set trainer.max_steps=40 --set trainer.compile=true \
    --set data.batch_size=4 --set trainer.figures=false
  timeout -k 10 90 hyperkd pretrain --recipe mae-small-data --data "$STORE" --out "$E2E/mae" \
    --precision bf16-mixed --set trainer.max_steps=40 --set trainer.figures=false
  if [ -n "$LABELS" ]; then
    timeout -k 10 90 hyperkd finetune --student "$E2E/mae" --task segmentation --data "$STORE" \
      --labels "$LABELS" --label-nodata 0 ${VAL:+--eval-data "$VAL"} --out "$E2E/ft" --epochs 5
  fi
) >"$OUT/cli.log" 2>&1
echo "exit $?"; grep -E "^\+ |^done|^error|Traceback|miou|mIoU" "$OUT/cli.log" | head -20
stamp "end"
