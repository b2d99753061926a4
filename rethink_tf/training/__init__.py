"""Training one run: run.py (one run of a TrainConfig), loop.py (the loops and their one contract), optim.py
(schedule, optimizer, weight average), callbacks.py (recorder, divergence, memorization, time to fit),
checkpoint.py (save, restore, finite-weights guard), distribute.py and cluster.py (one host, several hosts)."""
