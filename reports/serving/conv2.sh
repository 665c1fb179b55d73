#!/usr/bin/env bash
# The Conv-2 serving frontier on Fashion-MNIST: one seed of unit (conv and fc 20% of units a round)
# and weight (the paper's rates) granularity, 1 epoch a round, one random re-initialization a round;
# every round exported and timed side by side, then the report. Usage: bash reports/serving/conv2.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/serving_conv2}
lottery-find --model=conv2 --dataset=fashion_mnist --preset=paper --epochs=1 --eval_every=100 --rounds=6 \
  --granularity=unit --conv_rate=0.2 --controls=random_reinit --output_dir=$RUNS/unit
lottery-find --model=conv2 --dataset=fashion_mnist --preset=paper --epochs=1 --eval_every=100 --rounds=6 \
  --granularity=weight --controls=random_reinit --output_dir=$RUNS/weight
python benchmarks/serving_latency.py --runs=weight=$RUNS/weight,unit=$RUNS/unit --work_dir=${RUNS}_exports \
  --blocks=9 --calls=50 --memory --memory_rounds=0,3,5 --out=reports/serving/conv2/data/serving.json
lottery-report --serving=reports/serving/conv2/data/serving.json --out=reports/serving/conv2
