#!/usr/bin/env bash
# Beyond the paper, on real data here (2 CPU cores): complexity measures, per-example dynamics, a width sweep and
# kernel interpolation against label noise. Writes runs under $1 (default /tmp/rethink_tf_beyond), copies their
# records here (docs/beyond_demo/results) and draws the figures (docs/beyond_demo/figures).
#  1. Figure 1's protocol on the built-in 5k Fashion-MNIST subset (MLP 1x512, p = 0, 0.2, ..., 1 and the three pixel
#     randomizations, each stopped at its first epoch with >= 99.9% training accuracy) with --measures and
#     --per_example: the measures against p, the memorized / original / other curves and forgetting histograms.
#     Then a warm start: true labels from the random-label run's final weights (--init_from), same protocol.
#  2. A width sweep of MLP 1x512 (widths 1/16 ... 2, i.e. 32 ... 1,024 hidden units) at p = 0 and 0.4, 60 epochs each.
#  3. Gaussian and Laplacian kernel interpolation on 2,000 Fashion-MNIST training images (Debian's full set), p = 0,
#     0.2, ..., 1: the interpolant's norm and test error against p.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-/tmp/rethink_tf_beyond}
OUT=docs/beyond_demo
start=$(date +%s)
python -m rethink_tf.reproduce figure1 --dataset=fashion_mnist_5k --workdir=$W/figure1 -- --measures --per_example
# Warm start (Maennel et al. 2020): true labels from the random-label run's final weights, Figure 1's protocol
src=$(ls -d $W/figure1/fashion_mnist_5k-mlp_1x512-random_labels-*/ | head -1)
python -m rethink_tf.train --flagfile=flags/common_cifar10.flags --dataset=fashion_mnist_5k --model=mlp_1x512 \
    --epochs=300 --stop_at_train_accuracy=0.999 --fit_threshold=0.999 --notensorboard --init_from=$src \
    --workdir=$W/warm | grep -E "^(initialized|done)|^  (train|fitted|did)"
for p in 0 0.4; do
  for w in 0.0625 0.125 0.25 0.5 1 2; do
    python -m rethink_tf.train --dataset=fashion_mnist_5k --model=mlp_1x512 --width=$w --corrupt=labels \
        --corrupt_prob=$p --epochs=60 --notensorboard --workdir=$W/width | grep -E "^done|^  (train|fitted|did)"
  done
done
for k in "gaussian --gamma=0.02" "laplacian --gamma=0.1"; do
  for p in 0 0.2 0.4 0.6 0.8 1; do
    python -m rethink_tf.linear_models --dataset=fashion_mnist --train_examples=2000 --test_examples=1000 \
        --kernel=$k --corrupt=labels --corrupt_prob=$p --workdir=$W/kernels | tail -1
  done
done
echo "all runs: $(( $(date +%s) - start )) s"
rm -rf $OUT/results $OUT/figures
for run in $W/figure1/*/ $W/warm/*/ $W/width/*/ $W/kernels/*/; do
  [ -f $run/results.json ] || continue
  dest=$OUT/results/$(basename $(dirname $run))/$(basename $run)
  mkdir -p $dest
  cp $run/results.json $dest/
  [ -f $run/per_example.npz ] && cp $run/per_example.npz $dest/ || true
done
python scripts/make_figures.py --results=$OUT/results --out=$OUT/figures
