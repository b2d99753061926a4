#!/usr/bin/env bash
# Beyond the paper: the pixel-side analogue of Figure 1b/1c on real data here (2 CPU cores). MLP 1x512 on the
# built-in 5k Fashion-MNIST subset, Figure 1's protocol (each run stopped at its first epoch with >= 99.9% training
# accuracy, at most 300 epochs): true images, additive Gaussian noise of sigma = 0.1, 0.2, 0.4, 0.8 on every pixel
# value (--corrupt=additive_gaussian; Toneva et al. 2019), and random pixels on a fraction p = 0.25, 0.5 and all of
# the images (Arpit et al. 2017's mixtures). Test images carry the same kind of noise (the paper's rule for pixel
# corruptions). Writes runs under $1 (default /tmp/rethink_tf_pixel_noise), copies their records here
# (docs/pixel_noise_demo/results) and draws pixel_noise.png (docs/pixel_noise_demo/figures).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-/tmp/rethink_tf_pixel_noise}
OUT=docs/pixel_noise_demo
COMMON="--flagfile=flags/common_cifar10.flags --dataset=fashion_mnist_5k --model=mlp_1x512 --epochs=300
        --stop_at_train_accuracy=0.999 --fit_threshold=0.999 --notensorboard --workdir=$W"
start=$(date +%s)
run() { echo "== $*"; python -m rethink_tf.train $COMMON "$@" | grep -E "^done|^  (train|fitted|did)"; }
run --corrupt=none
for s in 0.1 0.2 0.4 0.8; do run --corrupt=additive_gaussian --noise_std=$s; done
for p in 0.25 0.5; do run --corrupt=random_pixels --corrupt_prob=$p; done
run --corrupt=random_pixels
echo "all runs: $(( $(date +%s) - start )) s"
rm -rf $OUT/results $OUT/figures
mkdir -p $OUT/results
for d in $W/*/; do cp $d/results.json $OUT/results/$(basename $d).json; done
python scripts/make_figures.py --results=$W --out=$OUT/figures | tail -3
