"""A readable console for the entry points: no TensorFlow/absl log lines unless asked for.

TensorFlow 2.21 prints C++ lines through absl before any setting can reach them (`WARNING: All log messages before
absl::InitializeLog() ...`, `I0000 ... port.cc] oneDNN custom operations are on`, `E0000 ... cuda_platform.cc]
failed call to cuInit` on a machine without GPU driver), and TF_CPP_MIN_LOG_LEVEL no longer silences them. So an
entry point run as a program calls `quiet()` before importing TensorFlow: file descriptor 2 becomes a pipe and a
thread forwards every line except those log lines to the real stderr. Python's absl logging is set to ERROR.

Opt out (everything shown, as TensorFlow prints it): pass `--verbosity=N` (absl's flag), or set
TF_CPP_MIN_LOG_LEVEL to 0, 1 or 2. Library code never calls this; only `main` programs do.
"""

import atexit
import os
import re
import sys
import threading

# Line starts of TF/XLA/absl C++ log lines and of absl Python log records (W1123 12:00:00.000 ... file.py:12] ...).
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWEF]\d{4} +[\d:.]+ +\d+ [^ ]+:\d+\]"
    rb"|To enable the following instructions: .* rebuild TensorFlow"
    rb"|WARNING:absl:|INFO:absl:)")

_state = {}


def wants_logs(argv=None):
    """True when the user asked to see TensorFlow/absl log lines (--verbosity, or TF_CPP_MIN_LOG_LEVEL < 3)."""
    argv = sys.argv if argv is None else argv
    if any(a == "-v" or a.startswith(("--verbosity", "-v=")) for a in argv[1:]):
        return True
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("0", "1", "2")


def quiet(argv=None):
    """Filters TF/absl log lines out of this process's stderr, unless wants_logs(). Idempotent; returns whether
    the filter is active. Call it first thing in a program, before TensorFlow is imported."""
    if _state or wants_logs(argv):
        return bool(_state)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what TF still honours, it silences
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        buf = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:
                if not NOISE.match(line):
                    os.write(real, line + b"\n")
            if b"\r" in buf and not NOISE.match(buf):  # a progress bar redrawing in place: show it now
                os.write(real, buf)
                buf = b""
        if buf and not NOISE.match(buf):
            os.write(real, buf)
        os.close(read_end)

    thread = threading.Thread(target=forward, name="rethink_tf-stderr-filter", daemon=True)
    thread.start()
    _state.update(real=real, thread=thread)
    atexit.register(restore)
    return True


def real_stderr():
    """The file descriptor of the process's real stderr (behind the filter when quiet() is active): for a helper
    process whose output must arrive even if this process is killed (cluster.connect's watchdog)."""
    return _state.get("real", 2)


def restore():
    """Puts the real stderr back and waits for the filter to drain (at exit: no error line is ever lost)."""
    if not _state:
        return
    sys.stderr.flush()
    os.dup2(_state["real"], 2)  # closes the pipe's last write end: the thread reads EOF and ends
    _state["thread"].join(timeout=5)
    _state.clear()


def quiet_absl(flag_values):
    """After flags are parsed: absl Python logging at ERROR unless --verbosity was given."""
    from absl import logging

    if not flag_values["verbosity"].present:
        logging.set_verbosity(logging.ERROR)


def exit_on_signals():
    """SIGINT and SIGTERM end the program with one line and exit status 128 + the signal, wherever they arrive
    (while TensorFlow imports, while data load): the defaults print a traceback or nothing at all. Training installs
    its own handlers, which checkpoint first (training/callbacks.py StopOnSignal), and restores these after."""
    import signal

    def handler(signum, frame):
        print(f"interrupted ({signal.Signals(signum).name}) outside a training step; nothing was lost: the run's last "
              "checkpoint, if any, is on disk; rerun the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


def duration(seconds):
    """A short human duration for progress lines: "42s", "3m05s", "1h02m"."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
