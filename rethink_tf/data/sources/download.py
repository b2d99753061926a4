"""Downloading a small dataset with tfds's own download manager, after a check that its host answers.

CIFAR-10, MNIST and Fashion-MNIST are downloaded and prepared by tfds itself (its download manager and progress
bar), after a 5-second reachability check of the dataset's host, so a machine without network gets one clear line
instead of a hang. ImageNet is never downloaded (its licence).
"""

import os

from rethink_tf.errors import UserError

NO_NETWORK_ENV = "RETHINK_TF_NO_NETWORK"  # set (e.g. by the test suite): never try to reach the network
CONNECT_TIMEOUT_S = 5.0


def network_reachable(url, timeout=CONNECT_TIMEOUT_S):
    """(True, "") if a TCP connection to url's host opens within timeout, else (False, why). Never hangs."""
    import socket
    import urllib.parse

    if os.environ.get(NO_NETWORK_ENV):
        return False, f"network use disabled by {NO_NETWORK_ENV}"
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"{parsed.hostname}:{port}: {e.strerror or type(e).__name__}"


def download_and_prepare(ds_spec, data_dir):
    """tfds's own download and prepare of a small dataset into data_dir, with its progress bar."""
    import tensorflow_datasets as tfds

    ok, why = network_reachable(ds_spec.download_url)
    if not ok:
        raise UserError(
            f"{ds_spec.name} is not in {data_dir} and cannot be downloaded (no network: {why}); either put "
            f"{ds_spec.archive_help} in --data_dir, or run once on a machine with internet (it downloads and "
            f"prepares itself) and copy {data_dir}/{ds_spec.tfds_name}/ here; --dataset=fashion_mnist_5k needs no data")
    print(f"downloading {ds_spec.name} with tensorflow_datasets into {data_dir} (once)", flush=True)
    try:
        # from the original archive (not a GCS copy): the same files a user could have put there by hand
        tfds.builder(ds_spec.tfds_name, data_dir=data_dir).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except OSError as e:  # the connection dropped mid-way, the disk is full, ...
        raise UserError(f"downloading {ds_spec.name} into {data_dir} failed: {type(e).__name__}: {e}") from None
