"""How much memory this process may still allocate: the host's available memory, capped by the cgroup limit that
containers, Slurm and Kubernetes put on a job (v2 `memory.max`, v1 `memory.limit_in_bytes`).

psutil reads the host's memory; inside a cgroup the kernel OOM-kills the job at its limit long before the host runs
short, without a word. Up-front memory checks (the §5 solve, the archive readers) use `available()` instead.
"""

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def available(cgroup_root=CGROUP_ROOT, proc_cgroup="/proc/self/cgroup"):
    """Bytes this process may still allocate: min(host available, cgroup limit - cgroup usage)."""
    import psutil

    left = psutil.virtual_memory().available
    cgroup = cgroup_left(cgroup_root, proc_cgroup)
    return left if cgroup is None else min(left, cgroup)


def cgroup_left(cgroup_root=CGROUP_ROOT, proc_cgroup="/proc/self/cgroup"):
    """Bytes left under the tightest memory limit of this process's cgroup and its ancestors (v2, else v1), or None
    when none is set. Usage counts without the inactive file cache, which the kernel reclaims before it OOM-kills
    (as kubelet counts it)."""
    paths = _cgroup_paths(proc_cgroup)
    for version, base, limit_name, usage_name, cache_name in (
            ("v2", cgroup_root, "memory.max", "memory.current", "inactive_file"),
            ("v1", os.path.join(cgroup_root, "memory"), "memory.limit_in_bytes", "memory.usage_in_bytes",
             "total_inactive_file")):
        if version not in paths:
            continue
        left = None
        parts = [p for p in paths[version].split("/") if p]
        for depth in range(len(parts), -1, -1):  # the group, then each ancestor up to the root
            folder = os.path.join(base, *parts[:depth])
            limit = _read_int(os.path.join(folder, limit_name))
            if limit is None or limit >= 1 << 60:  # "max", absent, or v1's "no limit" (9223372036854771712)
                continue
            usage = (_read_int(os.path.join(folder, usage_name)) or 0) - _stat(folder, cache_name)
            left = max(0, limit - max(usage, 0)) if left is None else min(left, max(0, limit - max(usage, 0)))
        if left is not None:
            return left
    return None


def _stat(folder, key):
    """A value of the group's memory.stat (0 when absent)."""
    try:
        with open(os.path.join(folder, "memory.stat")) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return 0


def _cgroup_paths(proc_cgroup):
    """{"v2": path, "v1": path} of this process's memory cgroup from /proc/self/cgroup."""
    out = {}
    try:
        with open(proc_cgroup) as f:
            for line in f:
                parts = line.strip().split(":", 2)
                if len(parts) != 3:
                    continue
                if parts[0] == "0" and parts[1] == "":
                    out["v2"] = parts[2]
                elif "memory" in parts[1].split(","):
                    out["v1"] = parts[2]
    except OSError:
        pass
    return out


def _read_int(path):
    """The integer in a cgroup file; None for "max", absent or unreadable files."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
