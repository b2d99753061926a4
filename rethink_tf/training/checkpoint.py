"""The run's checkpoint: save, restore, and the guard that never lets a diverged model overwrite a good one.

The checkpoint is ONE file, `checkpoint.weights.h5` (weights, BN statistics, optimizer slots and `iterations`),
replaced atomically at every epoch end and every `checkpoint_every_steps` steps; the one it replaces is kept beside
it as the fallback. Each file also holds its own STATE record (the history so far, a mid-epoch's running totals), so
the record that a resume uses always belongs to the checkpoint it loaded, whatever happened to the files beside it.
The position of a run is derived
from the restored `iterations`, so the checkpoint cannot disagree with itself; a resumed run replays the same
batches from that step on (the pipeline's order is a pure function of (seed, epoch)).

The finite-weights guard is the checkpoint's half of the one NaN policy (callbacks.StopOnDivergence is the other):
`save` looks at the weights themselves, not at a loop's logs, so it holds whichever loop calls it.
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from rethink_tf import results
from rethink_tf.errors import UserError

CHECKPOINT = "checkpoint.weights.h5"
STATE = "checkpoint.state.json"  # beside each checkpoint: its step, the history so far, a mid-epoch's totals
STATE_DATASET = "rethink_tf_state"  # the STATE record inside the checkpoint file (JSON bytes)
PREVIOUS = "checkpoint.previous.weights.h5"  # the checkpoint before the newest: the fallback on a damaged file
FREE_SPACE_MARGIN = 16 * 2**20  # bytes kept free beyond a checkpoint's size


def weights_finite(model):
    """True when every weight of the model (trainable, BN statistics) is finite."""
    return all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in model.weights)


def save_checkpoint(model, run_dir, state=None):
    """Weights + BN statistics + optimizer state (incl. `iterations`) in one file, replaced atomically; the
    checkpoint it replaces is kept as PREVIOUS, the fallback when the newest cannot be read. `state` (a dict with
    the checkpoint's "step") is added to the STATE records before the new file takes its place, so a record exists
    for whichever checkpoint a kill leaves.

    The new file is written beside the old one, fsynced, and renamed into place (directory fsynced too), so a kill or
    a power cut at any moment leaves a readable checkpoint. Returns False, writing nothing, when a weight is not
    finite: the previous checkpoint stays the run's last good state.

    Raises:
      UserError: too little free disk space for the file (checked first: h5py can crash the process on a full
        disk) or a failed write; the temporary file is removed and the existing checkpoints stay valid.
    """
    if not weights_finite(model):
        return False
    path, previous = os.path.join(run_dir, CHECKPOINT), os.path.join(run_dir, PREVIOUS)
    tmp = os.path.join(run_dir, ".tmp-" + CHECKPOINT)
    needed = int(os.path.getsize(path) * 1.1) + FREE_SPACE_MARGIN if os.path.exists(path) else 0
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise UserError(f"no room for a checkpoint in {run_dir}: {free / 2**20:.0f} MiB free, "
                        f"{needed / 2**20:.0f} MiB needed; {path} (the last checkpoint) is intact: free some space "
                        "and rerun the same command to resume")
    try:
        model.save_weights(tmp, overwrite=True)
        if state is not None:
            _embed_state(tmp, state)
        _fsync(tmp)
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"writing a checkpoint in {run_dir} failed ({type(e).__name__}: {str(e)[:120]}); the last "
                        f"checkpoint ({path}) is intact: fix the cause and rerun the same command to resume") from None
    if state is not None:
        results.write_json(os.path.join(run_dir, STATE), {"records": _state_records(run_dir)[-1:] + [state]})
    if os.path.exists(path):  # the newest becomes the previous one; CHECKPOINT names a whole file at every moment
        if os.path.exists(previous):
            os.remove(previous)
        try:
            os.link(path, previous)
        except OSError:  # a filesystem without hard links
            shutil.copy2(path, previous)
    os.replace(tmp, path)
    _fsync(run_dir)
    return True


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoint(keras.callbacks.Callback):
    """Checkpoints at every epoch end and, with `every_steps`, every that many optimizer steps (an ImageNet epoch
    is hours long). Diverged weights are never saved (save_checkpoint's guard).

    Each checkpoint has a STATE record beside it, keyed by its step: the history rows so far (history.jsonl can be
    rebuilt from it when a row is torn or lost), the run's config.json (recovered from it when damaged) and, at a mid-epoch checkpoint, the epoch's running metric totals; a
    run resumed there starts its partial epoch from those totals (`resume_totals`): the epoch's train loss and
    accuracy, the stop rule and the time to fit then see the whole epoch, as in an uninterrupted run.
    """

    def __init__(self, run_dir, steps_per_epoch, every_steps=None, resume_totals=None, history=(), config=None):
        super().__init__()
        self.config = config  # the run's config.json dict, kept in each STATE record (config.json's backup)
        self.history = history  # the recorder's list of rows (appended in place)
        self.run_dir, self.steps, self.every = run_dir, steps_per_epoch, every_steps
        self._epoch = 0
        self._last = 0
        self.first_step = 0  # first step of a partial (resumed) epoch, as EpochRecorder.first_step
        self.resume_totals = resume_totals  # saved_state(...)["totals"] of the step a run resumed at
        self.totals_restored = False
        self._pending = None
        self.last_saved = False  # whether the last save wrote a checkpoint (the guard refuses non-finite weights)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last = epoch * self.steps + self.first_step
        self.totals_restored = False
        self._pending, self.resume_totals = (self.resume_totals if self.first_step else None), None

    def on_train_batch_end(self, batch, logs=None):
        if self._pending is not None:  # the partial epoch's first call: its metrics exist (Keras builds them lazily)
            self.totals_restored = _add_totals(self.model, self._pending)
            self._pending = None
        # `batch` counts from the start of this fit() epoch (a partial epoch starts at first_step); with
        # steps_per_execution > 1 it advances in strides, so "a multiple of every was crossed" is the test.
        step = self._epoch * self.steps + self.first_step + batch + 1
        crossed = self.every and step // self.every > self._last // self.every
        self._last = step
        if crossed and step % self.steps:
            self.save(step)

    def on_epoch_end(self, epoch, logs=None):
        self.save((epoch + 1) * self.steps, mid_epoch=False)

    def save(self, step, mid_epoch=True):
        """save_checkpoint at optimizer step `step`, then its STATE record (history, and a mid-epoch's totals)."""
        totals = _metric_totals(self.model) if mid_epoch else None  # read first: under workers a collective
        self.last_saved = save_checkpoint(self.model, self.run_dir,
                                          state={"step": step, "totals": totals, "history": list(self.history),
                                                 **({"config": self.config} if self.config else {})})
        return self.last_saved


def _metric_variables(model):
    return [v for m in model.metrics for v in m.variables]


def _metric_totals(model):
    return [keras.ops.convert_to_numpy(v).tolist() for v in _metric_variables(model)]


def _add_totals(model, totals):
    """Adds recorded running totals to the running metric variables (sums and counts: additive), so that an epoch
    resumed mid-way reports its whole running averages. Under several replicas a variable summed over them gets
    total / replicas on each (its read is the sum), added in replica context. False when the metrics do not match
    the record (another model or metric set: nothing is added)."""
    variables = _metric_variables(model)
    if len(variables) != len(totals) or any(np.shape(t) != tuple(v.shape) for v, t in zip(variables, totals)):
        return False

    def add():
        n = tf.distribute.get_replica_context().num_replicas_in_sync
        for v, value in zip(variables, totals):
            value = np.asarray(value, v.dtype)
            v.assign_add(value / n if v.aggregation == "sum" and n > 1 else value)

    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1:
        strategy.run(add)
    else:
        add()
    return True


def _state_records(run_dir):
    try:
        records = results.read_json(os.path.join(run_dir, STATE)).get("records")
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _embed_state(path, state):
    """Writes `state` into the checkpoint file at `path` (before it is fsynced and renamed into place): the record
    and the weights are then one file, replaced together."""
    import h5py

    with h5py.File(path, "a") as f:
        f.create_dataset(STATE_DATASET, data=np.frombuffer(json.dumps(state).encode(), np.uint8))


def embedded_state(path):
    """The STATE record inside a checkpoint file, or None (no file, a damaged one, or one of an older version)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return json.loads(bytes(f[STATE_DATASET][()]).decode()) if STATE_DATASET in f else None
    except Exception:  # noqa: BLE001 (h5py raises OSError, KeyError, ... on a damaged file: no record then)
        return None


def saved_state(run_dir, step):
    """The STATE record of the checkpoint at optimizer step `step` ({"totals": ..., "history": [...]}): the one
    inside the checkpoint file of that step (the newest or the previous one), else the STATE file's (checkpoints
    of older versions), or {} when there is none for that step."""
    for path in (os.path.join(run_dir, CHECKPOINT), os.path.join(run_dir, PREVIOUS)):
        record = embedded_state(path)
        if isinstance(record, dict) and record.get("step") == step:
            return record
    return next((r for r in reversed(_state_records(run_dir)) if r.get("step") == step), {})


def restore(model, run_dir, strategy=None):
    """Loads the run's checkpoint into a compiled model; returns the optimizer step it holds (0: no checkpoint).

    A checkpoint that cannot be read (truncated, overwritten, emptied) is reported and the previous one is loaded
    instead; when neither can be read the run stops with one line. The optimizer's slots are built inside the
    strategy's scope (they must be mirrored variables under MirroredStrategy) before loading (keras#19389).

    Raises:
      UserError: checkpoints exist and none of them can be read.
    """
    candidates = [p for p in (os.path.join(run_dir, CHECKPOINT), os.path.join(run_dir, PREVIOUS))
                  if os.path.exists(p)]
    failures = []
    for path in candidates:
        try:
            with (strategy or tf.distribute.get_strategy()).scope():
                model.optimizer.build(model.trainable_variables)
                model.load_weights(path)
        except Exception as e:  # h5py and Keras raise OSError, ValueError, KeyError, ... on a damaged file
            failures.append(f"{os.path.basename(path)}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]}")
            print(f"warning: cannot read the checkpoint {path} ({failures[-1]})"
                  + ("; falling back to the previous one" if path != candidates[-1] else ""), flush=True)
            continue
        return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if failures:
        raise UserError(f"no readable checkpoint in {run_dir} ({'; '.join(failures)}): delete the folder to start "
                        "the run again")
    return 0
