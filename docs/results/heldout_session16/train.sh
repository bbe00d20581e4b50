#!/bin/bash
# Sessions 16-17's runs: eo_v8b's recipe (seed 0, from eo_v6) plus one variant, then pack and the 60-episode eval.
#   bash docs/results/heldout_session16/train.sh v18    # learned reference metric (+ its direct loss)
#   bash docs/results/heldout_session16/train.sh v19    # the reference's ridge map
#   bash docs/results/heldout_session16/train.sh v19b   # v19 with a 10x rate on the token maps' first layer
#   bash docs/results/heldout_session16/train.sh v20    # two global self-attention blocks (session 17), 10x rate on them
#   bash docs/results/heldout_session16/train.sh v21    # v20's decoder from scratch (no eo_v6 start), 6,000 steps at 2e-4
#   STEPS=5000 bash docs/results/heldout_session16/train.sh v21   # session 20's shortened v21
#   bash docs/results/heldout_session16/train.sh v22    # (SEED=1 ... for its second seed) the clicked colours' CIELAB affinity as two more click maps (session 22), 5x rate on the layers reading them
#   (session 18 started v21; resume a stopped run with: refcut train --resume /work/runs/eo_v21_s0 --no-progress)
# eo_v6: mkdir -p /tmp/eo_v6 && git archive c1f3647 refcut/assets/models/default | tar -x -C /tmp/eo_v6
set -e
init=(--init /tmp/eo_v6/refcut/assets/models/default)
steps=1200
lr=1e-4
case "$1" in
  v18) extra=(--preset encode_once_vits14_metric --set metric_loss_weight=0.5
              --set 'optim.lr_scales={"decoder.reference_metric.": 10}') ;;
  v19) extra=(--preset encode_once_vits14_ridge) ;;
  v19b) extra=(--preset encode_once_vits14_ridge --set 'optim.lr_scales={"decoder.token_maps.0.": 10}') ;;
  v20) extra=(--preset encode_once_vits14_global --set 'optim.lr_scales={"decoder.global_blocks.": 10}') ;;
  v21) extra=(--preset encode_once_vits14_global); init=(); steps=6000; lr=2e-4 ;;
  v22) extra=(--preset encode_once_vits14_colour --set 'optim.lr_scales={"decoder.token_maps.0.": 5, "decoder.edges_to_tokens.": 5, "decoder.up8.lateral.": 5, "decoder.up4.lateral.": 5}') ;;
  *) echo "usage: $0 v18|v19|v19b|v20|v21|v22" >&2; exit 2 ;;
esac
steps=${STEPS:-$steps}  # e.g. STEPS=5000 to fit a session (the x0.1 lr step stays at 0.8 of it)
seed=${SEED:-0}         # e.g. SEED=1 for a second seed (run, pack and eval folders end in _s1)
D=../shared/data
run=/work/runs/eo_$1_s$seed
refcut train -o $run "${extra[@]}" "${init[@]}" \
  --data $D/car-parts --data $D/clothing-co-parsing --data $D/coco-mval-half --steps $steps --batch-size 32 --lr $lr \
  --workers 0 --threads 2 --set seed=$seed --set checkpoint_every=100 --set dump_every=400 --set log_every=20 \
  --set 'optim.decay_at=[0.8]' \
  --set 'data.combination_weights={"single": 0.35, "pair": 0.3, "whole": 0.1, "random": 0.25}' \
  --set data.first_click_prob=0.3 --set data.click_sequence_prob=0.5 --set max_extra_clicks=6 --no-progress
refcut pack-model $run/final /work/runs/pack_$1_s$seed --refine guided-grabcut --run eo_$1_s$seed --overwrite
refcut eval $D/car-parts $D/clothing-co-parsing $D/coco-mval-half --split heldout --limit 60 \
  --method refcut=/work/runs/pack_$1_s$seed+guided-grabcut --modes none,both --workers 2 --no-progress --out /work/runs/eval_$1_s$seed
