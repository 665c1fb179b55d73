#!/usr/bin/env bash
# Conv-2 on Fashion-MNIST pruned by filters: the convolutions (nearly all of the serving cost) lose 20%
# of their filters a round, the Dense layers (little of it) 5% of their units, 1 epoch a round: at 20%
# a round one seed with one random re-initialization a round, at 22% three seeds; every round exported
# as the compact network (a SavedModel and a TFLite file) and timed beside the dense network, then the
# report.
# Usage: bash reports/serving/conv2_filters.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/serving_conv2}
lottery-find --model=conv2 --dataset=fashion_mnist --preset=paper --epochs=1 --eval_every=100 --rounds=6 \
  --granularity=unit --conv_rate=0.2 --fc_rate=0.05 --controls=random_reinit --output_dir=$RUNS/unit_conv
# 22% of the filters a round, 4 rounds, no control, 3 seeds: between rounds 3 and 4 of the search above.
lottery-find --model=conv2 --dataset=fashion_mnist --preset=paper --epochs=1 --eval_every=100 --rounds=4 \
  --granularity=unit --conv_rate=0.22 --fc_rate=0.05 --replicates=3 --output_dir=$RUNS/unit_conv22
python benchmarks/serving_latency.py --runs=unit_conv=$RUNS/unit_conv,unit_conv22=$RUNS/unit_conv22 \
  --work_dir=${RUNS}_filters_exports --blocks=9 --calls=50 --memory --memory_rounds=0,3,5 \
  --out=reports/serving/conv2_filters/data/serving.json
# The same exports timed again (rounds 0 and 3 only): how far one measurement's ratios move.
python benchmarks/serving_latency.py --runs=unit_conv=$RUNS/unit_conv,unit_conv22=$RUNS/unit_conv22 \
  --work_dir=${RUNS}_filters_exports --rounds=0,3 --blocks=9 --calls=50 \
  --out=reports/serving/conv2_filters/data/repeat_rounds_0_3.json
lottery-report --serving=reports/serving/conv2_filters/data/serving.json --out=reports/serving/conv2_filters
