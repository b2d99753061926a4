"""A run reports only its own numbers, and bad input or a half-written file ends in one line, not a traceback."""

import dataclasses
import glob
import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from absl import flags

from conftest import write_cifar_binary, write_idx
from rethink_tf import flags_lib, results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.data import sources
from rethink_tf.errors import UserError
from rethink_tf.train import run
from rethink_tf.training import cluster
from rethink_tf.training import run as run_lib

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    write_cifar_binary(str(d), per_batch=8, test=16)  # 40 train, 16 test
    return str(d)


def tiny(data_dir, **kw):
    data = {k: kw.pop(k) for k in list(kw) if k in DataConfig.__dataclass_fields__}
    return TrainConfig(model="mlp_1x512", data=DataConfig(dataset="cifar10", data_dir=data_dir, **data),
                       batch_size=8, epochs=kw.pop("epochs", 1), tensorboard=False, **kw)


# ------------------------------------------------------------------------------ numbers of another run

def test_an_explicit_run_name_never_returns_another_configs_results(cifar_dir, tmp_path):
    first = run(tiny(cifar_dir, run_name="mine"), str(tmp_path), verbose=0)
    with pytest.raises(UserError, match=r"holds a run with a different config \(epochs differ\)"):
        run(tiny(cifar_dir, run_name="mine", epochs=2), str(tmp_path), verbose=0)
    assert results.read_json(first)["config"]["epochs"] == 1


def test_a_garbage_results_json_is_rewritten_from_the_checkpoint(cifar_dir, tmp_path):
    path = run(tiny(cifar_dir, epochs=2), str(tmp_path), verbose=0)
    good = results.read_json(path)
    for garbage in ("{not json", "[]", '{"config": {}}'):
        open(path, "w").write(garbage)
        again = results.read_json(run(tiny(cifar_dir, epochs=2), str(tmp_path), verbose=0))
        assert again["metrics"]["steps_trained"] == good["metrics"]["steps_trained"] == 10  # evaluated, not trained
        assert again["metrics"]["test_accuracy"] == pytest.approx(good["metrics"]["test_accuracy"], abs=1e-6)
        assert [r["epoch"] for r in again["history"]] == [1, 2]


def test_killed_after_the_fitted_epochs_checkpoint_the_rerun_only_writes_results(cifar_dir, tmp_path):
    cfg = tiny(cifar_dir, epochs=60, stop_at_train_accuracy=0.5, learning_rate=0.05)
    path = run(cfg, str(tmp_path), verbose=0)
    straight = results.read_json(path)
    assert straight["status"] == "stopped_at_train_accuracy" and straight["metrics"]["epochs_trained"] < 60
    os.remove(path)  # the kill: checkpoint and history of the fitted epoch are on disk, results.json is not
    rerun = results.read_json(run(cfg, str(tmp_path), verbose=0))
    assert rerun["status"] == straight["status"]
    assert rerun["metrics"]["epochs_trained"] == straight["metrics"]["epochs_trained"]
    assert rerun["metrics"]["steps_trained"] == straight["metrics"]["steps_trained"]
    assert rerun["metrics"]["test_accuracy"] == pytest.approx(straight["metrics"]["test_accuracy"], abs=1e-6)


def test_an_unreadable_config_json_is_recovered_from_the_checkpoint_else_one_line(cifar_dir, tmp_path):
    cfg = tiny(cifar_dir, epochs=2)
    path = run(cfg, str(tmp_path), verbose=0)
    run_dir = os.path.dirname(path)
    config_json = os.path.join(run_dir, results.CONFIG)
    original = results.read_json(config_json)
    finished = results.read_json(path)
    for garbage in ("", "{torn", "[]"):  # each checkpoint carries a copy: the run goes on, config.json is rewritten
        os.remove(path)
        open(config_json, "w").write(garbage)
        assert run(cfg, str(tmp_path), verbose=0) == path
        assert results.read_json(config_json) == original
        assert results.read_json(path)["metrics"]["test_accuracy"] == finished["metrics"]["test_accuracy"]
    os.remove(path)
    for name in os.listdir(run_dir):  # no checkpoint left to recover from (e.g. killed before the first one)
        if name.endswith(".h5"):
            os.remove(os.path.join(run_dir, name))
    for garbage in ("", "{torn", "[]"):
        open(config_json, "w").write(garbage)
        with pytest.raises(UserError, match=r"config.json (is unreadable|holds no run config).*delete its folder"):
            run(cfg, str(tmp_path), verbose=0)


