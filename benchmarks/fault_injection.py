"""Fault injection on the training CLI: kills, signals, damaged files, a second process, a full disk.

    python benchmarks/fault_injection.py [--kills=5] [--seed=0] [--workdir=/tmp/rethink_tf_faults]

Every fault is injected into a small real run (mlp_1x512 on the built-in Fashion-MNIST subset: 512 images, 8 steps
per epoch, 6 epochs, a checkpoint every 3 steps). A fault is *recovered* when the run, rerun with the same command
(and, where the run asked for it in its one-line message, after following that remedy), ends with the same results
as an uninterrupted run: the same steps, the same final train and test metrics and the same per-epoch history. It is
*lost* otherwise: a traceback, a hang, a wrong number. The last line reads "N faults injected, N recovered, 0 lost".
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ARGS = ["--model=mlp_1x512", "--dataset=fashion_mnist_5k", "--train_examples=512", "--test_examples=256",
        "--batch_size=64", "--epochs=6", "--checkpoint_every_steps=3", "--steps_per_execution=1", "--notensorboard",
        "--lr_decay_examples=60000"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
TIMEOUT_S = 300


def command(workdir):
    return [sys.executable, "-m", "rethink_tf.train", *ARGS, f"--workdir={workdir}"]


def run(workdir):
    p = subprocess.run(command(workdir), capture_output=True, text=True, env=ENV, timeout=TIMEOUT_S)
    return p.returncode, p.stdout + p.stderr


def run_dir(workdir):
    dirs = [d for d in os.listdir(workdir) if os.path.isdir(os.path.join(workdir, d))] if os.path.isdir(workdir) else []
    return os.path.join(workdir, dirs[0]) if dirs else None


def outcome(workdir):
    path = os.path.join(run_dir(workdir) or workdir, "results.json")
    with open(path) as f:
        r = json.load(f)
    hist = [(h["epoch"], round(h["train_loss"], 5), round(h["train_accuracy"], 5), round(h["test_accuracy"], 5))
            for h in r["history"]]
    m = r["metrics"]
    return (m["steps_trained"], round(m["train_loss"], 5), round(m["test_accuracy"], 5), tuple(hist))


def finish(workdir, reference, log):
    """Reruns until complete (following a one-line remedy once); True when the results equal the reference."""
    for attempt in range(3):
        rc, out = run(workdir)
        if "Traceback" in out:
            log(f"    traceback on rerun {attempt + 1}: {out.strip().splitlines()[-1][:160]}")
            return False
        if rc == 0:
            same = outcome(workdir) == reference
            if not same:
                log(f"    results differ from the uninterrupted run: {outcome(workdir)[:3]} vs {reference[:3]}")
            return same
        last = out.strip().splitlines()[-1]
        log(f"    rc {rc}: {last[:200]}")
        if "delete the folder" in last or "delete its folder" in last:
            shutil.rmtree(run_dir(workdir))  # the remedy the line gives
    return False


def killed_at(workdir, delay, sig=signal.SIGKILL):
    """Starts the run and sends `sig` after `delay` seconds (or when it ends first)."""
    p = subprocess.Popen(command(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        out, _ = p.communicate(timeout=delay)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        p.send_signal(sig)
        out, _ = p.communicate(timeout=TIMEOUT_S)
        return p.returncode, out


def killed_after_rows(workdir, rows):
    """Starts the run and kill -9s it once its history holds `rows` epochs."""
    p = subprocess.Popen(command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + TIMEOUT_S
    while p.poll() is None and time.time() < deadline:
        d = run_dir(workdir)
        path = os.path.join(d, "history.jsonl") if d else None
        if path and os.path.exists(path) and len(open(path).read().splitlines()) >= rows:
            break
        time.sleep(0.02)
    p.kill()
    p.wait()


DAMAGE = {
    "truncated": lambda path: open(path, "r+b").truncate(os.path.getsize(path) // 2),
    "garbage": lambda path: open(path, "wb").write(random.Random(path).randbytes(2048)),
    "emptied": lambda path: open(path, "wb").close(),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/rethink_tf_faults")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    rc, out = run(os.path.join(args.workdir, "reference"))
    assert rc == 0, out[-2000:]
    reference = outcome(os.path.join(args.workdir, "reference"))
    duration = time.perf_counter() - t0
    log(f"reference run: {reference[0]} steps, test accuracy {reference[2]}, {duration:.1f} s")
    tally = {"injected": 0, "recovered": 0}

    def fault(name, recovered):
        tally["injected"] += 1
        tally["recovered"] += bool(recovered)
        log(f"{'recovered' if recovered else 'LOST     '}  {name}")

    # 1. kill -9 at random moments, then rerun
    for i in range(args.kills):
        w = os.path.join(args.workdir, f"kill{i}")
        delay = rng.uniform(3.0, max(4.0, duration * 0.95))
        killed_at(w, delay)
        fault(f"kill -9 at {delay:.1f} s", finish(w, reference, log))

    # 2. SIGTERM and SIGINT mid-run: one line, a checkpoint, then a rerun
    for sig in (signal.SIGTERM, signal.SIGINT):
        w = os.path.join(args.workdir, sig.name)
        rc, out = killed_at(w, max(4.0, duration * 0.6), sig)
        said = out.strip().splitlines()[-1] if out.strip() else ""
        ok = rc in (0, 128 + sig) and "Traceback" not in out and (rc == 0 or said.startswith("interrupted"))
        fault(f"{sig.name} mid-run (rc {rc}: {said[:90]})", ok and finish(w, reference, log))

    # 3. each file of a killed run damaged in turn (and results.json of a finished run)
    base = os.path.join(args.workdir, "base")
    killed_after_rows(base, 3)  # every file of a run exists by then: checkpoints, their record, history
    names = sorted(f for f in os.listdir(run_dir(base)) if os.path.isfile(os.path.join(run_dir(base), f)))
    for name in names:
        for kind, damage in DAMAGE.items():
            w = os.path.join(args.workdir, f"damage-{name}-{kind}")
            shutil.copytree(base, w)
            damage(os.path.join(run_dir(w), name))
            fault(f"{name} {kind}", finish(w, reference, log))
    done = os.path.join(args.workdir, "reference")
    for kind, damage in DAMAGE.items():
        w = os.path.join(args.workdir, f"damage-results-{kind}")
        shutil.copytree(done, w)
        damage(os.path.join(run_dir(w), "results.json"))
        fault(f"results.json of a finished run {kind}", finish(w, reference, log))

    # 4. two identical commands at once: the second says who holds the run and exits; the first finishes
    w = os.path.join(args.workdir, "twice")
    first = subprocess.Popen(command(w), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    while not (run_dir(w) and os.path.exists(os.path.join(run_dir(w), ".lock"))) and first.poll() is None:
        time.sleep(0.05)
    rc2, out2 = run(w)
    first.communicate(timeout=TIMEOUT_S)
    said = out2.strip().splitlines()[-1]
    # the second either finds the first still training (refused, naming it) or, when its own start-up outlasted the
    # first run, finds the run finished ("already complete"); never a second writer
    ok = ("Traceback" not in out2 and first.returncode == 0
          and (rc2 == 2 and "is in use by" in said or rc2 == 0 and said.endswith("already complete")))
    fault(f"a second identical command (rc {rc2}: {said.split(': ', 1)[-1][:80]})", ok and outcome(w) == reference)

    # 5. a full disk: the run's folder on an 8 MiB tmpfs, too small for its checkpoints (a mount needs root; skipped
    #    otherwise). The run must stop with one line, its last checkpoint intact; after the disk grows (the remedy),
    #    the rerun must end where the uninterrupted run ends.
    mnt = os.path.join(args.workdir, "tmpfs")
    os.makedirs(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt], capture_output=True).returncode:
        log("skipped    a full disk (cannot mount a tmpfs here)")
    else:
        try:
            w = os.path.join(mnt, "runs")
            rc, out = run(w)
            said = out.strip().splitlines()[-1] if out.strip() else ""
            ok = rc == 2 and "Traceback" not in out and ("no room" in said or "failed" in said)
            subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)  # space freed
            fault(f"a full disk (rc {rc}: {said[:100]})", ok and finish(w, reference, log))
        finally:
            subprocess.run(["umount", mnt], capture_output=True)

    lost = tally["injected"] - tally["recovered"]
    log(f"{tally['injected']} faults injected, {tally['recovered']} recovered, {lost} lost "
        f"({time.perf_counter() - t0:.0f} s)")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
