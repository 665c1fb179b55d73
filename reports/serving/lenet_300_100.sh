#!/usr/bin/env bash
# The Lenet-300-100 serving frontier on Fashion-MNIST, from nothing: 3 seeds of each granularity
# (paper hyperparameters, 2 epochs a round, one random re-initialization a round), and units at
# per-layer rates; every round exported
# and timed side by side, then the report. Usage: bash reports/serving/lenet_300_100.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/serving_lenet}
for g in unit weight block; do
  case $g in unit) R=8;; *) R=12;; esac
  lottery-find --model=lenet_300_100 --dataset=fashion_mnist --preset=paper --epochs=2 --eval_every=100 \
    --rounds=$R --granularity=$g --controls=random_reinit --replicates=3 --output_dir=$RUNS/$g
done
# Units again, fc1 (most of the serving cost) at 30% a round and fc2 (the narrow one) at 10%.
lottery-find --model=lenet_300_100 --dataset=fashion_mnist --preset=paper --epochs=2 --eval_every=100 \
  --rounds=7 --granularity=unit --layer_rates=fc1=0.3,fc2=0.1 --controls=random_reinit --replicates=3 \
  --output_dir=$RUNS/unit_layer
python benchmarks/serving_latency.py \
  --runs=weight=$RUNS/weight,unit=$RUNS/unit,unit_layer=$RUNS/unit_layer,block=$RUNS/block \
  --work_dir=${RUNS}_exports --blocks=9 --calls=200 --memory --memory_rounds=0,3,5,8,11 \
  --out=reports/serving/lenet_300_100/data/serving.json
lottery-report --serving=reports/serving/lenet_300_100/data/serving.json --out=reports/serving/lenet_300_100
