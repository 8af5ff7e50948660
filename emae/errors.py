"""The one exception type the suite raises for bad input.

The CLI prints an :class:`EmaeError` as a single ``error: ...`` line (exit status 2); anything else is a
bug and keeps its traceback.
"""


class EmaeError(Exception):
    """Bad input: a file, key, shape or value the user can fix. The message names it."""
