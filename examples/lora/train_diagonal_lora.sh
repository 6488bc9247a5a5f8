#!/usr/bin/env bash
# Teach the bundled demo model a motion it has never seen (diagonal: "a red circle moves up and to the left")
# with a LoRA, on a CPU, then measure it against the base model with benchmarks/lora_concept.py.
#
#     bash examples/lora/train_diagonal_lora.sh [WORK_DIR]
#
# 1. data: 800 clips moving along the four diagonals, plus 400 clips (and 40 stills) of the four axis directions
#    the demo model knows, so that the adapter learns the new motion without forgetting the old ones; a held-out
#    set of each (48 clips, other seeds)
# 2. the adapter: rank 16 on every attention and feed-forward layer of the frozen demo transformer, the demo
#    model's own mask mix, a constant learning rate of 1e-3 after 50 warm-up steps; the latent cache keeps the
#    frozen VAE's encodings of clips seen in an earlier epoch
# 3. the measurement: i2v on both held-out sets, base model and adapter, the same seed
#
# A stage whose output exists is skipped, and training resumes from its newest checkpoint.
set -euo pipefail
WORK=${1:-lora_work}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STEPS=${STEPS:-1500}
mkdir -p "$WORK"
stage() {  # stage NAME COMMAND...: run it and print its wall time
  local name=$1 started=$SECONDS
  shift
  "$@"
  echo "== $name: $((SECONDS - started)) s"
}
DEMO=$(python -c "from opensora_cli.services.model_folders import bundled_model_dir; print(bundled_model_dir())")

[ -f "$WORK/diag/data.txt" ] || stage "diagonal data" opensora make-demo-data "$WORK/diag" --concept diagonal \
  --clips 800 --images 1 --heldout 48 --seed 11
[ -f "$WORK/axis/data.txt" ] || stage "axis data" opensora make-demo-data "$WORK/axis" --clips 400 --images 40 \
  --heldout 48 --seed 12
printf 'diag,diag/annotation.json\naxis,axis/annotation.json\n' > "$WORK/data.txt"

stage "LoRA" opensora train --data "$WORK/data.txt" --model "$DEMO" --lora-rank 16 --lora-targets attn+ff \
  --mask-config "$REPO/examples/demo/mask_config.yaml" --num-frames 17 --max-hxw 6144 --min-hxw 1024 \
  --hw-stride 16 --train-fps 8 --train-batch-size 8 --learning-rate 1e-3 --lr-warmup-steps 50 \
  --max-train-steps "$STEPS" --checkpointing-steps 250 --checkpoints-total-limit 2 --resume-from-checkpoint latest \
  --vae-posterior-mean --latent-cache-mib 1024 --dataloader-num-workers 1 --seed 0 --output-dir "$WORK/lora"

stage "measure" python "$REPO/benchmarks/lora_concept.py" --adapter "$WORK/lora/checkpoint-$STEPS" \
  --new "$WORK/diag/eval" --old "$WORK/axis/eval" --work "$WORK/videos"
echo "sample with: opensora sample --prompts PROMPTS --conds CONDS --lora $WORK/lora/checkpoint-$STEPS"
