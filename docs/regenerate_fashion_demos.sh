#!/usr/bin/env bash
# Reruns every run behind docs/fashion_mnist_demo/ and docs/memorization_demo/ (2 CPU cores: ~30 min), copies their
# config.json / results.json / history.jsonl under docs/, and rebuilds the figures, the comparison table and the
# demo pages' tables (docs/demo_tables.py). The commands are the ones the demo pages list.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/rethink_tf_demos}
python scripts/sweep.py --models=mlp_1x512 \
    --corruptions=none,labels,random_labels,shuffled_pixels,random_pixels,gaussian --probs=0.2,0.4,0.6,0.8 \
    --workdir=$W/fashion_demo -- --dataset=fashion_mnist --train_examples=5000 --epochs=300 \
    --stop_at_train_accuracy=1.0 --notensorboard
python scripts/sweep.py --models=small_alexnet --corruptions=none,labels,random_labels --probs=0.5 \
    --workdir=$W/fashion_demo -- --dataset=fashion_mnist --train_examples=1000 --test_examples=2000 \
    --epochs=150 --stop_at_train_accuracy=1.0 --notensorboard
for c in none random_labels; do
  python -m rethink_tf.linear_models --dataset=fashion_mnist --train_examples=10000 --corrupt=$c --workdir=$W/fashion_demo
done
python -m rethink_tf.train --dataset=fashion_mnist --train_examples=5000 --model=mlp_1x512 --corrupt=labels \
    --corrupt_prob=0.4 --epochs=300 --stop_at_train_accuracy=0.999 --fit_threshold=0.999 --notensorboard \
    --workdir=$W/memorization_demo
copy() {  # run folders of $1 -> $2 (the files a figure or table reads)
  rm -rf "$2"; mkdir -p "$2"
  for run in "$1"/*/; do
    name=$(basename "$run"); mkdir -p "$2/$name"
    for f in config.json results.json history.jsonl; do [ -f "$run/$f" ] && cp "$run/$f" "$2/$name/"; done
  done
}
copy $W/fashion_demo docs/fashion_mnist_demo/results
copy $W/memorization_demo docs/memorization_demo/results
python scripts/make_figures.py --results=docs/fashion_mnist_demo/results --out=docs/fashion_mnist_demo/figures --fit_threshold=0.999
python scripts/compare_to_paper.py --results=docs/fashion_mnist_demo/results --out=docs/fashion_mnist_demo/comparison
python scripts/make_figures.py --results=docs/memorization_demo/results --out=docs/memorization_demo
python docs/demo_tables.py > docs/demo_tables.md