# ------------------------------------------------------------------------------ settings the run ignored

def _train_flags(*argv):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train", *argv])
    return fv


def test_corrupt_prob_without_a_corruption_is_refused(cifar_dir, tmp_path):
    """--corrupt_prob with --corrupt=none would be silently ignored. (With a pixel kind it now means the fraction
    of images corrupted, beyond the paper: tests/test_noise_models.py.)"""
    with pytest.raises(flags.IllegalFlagValueError, match="needs a corruption; --corrupt=none would ignore it"):
        _train_flags("--corrupt=none", "--corrupt_prob=0.5")
    with pytest.raises(UserError, match="needs a corruption"):  # the library path too
        run(tiny(cifar_dir, corrupt="none", corrupt_prob=0.5), str(tmp_path), verbose=0)
    assert not os.listdir(tmp_path)


def test_more_examples_than_the_split_holds_is_refused(cifar_dir, tmp_path):
    with pytest.raises(UserError, match=r"--train_examples=41 is more than the 40 examples"):
        run(tiny(cifar_dir, train_examples=41), str(tmp_path), verbose=0)
    with pytest.raises(UserError, match=r"--test_examples=17 is more than the 16 examples"):
        sources.load("cifar10", "test", data_dir=cifar_dir, num_examples=17)
    assert sources.load("cifar10", "train", data_dir=cifar_dir, num_examples=40).size == 40


def test_the_builtin_subset_decays_on_the_full_sets_schedule():
    # fashion_mnist_5k is Fashion-MNIST's first 5,000 images: its recipe period is the full set's 60,000 examples
    # (468 steps at batch 128), as --dataset=fashion_mnist --train_examples=5000 has, not the 39-step subset epoch.
    builtin = TrainConfig(model="mlp_1x512", data=DataConfig(dataset="fashion_mnist_5k")).resolved()
    cut = TrainConfig(model="mlp_1x512", data=DataConfig(dataset="fashion_mnist", train_examples=5000)).resolved()
    assert builtin.lr_decay_examples == cut.lr_decay_examples == 60_000


def test_an_unfitted_run_whose_lr_collapsed_says_so():
    class D:
        train_size, test_size = 5000, 1000

    cfg = TrainConfig(model="mlp_1x512", data=DataConfig(dataset="fashion_mnist_5k")).resolved()
    metrics = {"epochs_to_fit": None, "epochs_trained": 300, "train_accuracy": 0.83, "test_accuracy": 0.1,
               "final_lr": cfg.learning_rate * 0.95 ** 200}
    text = run_lib.summary(cfg, D, metrics, "completed", "r.json", "runs")
    assert "did not reach 100% training accuracy in 300 epochs" in text and "training stalled" in text
    healthy = run_lib.summary(cfg, D, {**metrics, "final_lr": cfg.learning_rate * 0.5}, "completed", "r.json", "w")
    assert "stalled" not in healthy


# ------------------------------------------------------------------------------ bad values, one line

@pytest.mark.parametrize("flag", ["--ema_decay=nan", "--learning_rate=inf", "--cluster_timeout=nan",
                                  "--momentum=nan", "--fit_threshold=nan"])
def test_non_finite_train_flags_are_refused(flag):
    with pytest.raises(flags.IllegalFlagValueError, match="must be a finite number"):
        _train_flags(flag)


@pytest.mark.parametrize("flag", ["--gamma=inf", "--ridge=nan", "--ridge=inf", "--coef0=nan", "--refine_tol=nan"])
def test_non_finite_kernel_flags_are_refused(flag):
    fv = flags.FlagValues()
    flags_lib.define_kernel_flags(fv)
    with pytest.raises(flags.IllegalFlagValueError, match="must be a finite number"):
        fv(["linear_models", flag])


