"""One command per paper experiment (rethink_tf.reproduce) and the listing of a workdir (rethink_tf.runs)."""

import json
import os
import subprocess
import sys

import keras
import pytest

from conftest import write_cifar_binary
from rethink_tf import reproduce, results, runs
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.errors import UserError
from rethink_tf.train import run
from rethink_tf.training import lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _flag(r, name):
    return next((a.split("=", 1)[1] for a in r.argv if a.startswith(f"--{name}=")), None)


def test_figure1_plans_the_papers_grid_per_model_and_seed():
    paper = reproduce.plan("figure1")
    assert len(paper) == 3 * 9  # small Inception, small AlexNet, MLP 1x512 x (p = 0, .2, .4, .6, .8, 1 + 3 pixel kinds)
    assert {_flag(r, "model") for r in paper} == {"small_inception", "small_alexnet", "mlp_1x512"}
    assert {_flag(r, "stop_at_train_accuracy") for r in paper} == {"1.0"}  # the paper's "100% training accuracy"
    mlp = [r for r in paper if _flag(r, "model") == "mlp_1x512"]
    assert sorted((_flag(r, "corrupt"), _flag(r, "corrupt_prob")) for r in mlp) == sorted(
        [("none", None), ("labels", "0.2"), ("labels", "0.4"), ("labels", "0.6"), ("labels", "0.8"),
         ("random_labels", None), ("shuffled_pixels", None), ("random_pixels", None), ("gaussian", None)])
    small = reproduce.plan("figure1", dataset="fashion_mnist_5k", seeds=2)
    assert len(small) == 18 and {_flag(r, "model") for r in small} == {"mlp_1x512"}
    assert {_flag(r, "dataset") for r in small} == {"fashion_mnist_5k"} and _flag(small[0], "fit_threshold") == "0.999"
    assert {(_flag(r, "seed"), _flag(r, "corrupt_seed")) for r in small} == {(None, None), ("1", "1")}
    assert len(reproduce.plan("table1", models=["mlp_1x512"])) == 3  # true, random labels, weight decay
    assert {r.program for r in reproduce.plan("kernels")} == {"rethink_tf.linear_models"}
    with pytest.raises(UserError, match="unknown experiment"):
        reproduce.plan("figure9")


def test_an_experiment_in_one_command_from_outside_the_repository(tmp_path):
    """Table 1's three MLP 3x512 runs (tiny: 200 built-in images, 1 epoch): progress per run, figures, the
    comparison, summary.md and report.html; the same command again trains nothing. Started from another directory:
    the flagfiles resolve among the package's. (Figure 1's 9-run grid went through the same runner from a fresh clone:
    docs/reproduce_figure1_fashion_mnist_5k.)"""
    work = tmp_path / "t1"
    cmd = [sys.executable, "-m", "rethink_tf.reproduce", "table1", "--models=mlp_3x512", f"--workdir={work}", "--",
           "--dataset=fashion_mnist_5k", "--train_examples=200", "--test_examples=100", "--epochs=1"]
    first = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=ENV, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "3 run(s) planned: 0 done, 3 to do" in out and out.count("done   [") == 3 and "ETA" in out
    assert "3 of 3 runs finished; this command took" in out
    assert len(results.load_all(str(work))) == 3
    for name in ("summary.md", "report.html", "comparison.md", "figures/figure2.png"):
        assert (work / name).exists(), name
    summary = (work / "summary.md").read_text()
    assert "Table 1" in summary and summary.count("| mlp_3x512 |") == 3 and "figures/figure2.png" in summary
    again = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0 and "3 run(s) planned: 3 done, 0 to do" in again.stdout
    assert "start" not in again.stdout


def test_bad_values_are_one_line(capsys):
    for args in (["figure1", "--dry_run", "--", "--corrupt_prob=7"], ["table1", "--dry_run", "--models=nosuchmodel"],
                 ["figure1", "--dry_run", "--seeds=0"]):
        assert reproduce.main(args) == 2, args
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), lines


class _KillAfter(keras.callbacks.Callback):
    class Killed(Exception):
        pass

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise self.Killed()


def test_runs_lists_each_run_with_its_status(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_cifar_binary(str(data), per_batch=8, test=8)
    work = str(tmp_path / "work")

    def cfg(name, corrupt="none", epochs=3):
        return TrainConfig(model="mlp_1x512", epochs=epochs, batch_size=8, tensorboard=False, run_name=name,
                           data=DataConfig(dataset="cifar10", data_dir=str(data), corrupt=corrupt))

    run(cfg("finished", "random_labels", epochs=2), work, verbose=0)
    with pytest.raises(_KillAfter.Killed):
        run(cfg("killed"), work, verbose=0, extra_callbacks=[_KillAfter()])
    os.makedirs(os.path.join(work, "fresh"))
    results.write_json(os.path.join(work, "fresh", "config.json"), cfg("fresh").to_dict())
    busy = os.path.join(work, "killed")
    rows = {r["run"]: r for r in map(runs.row, runs.run_dirs(work))}
    assert rows["finished"]["status"] == "done" and rows["finished"]["corruption"] == "random_labels"
    assert rows["finished"]["epochs"] == 2 and rows["finished"]["test acc"].endswith("%")
    assert rows["killed"]["status"] == "killed at epoch 3" and rows["fresh"]["status"] == "not started"
    with lock.RunLock(busy):  # a live process holds it: "running"
        assert runs.row(busy)["status"] == "running (epoch 3)"
    proc = subprocess.run([sys.executable, "-m", "rethink_tf.runs", f"--results={work}"], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and "3 run(s): 1 done, 1 killed, 1 not" in proc.stdout, proc.stdout + proc.stderr
    md = subprocess.run([sys.executable, "-m", "rethink_tf.runs", f"--results={work}", "--format=markdown"],
                        capture_output=True, text=True, env=ENV, timeout=120).stdout
    assert md.splitlines()[0].startswith("| run | model |") and md.count("\n") == 5
    empty = subprocess.run([sys.executable, "-m", "rethink_tf.runs", f"--results={tmp_path / 'none'}"],
                           capture_output=True, text=True, env=ENV, timeout=120)
    assert empty.returncode == 2 and empty.stderr.startswith("error: no runs")


def test_a_finished_run_is_not_done_for_an_invocation_that_asks_for_measures_it_lacks(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"schema_version": 1, "kind": "train", "config": {"model": "mlp_1x512"}, "metrics": {}, "history": []}
    (run_dir / "results.json").write_text(json.dumps(record))
    assert reproduce.done(str(run_dir), "rethink_tf.train", ())
    assert not reproduce.done(str(run_dir), "rethink_tf.train", ("--epochs=3", "--measures"))
    assert reproduce.done(str(run_dir), "rethink_tf.train", ("--measures", "--nomeasures"))  # the last one counts
    (run_dir / "results.json").write_text(json.dumps({**record, "measures": {"seconds": 1.0}}))
    assert reproduce.done(str(run_dir), "rethink_tf.train", ("--measures=true",))
