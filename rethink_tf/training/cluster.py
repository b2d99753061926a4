"""Multi-host training: tf.distribute.MultiWorkerMirroredStrategy launched by TF_CONFIG.

The cluster is described the way Slurm, Kubernetes/Kubeflow TFJob and Ray describe it to TensorFlow: a TF_CONFIG
environment variable, `{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}` (a
"chief" task is accepted too), or `--worker_hosts=h0:p0,h1:p1 --task_index=i`, which write it. Every worker runs the
same command. The chief (the "chief" task, else worker 0) is the only one that writes the run directory; the
others write to a temporary folder that is deleted at the end.

Keras 3 `model.fit` fails under this strategy (keras-team/keras#20585), so loop.fit_and_evaluate runs Keras'
own `model.train_step` under `strategy.run` there (the step `fit` runs too; see loop.fit_distributed).

A missing peer makes TensorFlow's collective start-up wait forever, ignoring SIGTERM and holding the GIL (measured:
a lone worker of a 2-worker cluster was still waiting after 10 minutes, and a Python watchdog thread never ran).
`connect` therefore starts a watchdog *process*: if the first all-reduce has not completed within `timeout_s`, it
prints one line naming the peers and kills the worker (SIGKILL, exit status 137).
"""

import json
import os
import subprocess
import sys

from rethink_tf.errors import UserError

TASK_TYPES = ("chief", "worker")


def tf_config_from_hosts(worker_hosts, task_index):
    """The TF_CONFIG JSON for `--worker_hosts=h0:p0,h1:p1 --task_index=i`."""
    hosts = [h.strip() for h in worker_hosts.split(",") if h.strip()]
    if len(hosts) < 2:
        raise UserError(f"--worker_hosts needs at least two host:port entries; received {worker_hosts!r}")
    for h in hosts:
        if not _valid_address(h):
            raise UserError(f"--worker_hosts entry {h!r} is not host:port (a port in 1..65535)")
    if task_index is None or not 0 <= task_index < len(hosts):
        raise UserError(f"--task_index must be in [0, {len(hosts)}) for {len(hosts)} --worker_hosts; "
                        f"received {task_index}")
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}})


def _valid_address(address):
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def parse_tf_config(text):
    """(cluster dict, task type, task index) of a TF_CONFIG string, or UserError in one line."""
    if not text:
        raise UserError("--strategy=multi_worker needs a cluster: set TF_CONFIG (Slurm, TFJob and Ray do) or pass "
                        "--worker_hosts=host0:port,host1:port --task_index=N on every worker")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("cluster"), dict) or not isinstance(cfg.get("task"), dict):
        raise UserError('TF_CONFIG must be {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                        '"index": N}}')
    cluster, task = cfg["cluster"], cfg["task"]
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        raise UserError(f"TF_CONFIG cluster has task type(s) {', '.join(unknown)}; MultiWorkerMirroredStrategy "
                        "takes only chief and worker")
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not all(isinstance(h, str) and _valid_address(h) for h in hosts):
            raise UserError(f'TF_CONFIG cluster["{kind}"] must be a list of "host:port" strings with a numeric port '
                            f'in 1..65535; received {hosts!r}')
    if len(cluster.get("chief", [])) > 1:
        raise UserError("TF_CONFIG has more than one chief")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise UserError(f"TF_CONFIG task {task} is not one of the cluster's tasks "
                        f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items())})")
    if sum(len(v) for v in cluster.values()) < 2:
        raise UserError("TF_CONFIG describes a one-task cluster; use --strategy=none or mirrored on one host")
    return cluster, kind, index


def is_chief(kind, index, cluster):
    """The task that writes results: the chief, or worker 0 when the cluster has no chief."""
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


class Cluster:
    """This process's place in the cluster, and its MultiWorkerMirroredStrategy.

    `token` is a random number the same in every process of this start of the cluster (a new one each start): it
    names what the processes must share and never reuse, such as the run's tf.data service job."""

    def __init__(self, strategy, cluster, kind, index, token=0):
        self.strategy, self.cluster, self.kind, self.index, self.token = strategy, cluster, kind, index, token
        self.chief = is_chief(kind, index, cluster)
        self.workers = sum(len(v) for v in cluster.values())


def connect(worker_hosts=None, task_index=None, timeout_s=300.0):
    """Creates the MultiWorkerMirroredStrategy of this worker and waits until every peer has answered.

    Must run before any other TensorFlow op of the process (TensorFlow's rule for this strategy). `worker_hosts`
    and `task_index` write TF_CONFIG; otherwise TF_CONFIG must be set.

    Raises:
      UserError: no cluster, a malformed TF_CONFIG. A peer that does not answer within timeout_s ends the
        process (SIGKILL: exit status 137, or -9 as Python's subprocess reports it) after one line on stderr
        (a hung collective cannot be interrupted, so no cleaner exit status is possible).
    """
    if worker_hosts:
        os.environ["TF_CONFIG"] = tf_config_from_hosts(worker_hosts, task_index)
    cluster, kind, index = parse_tf_config(os.environ.get("TF_CONFIG", ""))
    peers = [h for k, hosts in cluster.items() for i, h in enumerate(hosts) if (k, i) != (kind, index)]
    message = (f"error: the cluster did not assemble within {timeout_s:g} s: {kind} {index} could not reach all of "
               f"{', '.join(peers)} (are all workers started with the same TF_CONFIG, and are the ports open?). "
               "Raise --cluster_timeout for slow starts")
    from rethink_tf import console

    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout_s), message],
                                stdin=subprocess.PIPE, stderr=console.real_stderr())
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # The first collective: it returns only once every worker has joined. Each adds a random number below 2**16
    # per replica; the float32 sum stays exact up to 256 replicas and is the same in every process.
    mine = float(int.from_bytes(os.urandom(2), "big"))
    # (compiled: an eager strategy.run makes TensorFlow print a performance warning on every worker)
    @tf.function(autograph=False)
    def agree():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.constant, args=(mine,)), axis=None)

    token = agree()
    watchdog.stdin.close()  # "assembled": the watchdog exits
    watchdog.wait()
    return Cluster(strategy, cluster, kind, index, token=int(token))


# The watchdog process: waits for its stdin to close (the worker assembled, or died); on timeout it reports and
# kills the worker, whose main thread is stuck in TensorFlow's C++ start-up.
_WATCHDOG = """
import os, select, signal, sys
pid, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if not ready:
    print(message, file=sys.stderr, flush=True)
    os.kill(pid, signal.SIGKILL)
"""
