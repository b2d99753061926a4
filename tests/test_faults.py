"""Damaged or half-written files of a run: each ends in one line naming the file, and the run recovers where it can
(resume == uninterrupted)."""

import errno
import os
import shutil

import h5py
import keras
import pytest

from conftest import run_result_script, write_cifar_binary
from rethink_tf import results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.errors import UserError
from rethink_tf.train import run
from rethink_tf.training import checkpoint


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    write_cifar_binary(str(d), per_batch=8, test=16)  # 40 train, 16 test: 5 steps per epoch at batch 8
    return str(d)


def tiny(data_dir, epochs=3):
    return TrainConfig(model="mlp_1x512", data=DataConfig(dataset="cifar10", data_dir=data_dir), batch_size=8,
                       epochs=epochs, tensorboard=False, learning_rate=0.01)


class _Stop(keras.callbacks.Callback):
    class Killed(Exception):
        pass

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise self.Killed()


def _killed_after(cifar_dir, workdir, epoch):
    """A run killed after epoch `epoch`'s checkpoint; returns its run directory."""
    with pytest.raises(_Stop.Killed):
        run(tiny(cifar_dir), str(workdir), verbose=0, extra_callbacks=[_Stop(epoch)])
    (name,) = os.listdir(workdir)
    return os.path.join(workdir, name)


@pytest.fixture(scope="module")
def straight(cifar_dir, tmp_path_factory):
    return results.read_json(run(tiny(cifar_dir), str(tmp_path_factory.mktemp("straight")), verbose=0))


def _same_as(straight, path):
    r = results.read_json(path)
    assert r["metrics"]["steps_trained"] == straight["metrics"]["steps_trained"] == 15
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert r["metrics"][key] == pytest.approx(straight["metrics"][key], rel=1e-5, abs=1e-6), key
    return r


DAMAGE = {
    "truncated": lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2),
    "garbage": lambda p: open(p, "wb").write(os.urandom(4096)),
    "empty": lambda p: open(p, "wb").close(),
    "zeroed header": lambda p: open(p, "r+b").write(b"\0" * 512),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(cifar_dir, tmp_path, straight, damage, capsys):
    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=2)
    newest = os.path.join(run_dir, checkpoint.CHECKPOINT)
    assert os.path.exists(os.path.join(run_dir, checkpoint.PREVIOUS))  # epoch 1's, kept beside epoch 2's
    DAMAGE[damage](newest)
    r = _same_as(straight, run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0))
    assert r["resumes"][0]["step"] == 5  # from epoch 1's checkpoint, the one before the damaged file
    assert f"warning: cannot read the checkpoint {newest}" in capsys.readouterr().out


def test_no_readable_checkpoint_is_one_line(cifar_dir, tmp_path):
    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=2)
    for name in (checkpoint.CHECKPOINT, checkpoint.PREVIOUS):
        DAMAGE["garbage"](os.path.join(run_dir, name))
    with pytest.raises(UserError, match=r"no readable checkpoint in .*delete the folder to start the run again"):
        run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0)


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(cifar_dir, tmp_path, monkeypatch):
    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=1)
    before = open(os.path.join(run_dir, checkpoint.CHECKPOINT), "rb").read()
    usage = shutil.disk_usage(run_dir)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    with pytest.raises(UserError, match=r"no room for a checkpoint in .*MiB free.*is intact"):
        run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0)
    assert open(os.path.join(run_dir, checkpoint.CHECKPOINT), "rb").read() == before
    assert not [f for f in os.listdir(run_dir) if f.startswith(".tmp-")]


def test_a_failed_checkpoint_write_removes_its_temporary_file(cifar_dir, tmp_path, monkeypatch):
    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=1)
    before = open(os.path.join(run_dir, checkpoint.CHECKPOINT), "rb").read()

    def no_space(self, path, overwrite=True):
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", no_space)
    with pytest.raises(UserError, match=r"writing a checkpoint in .* failed \(OSError: .*No space left"):
        run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0)
    assert open(os.path.join(run_dir, checkpoint.CHECKPOINT), "rb").read() == before
    assert not [f for f in os.listdir(run_dir) if f.startswith(".tmp-")]


def test_a_torn_history_row_is_dropped_and_the_run_resumes(cifar_dir, tmp_path, straight, capsys):
    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=2)
    with open(os.path.join(run_dir, results.HISTORY), "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a kill (or a full disk) during the next epoch's append
    r = _same_as(straight, run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0))
    assert [row["epoch"] for row in r["history"]] == [1, 2, 3] and r["history_missing_epochs"] == []
    assert "line 3 is torn or not a JSON object; dropped" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["emptied", "truncated"])
