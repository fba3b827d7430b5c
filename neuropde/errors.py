"""Errors meant for the user: one clear line that names the fix (the scripts print them without a traceback)."""


class UserError(Exception):
    """Bad input: an option, a config combination, a file. The message says what to do."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or not written by neuropde."""
