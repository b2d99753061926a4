"""One process per run directory: an exclusive lock file that works on NFS and survives a kill -9 of its holder.

Two identical commands (or a sweep rerun while a killed sweep's child still trains) would otherwise write one
checkpoint and one history from two processes. The lock is a file created with O_CREAT | O_EXCL (atomic on local
filesystems and NFSv3+, unlike flock on many NFS mounts) that names its holder: host, PID, start time. A daemon
thread touches it every HEARTBEAT_S seconds. A lock is stale, and taken over, when its holder's PID is gone (same
host), its heartbeat is older than STALE_S (a host that died without removing it, or a reused PID), or it cannot be
read and is older than WRITE_GRACE_S (its holder died while writing it).
"""

import json
import os
import socket
import threading
import time

from rethink_tf.errors import UserError

LOCK = ".lock"
HEARTBEAT_S = 30.0
STALE_S = 5 * HEARTBEAT_S
WRITE_GRACE_S = 5.0  # an unreadable lock file older than this was torn by its holder's death, not being written


class RunLock:
    """`with RunLock(run_dir):` holds run_dir for this process, or raises UserError naming the holder."""

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, LOCK)
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):  # a stale lock is removed once, then taken
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _holder(self.path)
                if not _stale(holder, self.path):
                    who = (f"host {holder['host']} pid {holder.get('pid', '?')} (since {holder.get('since', '?')})"
                           if holder.get("host") else "another process (its lock file is being written)")
                    raise UserError(f"{os.path.dirname(self.path)} is in use by {who}: wait for that run to end, "
                                    "or stop it, then rerun the same command") from None
                if _take_over(self.path):
                    print(f"warning: took over the stale lock of host {holder.get('host', '?')} pid "
                          f"{holder.get('pid', '?')} on {os.path.dirname(self.path)}", flush=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._me = me
            self._thread = threading.Thread(target=self._beat, name="rethink_tf-lock", daemon=True)
            self._thread.start()
            return self
        raise UserError(f"cannot take the lock {self.path}: another process keeps taking it")

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def __exit__(self, *exc):
        self._stop.set()
        if _holder(self.path) == getattr(self, "_me", None):  # never another process's lock (a takeover race)
            _remove(self.path)


def holder(run_dir):
    """{host, pid, since} of the live process holding run_dir, or None (no lock, or a stale one): what a listing
    of runs calls "running"."""
    path = os.path.join(run_dir, LOCK)
    if not os.path.exists(path):
        return None
    found = _holder(path)
    return None if _stale(found, path) else found


def _holder(path):
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}  # torn by a kill during its write: judged by its age


def _stale(holder, path):
    try:
        age = time.time() - os.path.getmtime(path)
    except OSError:
        return True  # removed meanwhile
    if not holder.get("host"):  # unreadable: a holder writes it right after creating it, so it died mid-write
        return age > WRITE_GRACE_S
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not pid_alive(holder["pid"]):
            return True
    return age > STALE_S  # a silent heartbeat: a dead host, or a PID reused by another program


def pid_alive(pid):
    """Whether a process of this host has this PID (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _take_over(path):
    """Removes a stale lock file so that exactly one of several processes that judged it stale takes it: each
    renames it to a name of its own (atomic: one rename wins) and deletes that copy. False when another process
    renamed it first, or when the file renamed is not the one judged stale (a fresh lock: it is put back)."""
    try:
        judged = os.stat(path)
        mine = f"{path}.stale-{socket.gethostname()}-{os.getpid()}"
        os.rename(path, mine)
    except FileNotFoundError:
        return False
    if os.stat(mine).st_ino != judged.st_ino:  # someone's new lock arrived between the stat and the rename
        try:
            os.link(mine, path)  # back where it was, unless yet another lock is there
        except FileExistsError:
            pass
        _remove(mine)
        return False
    _remove(mine)
    return True


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
