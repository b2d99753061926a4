#!/usr/bin/env bash
# Beyond the paper: per-example dynamics of MLP 1x512 on the built-in 5k Fashion-MNIST subset with exactly 40% of
# the training labels flipped to another class (--corrupt=flip), recorded with --per_example. Writes the run under
# $1 (default /tmp/rethink_tf_dynamics), copies its records and per_example.npz here and draws the figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-/tmp/rethink_tf_dynamics}
python -m rethink_tf.train --dataset=fashion_mnist_5k --model=mlp_1x512 --corrupt=flip --corrupt_prob=0.4 \
    --per_example --epochs=40 --notensorboard --workdir=$W
run=$(ls -d $W/*/ | head -1)
rm -rf docs/dynamics_demo/results && mkdir -p docs/dynamics_demo/results/$(basename $run)
cp $run/config.json $run/results.json $run/history.jsonl $run/per_example.npz docs/dynamics_demo/results/$(basename $run)/
python scripts/make_figures.py --results=docs/dynamics_demo/results --out=docs/dynamics_demo/figures