def test_linear_models_stray_argument_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rethink_tf.linear_models", "stray", f"--workdir={tmp_path}/w"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and "error: unexpected arguments: stray" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("hosts", ['["h0:abc", "h1:1"]', '["h0:0", "h1:1"]', '["h0:70000", "h1:1"]', '[":5", "h:1"]'])
def test_tf_config_with_a_bad_port_is_one_line(hosts):
    text = '{"cluster": {"worker": %s}, "task": {"type": "worker", "index": 0}}' % hosts
    with pytest.raises(UserError, match="numeric port in 1..65535"):
        cluster.parse_tf_config(text)
    with pytest.raises(UserError, match="is not host:port"):
        cluster.tf_config_from_hosts(",".join(json.loads(hosts)), 0)


@pytest.mark.parametrize("payload", [b"\x80\x02}q\x00(X", b"garbage", pickle.dumps([1, 2, 3], protocol=2)[:-3],
                                     pickle.dumps({b"data": 1}, protocol=2)])
def test_malformed_cifar_pickles_are_one_line(tmp_path, payload):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{n}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(UserError, match="cifar-10-python.tar.gz"):  # one line naming the file
        sources.load("cifar10", "train", data_dir=str(tmp_path))


def test_a_corrupt_gzip_stream_is_one_line(tmp_path):
    write_idx(str(tmp_path), n_train=20, n_test=5)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 16] = b"\xff" * 16  # a damaged deflate stream (header intact)
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="cannot read mnist train split"):
        sources.load("mnist", "train", data_dir=str(tmp_path))
    assert gzip  # the module under test reads it with gzip


# ------------------------------------------------------------------------------ where runs are written

@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "."])
def test_run_name_outside_the_workdir_is_refused(cifar_dir, tmp_path, name):
    work = tmp_path / "w"
    with pytest.raises(UserError, match="plain directory name inside --workdir"):
        run(tiny(cifar_dir, run_name=name), str(work), verbose=0)
    assert not os.listdir(tmp_path)  # not even --workdir was created


