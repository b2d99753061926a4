"""What --per_example and --measures cost (issue: "off cost nothing; on, their cost is measured and stated").

Trains the same run (MLP 1x512 on the built-in 5k Fashion-MNIST subset, true labels, so that no memorization
pass runs unless --per_example asks for one; a fixed number of epochs) three times into fresh workdirs: plain, with
--per_example, with --measures, and prints one JSON line per variant: wall seconds of the whole run, the extra wall
seconds per epoch against the plain run, and, for --measures, the seconds its end-of-run measurement took
(results.json). Off, both features add nothing to the loop: no callback pass, no file. Run it alone (2 CPU cores:
~2 min).
"""

import argparse
import contextlib
import io
import json
import os
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
    args = ap.parse_args()
    base = TrainConfig(model="mlp_1x512", epochs=args.epochs, tensorboard=False,
                       data=DataConfig(dataset="fashion_mnist_5k"))
    plain = None
    for name, extra in (("plain", {}), ("per_example", {"per_example": True}), ("measures", {"measures": True})):
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the run's own lines: not this file's JSON lines
                path = run(TrainConfig(**{**base.__dict__, **extra}), workdir, verbose=0)
            wall = time.perf_counter() - start
            r = results.read_json(path)
            exported = os.path.exists(os.path.join(os.path.dirname(path), "per_example.npz"))
        plain = wall if plain is None else plain
        print(json.dumps({"variant": name, "epochs": len(r["history"]), "wall_seconds": round(wall, 3),
                          "extra_seconds_per_epoch": round((wall - plain) / len(r["history"]), 3),
                          "per_example_npz": exported,
                          "measures_seconds": round(r["measures"]["seconds"], 2) if "measures" in r else None}),
              flush=True)


if __name__ == "__main__":
    main()
