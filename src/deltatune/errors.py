"""One exception type for every user-facing error.

The CLI catches `DeltatuneError` and prints its message without a traceback, so every message
must say what was wrong, where (file:line, key, path) and what to do about it.
"""


class DeltatuneError(Exception):
    """A problem with the user's input (config, data, model path, run dir): message is the UI."""