def test_lost_history_rows_are_rebuilt_from_the_checkpoints_record(cifar_dir, tmp_path, straight, capsys, damage):
    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=2)
    path = os.path.join(run_dir, results.HISTORY)
    DAMAGE["empty" if damage == "emptied" else "truncated"](path)
    r = _same_as(straight, run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0))
    assert r["history"] == straight["history"] or all(  # the same rows, timings aside
        {k: v for k, v in a.items() if "seconds" not in k and "images_per_s" not in k}
        == {k: v for k, v in b.items() if "seconds" not in k and "images_per_s" not in k}
        for a, b in zip(r["history"], straight["history"]))
    assert len(r["history"]) == 3 and r["history_missing_epochs"] == []
    assert "rebuilt them from the checkpoint's record" in capsys.readouterr().out


def test_history_rows_lost_with_their_record_are_said_and_listed_not_lost_silently(cifar_dir, tmp_path, straight,
                                                                                    capsys):
    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=2)
    open(os.path.join(run_dir, results.HISTORY), "w").close()
    os.remove(os.path.join(run_dir, checkpoint.STATE))
    for name in (checkpoint.CHECKPOINT, checkpoint.PREVIOUS):  # checkpoints without their own record (older versions)
        with h5py.File(os.path.join(run_dir, name), "a") as f:
            del f[checkpoint.STATE_DATASET]
    r = _same_as(straight, run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0))
    assert [row["epoch"] for row in r["history"]] == [3] and r["history_missing_epochs"] == [1, 2]
    assert "has lost the rows of epoch(s) 1-2" in capsys.readouterr().out


# ------------------------------------------------------------------------------ one process per run directory

def test_a_run_directory_held_by_a_live_process_is_refused_and_a_dead_holders_lock_taken_over(cifar_dir, tmp_path,
                                                                                              capsys):
    import json
    import socket
    import subprocess
    import sys

    from rethink_tf.training import lock

    run_dir = _killed_after(cifar_dir, tmp_path / "w", epoch=1)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with open(os.path.join(run_dir, lock.LOCK), "w") as f:
            json.dump({"host": socket.gethostname(), "pid": holder.pid, "since": "earlier"}, f)
        with pytest.raises(UserError, match=rf"is in use by host {socket.gethostname()} pid {holder.pid} "
                                            r"\(since earlier\): wait for that run to end"):
            run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0)
        assert results.read_history(run_dir) and not os.path.exists(os.path.join(run_dir, results.RESULTS))
    finally:
        holder.kill()
        holder.wait()
    # the holder died without removing its lock (kill -9): the next run takes it over, finishes and removes it
    path = run(tiny(cifar_dir), str(tmp_path / "w"), verbose=0)
    assert f"took over the stale lock of host {socket.gethostname()} pid {holder.pid}" in capsys.readouterr().out
    assert results.read_json(path)["metrics"]["steps_trained"] == 15
    assert not os.path.exists(os.path.join(run_dir, lock.LOCK))


def test_a_torn_lock_is_stale_once_no_holder_can_still_be_writing_it(tmp_path):
    import time

    from rethink_tf.training import lock

    path = tmp_path / lock.LOCK
    path.write_text("")  # just created: its holder may still be writing it
    with pytest.raises(UserError, match=r"is in use by another process \(its lock file is being written\)"):
        with lock.RunLock(str(tmp_path)):
            pass
    old = time.time() - lock.WRITE_GRACE_S - 1  # no holder writes for seconds: it died mid-write
    os.utime(path, (old, old))
    with lock.RunLock(str(tmp_path)):
        assert os.path.exists(path)
    assert not os.path.exists(path)


