#!/bin/bash
# eo_v19b: eo_v19 with a 10x rate on the token-map MLP's first layer (the ridge map's input weights).
cd /work/main
D=../shared/data
refcut train -o /work/runs/eo_v19b_s0 --preset encode_once_vits14_ridge --init /tmp/eo_v6/refcut/assets/models/default \
  --data $D/car-parts --data $D/clothing-co-parsing --data $D/coco-mval-half --steps 1200 --batch-size 32 --lr 1e-4 \
  --workers 0 --threads 2 --set seed=0 --set checkpoint_every=100 --set dump_every=400 --set log_every=20 \
  --set 'optim.decay_at=[0.8]' \
  --set 'data.combination_weights={"single": 0.35, "pair": 0.3, "whole": 0.1, "random": 0.25}' \
  --set data.first_click_prob=0.3 --set data.click_sequence_prob=0.5 --set max_extra_clicks=6 --set 'optim.lr_scales={"decoder.token_maps.0.": 10}' \
  --no-progress
refcut pack-model /work/runs/eo_v19b_s0/final /work/runs/pack_v19b_s0 --refine guided-grabcut --run eo_v19b_s0 --overwrite
refcut eval $D/car-parts $D/clothing-co-parsing $D/coco-mval-half --split heldout --limit 60 \
  --method refcut=/work/runs/pack_v19b_s0+guided-grabcut --modes none,both --workers 2 --no-progress --out /work/runs/eval_v19b_s0
