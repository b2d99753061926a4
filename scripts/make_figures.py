"""The paper's Figures 1a, 1b/1c and 2, and the figures beyond it, from any set of results directories (PNG, PDF).

    python scripts/make_figures.py --results='runs/sweep' --out=docs/figures

--results takes run directories, folders of them, or globs (comma-separated); partial sweeps work: a figure is
drawn from whatever comparable runs exist, and skipped (with a note) when there are none.
"""

import argparse
import sys

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

from rethink_tf import results
from rethink_tf.reporting import figures as plots


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="comma-separated run dirs / folders / globs")
    ap.add_argument("--out", default="figures")
    ap.add_argument("--fit_threshold", type=float, default=None,
                    help="Figure 1b's time to overfit: steps until an epoch's training accuracy >= this (default: "
                         "each run's own --fit_threshold, the one its epochs_to_fit used)")
    args = ap.parse_args()
    found = [r for r in results.load_all(args.results.split(",")) if r.get("kind", "train") in ("train", "kernel")]
    if not found:
        print(f"error: no training or kernel results.json under {args.results}", file=sys.stderr)
        return 2
    paths = plots.all_figures(found, args.out, args.fit_threshold)
    for name in ("figure1a", "figure1bc", "figure2", "memorization", "dynamics", "measures", "width_sweep",
                 "kernels_vs_p"):
        written = [p for p in paths if f"/{name}." in p]
        print(f"{name}: {', '.join(written) if written else 'not enough comparable runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