def test_killing_a_sweep_stops_its_child_training(cifar_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sweep = subprocess.Popen([sys.executable, os.path.join(repo, "scripts", "sweep.py"), "--models=mlp_1x512",
                              "--corruptions=none", f"--workdir={tmp_path}", "--", "--dataset=cifar10",
                              f"--data_dir={cifar_dir}", "--batch_size=8", "--epochs=400", "--notensorboard"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline, child = time.time() + 120, None
    while time.time() < deadline and child is None:
        kids = psutil.Process(sweep.pid).children()
        if kids and any(f.endswith("history.jsonl") for _, _, fs in os.walk(tmp_path) for f in fs):
            child = kids[0]
        time.sleep(0.1)
    assert child is not None, "the sweep's run did not start"
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    gone, alive = psutil.wait_procs([child], timeout=60)
    assert gone and not alive, "the sweep's child outlived it"


# ------------------------------------------------------------------------------ memory

def test_the_cgroup_limit_caps_available_memory(tmp_path):
    from rethink_tf import memory

    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.max").write_text("4294967296\n")
    (v2 / "job" / "memory.current").write_text("1073741824\n")
    (tmp_path / "cg2").write_text("0::/job\n")
    assert memory.cgroup_left(str(v2), str(tmp_path / "cg2")) == 3 * 2**30
    assert memory.available(str(v2), str(tmp_path / "cg2")) <= 3 * 2**30
    (v2 / "job" / "memory.stat").write_text("anon 1\ninactive_file 536870912\n")  # reclaimable page cache
    assert memory.cgroup_left(str(v2), str(tmp_path / "cg2")) == 3 * 2**30 + 2**29
    (v2 / "job" / "memory.max").write_text("max\n")
    assert memory.cgroup_left(str(v2), str(tmp_path / "cg2")) is None
    (v2 / "memory.max").write_text("2147483648\n")  # the limit on an ancestor (Slurm's job, a pod) counts too
    (v2 / "memory.current").write_text("0\n")
    assert memory.cgroup_left(str(v2), str(tmp_path / "cg2")) == 2 * 2**30

    v1 = tmp_path / "v1"
    (v1 / "memory" / "slurm" / "job_7").mkdir(parents=True)
    (v1 / "memory" / "slurm" / "job_7" / "memory.limit_in_bytes").write_text("2147483648\n")
    (v1 / "memory" / "slurm" / "job_7" / "memory.usage_in_bytes").write_text("536870912\n")
    (tmp_path / "cg1").write_text("12:cpu,cpuacct:/slurm/job_7\n11:memory:/slurm/job_7\n")
    assert memory.cgroup_left(str(v1), str(tmp_path / "cg1")) == 1536 * 2**20
    (v1 / "memory" / "slurm" / "job_7" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.cgroup_left(str(v1), str(tmp_path / "cg1")) is None


def test_an_idx_header_declaring_more_than_memory_is_refused_before_reading(tmp_path):
    import gzip

    from rethink_tf.data.sources import archives

    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (1_000_000, 100_000, 1_000))
    path.write_bytes(gzip.compress(header + b"\0" * 10_000))  # 10 kB on disk, 10^14 bytes declared
    with pytest.raises(UserError, match=r"its header declares 93,132.3 GiB of data, more than this process may allocate"):
        archives.read_idx(str(path))
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (1_000_000).to_bytes(4, "big") + b"\0" * 10))
    with pytest.raises(UserError, match="truncated or corrupt"):
        archives.read_idx(str(path))


def test_a_filter_bank_larger_than_memory_is_refused_up_front(tmp_path):
    from conftest import write_idx

    from rethink_tf.config import KernelConfig
    from rethink_tf.linear import experiment

    write_idx(str(tmp_path), n_train=20, n_test=5)
    cfg = KernelConfig(dataset="mnist", data_dir=str(tmp_path), features="random_conv", kernel="linear",
                       num_filters=2_000_000_000)
    with pytest.raises(UserError, match=r"--num_filters=2,000,000,000 needs a 558.8 GiB filter bank"):
        experiment.run(cfg, str(tmp_path / "w"), log=lambda m: None)
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------ smaller promises

def test_a_finished_kernel_run_is_not_solved_again(tmp_path):
    from conftest import write_idx

    from rethink_tf.config import KernelConfig
    from rethink_tf.linear import experiment

    write_idx(str(tmp_path), n_train=30, n_test=5)
    cfg = KernelConfig(dataset="mnist", data_dir=str(tmp_path))
    path = experiment.run(cfg, str(tmp_path / "w"), log=lambda m: None)
    first = open(path).read()
    said = []
    assert experiment.run(cfg, str(tmp_path / "w"), log=said.append) == path
    assert said == [f"{os.path.dirname(path)}: already complete"] and open(path).read() == first


def test_a_dead_workers_scratch_folder_is_removed_by_the_next_worker(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from rethink_tf.training import run as run_lib

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{run_lib.SCRATCH_PREFIX}{dead.pid}-worker1-abc"
    live = tmp_path / f"{run_lib.SCRATCH_PREFIX}{os.getpid()}-worker2-def"
    stale.mkdir()
    live.mkdir()

    class Member:
        kind, index = "worker", 1

    mine = run_lib._scratch_dir(Member)
    assert not stale.exists() and live.exists() and os.path.isdir(mine)
    assert os.path.basename(mine).startswith(f"{run_lib.SCRATCH_PREFIX}{os.getpid()}-worker1-")


MIRRORED_RESUME = r"""
import json, os, sys
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[3])
import keras
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.train import run

class Killed(Exception):
    pass

class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == 7:
            raise Killed()

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for name in ("straight", "killed"):
    cfg = TrainConfig(model="mlp_1x512", data=DataConfig(dataset="cifar10", data_dir=sys.argv[1]), batch_size=8,
                      epochs=3, tensorboard=False, learning_rate=0.01, checkpoint_every_steps=2, run_name=name,
                      steps_per_execution=1)  # a batch end at every step: the kill lands at step 7, mid-epoch
    if name == "killed":
        try:
            run(cfg, sys.argv[2], strategy=mirrored, verbose=0, extra_callbacks=[KillAt()])
            raise SystemExit("not killed")
        except Killed:
            pass
    out[name] = json.load(open(run(cfg, sys.argv[2], strategy=mirrored, verbose=0)))["history"]
print("RESULT" + json.dumps(out))
"""


def test_a_mid_epoch_resume_under_mirrored_replicas_restores_the_epochs_totals(cifar_dir, tmp_path):
    out = run_result_script(MIRRORED_RESUME, cifar_dir, tmp_path)
    assert len(out["straight"]) == len(out["killed"]) == 3
    assert out["killed"][1]["resumed_at_step"] == 6 and out["killed"][1]["running_totals_restored"]
    for a, b in zip(out["straight"], out["killed"]):  # 2 replicas: each held half of the recorded sums
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["epoch"], key)


MIRRORED_SIGNAL = r"""
import json, sys
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.errors import Interrupted
from rethink_tf.train import run
cfg = TrainConfig(model="mlp_1x512", epochs=20, batch_size=8, tensorboard=False, steps_per_execution=1,
                  data=DataConfig(dataset="cifar10", data_dir=sys.argv[1], corrupt="random_labels"))
try:
    path = run(cfg, sys.argv[2], strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), verbose=0)
    print("RESULT" + json.dumps(json.load(open(path))))
except Interrupted as e:
    print("INTERRUPTED", e.exit_code, str(e))
"""


def test_a_sigterm_under_mirrored_replicas_checkpoints_and_the_rerun_equals_an_uninterrupted_run(cifar_dir, tmp_path):
    """SIGTERM (Slurm's, Kubernetes') under MirroredStrategy on 2 logical CPUs: a checkpoint at the next step
    boundary and Interrupted with exit code 143; the rerun resumes and ends where an uninterrupted mirrored run ends."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workdir = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-c", MIRRORED_SIGNAL, cifar_dir, str(workdir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline, history = time.time() + 180, None
    while time.time() < deadline and proc.poll() is None:
        found = [os.path.join(r, "history.jsonl") for r, _, f in os.walk(workdir) if "history.jsonl" in f]
        if found and len(open(found[0]).read().splitlines()) >= 2:
            history = found[0]
            break
        time.sleep(0.02)
    assert history and proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(15)
    out, err = proc.communicate(timeout=180)
    line = [x for x in out.splitlines() if x.startswith("INTERRUPTED")]
    assert line and line[0].split()[1] == "143" and "checkpoint saved" in line[0], (out + err)[-2000:]
    run_dir = os.path.dirname(history)
    assert os.path.exists(os.path.join(run_dir, checkpoint.CHECKPOINT))
    assert not os.path.exists(os.path.join(run_dir, results.RESULTS))
    resumed = run_result_script(MIRRORED_SIGNAL, cifar_dir, workdir)
    uninterrupted = run_result_script(MIRRORED_SIGNAL, cifar_dir, tmp_path / "straight")
    assert len(resumed["resumes"]) == 1 and resumed["resumes"][0]["replicas"] == 2
    assert resumed["metrics"]["steps_trained"] == uninterrupted["metrics"]["steps_trained"] == 5 * 20
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert resumed["metrics"][key] == pytest.approx(uninterrupted["metrics"][key], rel=1e-5, abs=1e-6), key
    assert [r["epoch"] for r in resumed["history"]] == [r["epoch"] for r in uninterrupted["history"]]
    for a, b in zip(resumed["history"], uninterrupted["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5), a["epoch"]
