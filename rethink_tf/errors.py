"""The one exception type that entry points turn into a single-line message.

Library code raises `UserError` for anything the *user* can fix (a missing file, a bad value,
an impossible combination of options). Entry points catch it and print `error: <message>`
with a non-zero exit code instead of a traceback; every other exception is a bug and keeps
its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input or environment, reported as one clear line."""
