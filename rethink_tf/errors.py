"""The one exception type that entry points turn into a single-line message.

Library code raises `UserError` for anything the *user* can fix (a missing file, a bad value,
an impossible combination of options). Entry points catch it and print `error: <message>`
with a non-zero exit code instead of a traceback; every other exception is a bug and keeps
its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input or environment, reported as one clear line."""


class Interrupted(UserError):
    """A run stopped by SIGINT or SIGTERM after saving a checkpoint at a step boundary (training/callbacks.py).

    Entry points print the message as it is (no "error:") and exit with 128 + the signal's number, as a shell
    reports a process that the signal ended (130 for Ctrl-C, 143 for the SIGTERM of Slurm or Kubernetes)."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum
