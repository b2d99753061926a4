"""What --per_example and --measures cost (issue: "off cost nothing; on, their cost is measured and stated").

Trains the same run (MLP 1x512 on the built-in 5k Fashion-MNIST subset, true labels, so that no memorization
pass runs unless --per_example asks for one; a fixed number of epochs) three times into fresh workdirs: plain, with
--per_example, with --measures, in rounds that rotate the order (a first, uncounted round warms the caches), and
prints one JSON line per run and a summary: medians of the wall time, the extra seconds per epoch of --per_example
and the seconds of the end-of-run measurement (results.json), with the plain runs' spread for scale. Off, both
features add nothing to the loop: no callback pass, no file. Run it alone (2 CPU cores: ~3 min).
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time

from rethink_tf import console

console.quiet()

from rethink_tf import results  # noqa: E402
from rethink_tf.config import DataConfig, TrainConfig  # noqa: E402
from rethink_tf.train import run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    base = TrainConfig(model="mlp_1x512", epochs=args.epochs, tensorboard=False,
                       data=DataConfig(dataset="fashion_mnist_5k"))
    variants = (("plain", {}), ("per_example", {"per_example": True}), ("measures", {"measures": True}))
    walls = {name: [] for name, _ in variants}
    measured = []
    for repeat in range(args.repeats + 1):  # round 0 warms caches and is not counted; the order rotates per round
        order = variants[repeat % 3:] + variants[:repeat % 3]
        for name, extra in order:
            with tempfile.TemporaryDirectory() as workdir:
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # the run's own lines: not this file's JSON lines
                    path = run(TrainConfig(**{**base.__dict__, **extra}), workdir, verbose=0)
                wall = time.perf_counter() - start
                r = results.read_json(path)
                exported = os.path.exists(os.path.join(os.path.dirname(path), "per_example.npz"))
            if repeat:
                walls[name].append(wall)
                if "measures" in r:
                    measured.append(r["measures"]["seconds"])
                print(json.dumps({"round": repeat, "variant": name, "epochs": len(r["history"]),
                                  "wall_seconds": round(wall, 3), "per_example_npz": exported,
                                  "measures_seconds": round(r["measures"]["seconds"], 2) if "measures" in r
                                  else None}), flush=True)
    plain = statistics.median(walls["plain"])
    print(json.dumps({"summary": "median over rounds", "rounds": args.repeats, "epochs": args.epochs,
                      "plain_wall_seconds": round(plain, 3),
                      "per_example_extra_seconds_per_epoch": round(
                          (statistics.median(walls["per_example"]) - plain) / args.epochs, 3),
                      "measures_extra_wall_seconds": round(statistics.median(walls["measures"]) - plain, 2),
                      "measures_seconds": round(statistics.median(measured), 2),
                      "plain_wall_spread_seconds": round(max(walls["plain"]) - min(walls["plain"]), 3)}), flush=True)


if __name__ == "__main__":
    main()
