"""A Markdown and CSV table: every measured result beside the paper's number, the difference, the provenance tag,
and what differs in the setup (dataset, subset sizes, epochs).

    python scripts/compare_to_paper.py --results='runs/sweep,runs/kernel_demo' --out=docs/comparison

Writes <out>.md and <out>.csv and prints the Markdown.
"""

import argparse
import os
import sys

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

from rethink_tf import results
from rethink_tf.reporting import compare as report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="comma-separated run dirs / folders / globs")
    ap.add_argument("--out", default="comparison")
    args = ap.parse_args()
    found = results.load_all(args.results.split(","))
    if not found:
        print(f"error: no results.json under {args.results}", file=sys.stderr)
        return 2
    rows = report.comparison_rows(found)
    md = report.to_markdown(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(md)
    with open(args.out + ".csv", "w") as f:
        f.write(report.to_csv(rows))
    print(md)
    print(f"{len(rows)} rows from {len(found)} runs -> {args.out}.md, {args.out}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