def test_a_workdir_under_a_regular_file_is_one_line_and_creates_nothing(cifar_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        run(tiny(cifar_dir), str(blocker / "runs" / "deeper"), verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_an_overlong_run_name_is_one_line_and_creates_nothing(cifar_dir, tmp_path):
    with pytest.raises(UserError, match="longer than 255 bytes"):
        run(tiny(cifar_dir, run_name="x" * 300), str(tmp_path / "w"), verbose=0)
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: a read-only folder cannot be simulated")
def test_an_unwritable_workdir_is_one_line(cifar_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match="is not writable"):
        run(tiny(cifar_dir), str(locked / "runs"), verbose=0)
    assert not os.listdir(locked)
    assert np  # numpy imported for the module's other tests


# ------------------------------------------------------------------------------ signals

def _cli(cifar_dir, workdir, epochs):
    return [sys.executable, "-m", "rethink_tf.train", "--model=mlp_1x512", "--dataset=cifar10",
            f"--data_dir={cifar_dir}", "--batch_size=8", f"--epochs={epochs}", "--notensorboard",
            "--steps_per_execution=1", f"--workdir={workdir}"]


@pytest.mark.parametrize("signum,code", [(15, 143), (2, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_says_one_line_and_the_rerun_finishes_the_same_run(cifar_dir, tmp_path, signum,
                                                                                      code):
    import time

    epochs = 20
    proc = subprocess.Popen(_cli(cifar_dir, tmp_path / "w", epochs), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    history = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = [os.path.join(r, "history.jsonl") for r, _, f in os.walk(tmp_path / "w") if "history.jsonl" in f]
        if found and len(open(found[0]).read().splitlines()) >= 2:
            history = found[0]
            break
        time.sleep(0.02)
    assert history and proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted (SIG") and lines[-1].endswith(
        "checkpoint saved; rerun the same command to resume"), err[-2000:]
    assert "Traceback" not in err
    run_dir = os.path.dirname(history)
    assert os.path.exists(os.path.join(run_dir, "checkpoint.weights.h5"))
    assert not os.path.exists(os.path.join(run_dir, results.RESULTS))
    # the rerun resumes from that checkpoint and ends where an uninterrupted run ends
    rerun = subprocess.run(_cli(cifar_dir, tmp_path / "w", epochs), capture_output=True, text=True, env=ENV)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    straight = subprocess.run(_cli(cifar_dir, tmp_path / "straight", epochs), capture_output=True, text=True,
                              env=ENV)
    assert straight.returncode == 0, straight.stderr[-2000:]
    a = results.read_json(os.path.join(run_dir, results.RESULTS))
    (b_dir,) = os.listdir(tmp_path / "straight")
    b = results.read_json(os.path.join(tmp_path / "straight", b_dir, results.RESULTS))
    assert len(a["resumes"]) == 1 and a["metrics"]["steps_trained"] == b["metrics"]["steps_trained"] == 5 * epochs
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-5, abs=1e-6), key
    # the interrupted epoch's row covers the whole epoch (the checkpoint carried its running totals)
    assert [r["epoch"] for r in a["history"]] == [r["epoch"] for r in b["history"]]
    for ra, rb in zip(a["history"], b["history"]):
        for key in ("train_loss", "train_accuracy", "test_accuracy"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["epoch"], key)


# ------------------------------------------------------------------------------ the data under a run

def _extracted_cifar(folder):
    os.makedirs(folder)
    path, _ = write_cifar_binary(str(folder), per_batch=8, test=16, as_tar=False)
    return path


def _relabel_first_example(batches_dir):
    """Labels replaced in place: the first training example's label byte changes, nothing else."""
    f = os.path.join(batches_dir, "data_batch_1.bin")
    raw = bytearray(open(f, "rb").read())
    raw[0] = (raw[0] + 1) % 10
    open(f, "wb").write(bytes(raw))


class _StopAfterEpoch(__import__("keras").callbacks.Callback):
    class Killed(Exception):
        pass

    def on_epoch_end(self, epoch, logs=None):
        raise self.Killed()


def test_a_resume_on_data_changed_in_place_is_refused(tmp_path):
    data = tmp_path / "data"
    batches = _extracted_cifar(data)
    cfg = tiny(str(data), epochs=3)
    with pytest.raises(_StopAfterEpoch.Killed):
        run(cfg, str(tmp_path / "w"), verbose=0, extra_callbacks=[_StopAfterEpoch()])
    _relabel_first_example(batches)
    with pytest.raises(UserError, match=r"was trained on other data \(fingerprint [0-9a-f]{16}\) than these "
                                        r"settings read now \(fingerprint [0-9a-f]{16}\)"):
        run(cfg, str(tmp_path / "w"), verbose=0)


def test_an_unfinished_run_keyed_by_an_older_version_is_not_resumed_with_other_labels(tmp_path, capsys):
    """A run started before content keys (its config.json has no example_keys) drew its random labels from file
    indices: continuing it with today's keys would train half the run on other labels."""
    data = tmp_path / "data"
    _extracted_cifar(data)
    cfg = tiny(str(data), epochs=3)
    with pytest.raises(_StopAfterEpoch.Killed):
        run(cfg, str(tmp_path / "w"), verbose=0, extra_callbacks=[_StopAfterEpoch()])
    [config_path] = glob.glob(str(tmp_path / "w" / "*" / "config.json"))
    old = json.load(open(config_path))
    assert old.pop("example_keys") == "content-v1"
    old.pop("data_fingerprint")  # the version before also recorded no fingerprint
    json.dump(old, open(config_path, "w"))
    with pytest.raises(UserError, match="was started with file-index keys .* cannot be resumed; rerun it under "
                                        "another --workdir"):
        run(cfg, str(tmp_path / "w"), verbose=0)
    # finished by that version: still its results, with a note that today's keys would draw other labels
    final = os.path.join(os.path.dirname(config_path), "results.json")
    json.dump({"schema_version": 1, "kind": "train", "config": old, "metrics": {}, "history": []}, open(final, "w"))
    capsys.readouterr()
    assert run(cfg, str(tmp_path / "w"), verbose=0) == final
    out = capsys.readouterr().out
    assert "note: " in out and "keyed examples by file index" in out and "already complete" in out


def test_a_finished_run_is_not_reported_complete_for_other_data(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _extracted_cifar(one)
    _relabel_first_example(_extracted_cifar(two))
    path = run(tiny(str(one)), str(tmp_path / "w"), verbose=0)
    assert run(tiny(str(one)), str(tmp_path / "w"), verbose=0) == path  # same data: already complete
    with pytest.raises(UserError, match="was trained on other data"):  # --data_dir is not part of the run's name
        run(tiny(str(two)), str(tmp_path / "w"), verbose=0)


def test_a_signal_before_training_is_one_line_too(cifar_dir, tmp_path):
    import time

    proc = subprocess.Popen(_cli(cifar_dir, tmp_path / "w", 5), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    time.sleep(1.0)  # TensorFlow is still importing
    proc.send_signal(2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert [line for line in err.splitlines() if line.strip()][-1].startswith("interrupted (SIGINT) outside a "
                                                                              "training step")


def test_a_multi_replica_bn_run_from_before_the_record_is_not_taken_for_the_one_device_run(cifar_dir, tmp_path):
    """Runs started before config.json recorded BatchNorm's per-replica batch took the one-device name: their
    replica count is read back from results.json (or the resume log), so an 8-GPU run is never returned as the
    one-device run's results, while a one-device run of that age still counts as complete."""
    cfg = dataclasses.replace(tiny(cifar_dir), model="small_inception")
    for replicas, refused in ((4, True), (1, False)):
        workdir = tmp_path / f"w{replicas}"
        folder = workdir / run_lib._run_dir_name(cfg.resolved())
        folder.mkdir(parents=True)
        old = cfg.resolved().to_dict()  # as written then: no bn_replica_batch key
        (folder / "config.json").write_text(json.dumps(old))
        (folder / "results.json").write_text(json.dumps({
            "schema_version": 1, "kind": "train", "config": old, "metrics": {"test_accuracy": 0.5}, "history": [],
            "env": {"replicas": replicas}}))
        if refused:
            with pytest.raises(UserError, match=r"BatchNorm's per-replica batch \(2 then, None on 1 replica"):
                run(cfg, str(workdir), verbose=0)
        else:
            assert run(cfg, str(workdir), verbose=0) == str(folder / "results.json")


def test_an_explicit_run_name_with_another_bn_replica_batch_is_refused(cifar_dir, tmp_path):
    """A run named by hand that trained small Inception on 4 replicas (BN over 2 images each) is not the
    one-device run of the same flags (BN over 8)."""
    cfg = tiny(cifar_dir, run_name="mine")
    cfg = dataclasses.replace(cfg, model="small_inception")
    folder = tmp_path / "w" / "mine"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**cfg.resolved().to_dict(), "bn_replica_batch": 2}))
    with pytest.raises(UserError, match=r"BatchNorm's per-replica batch \(2 then, None on 1 replica\(s\) now\)"):
        run(cfg, str(tmp_path / "w"), verbose=0)


def test_a_record_names_the_package_code_that_made_it(tmp_path):
    # results.json's env names the package's version and the commit of its checkout ("+changes" when its files
    # differ), so that a number can be traced to the code that made it; never another repository's commit
    import shutil

    import rethink_tf

    if shutil.which("git") is None:
        pytest.skip("no git")

    def git(repo, *args):
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    def repo_with(top, package):  # a git repository at `top` holding a package folder at top/package
        (top / package).mkdir(parents=True)
        (top / package / "x.py").write_text("a = 1\n")
        git(top, "init", "-q")
        git(top, "add", ".")
        git(top, "commit", "-qm", "one")
        return top

    checkout = repo_with(tmp_path / "checkout", "rethink_tf")
    head = git(checkout, "rev-parse", "--short", "HEAD")
    assert results.package_source(str(checkout / "rethink_tf"))["rethink_tf_commit"] == head
    (checkout / "rethink_tf" / "x.py").write_text("a = 2\n")
    assert results.package_source(str(checkout / "rethink_tf"))["rethink_tf_commit"] == head + "+changes"
    # installed in a virtualenv inside some project's repository: that commit is not the package's code
    project = repo_with(tmp_path / "project", "venv/lib/rethink_tf")
    assert (project / ".git").is_dir()
    assert results.package_source(str(project / "venv" / "lib" / "rethink_tf"))["rethink_tf_commit"] is None
    plain = tmp_path / "plain" / "rethink_tf"
    plain.mkdir(parents=True)
    assert results.package_source(str(plain)) == {"rethink_tf": rethink_tf.__version__, "rethink_tf_commit": None}
    env = results.environment()
    assert env["rethink_tf"] == rethink_tf.__version__ and "rethink_tf_commit" in env
