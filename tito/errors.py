"""Exceptions that carry the process exit code tito should return."""


class TitoError(Exception):
    """A failure the user should see as a one-line message (exit status 1)."""

    exit_code = 1


class UsageError(TitoError):
    """Bad command-line input, e.g. an unknown module (exit status 2)."""

    exit_code = 2
