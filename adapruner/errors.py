"""The one base class of errors caused by what a user asked for (bad input, missing model or data).

The CLI prints them as one line with exit code 2; the worker marks the job failed with the message.
"""


class UserError(ValueError):
    """Bad input: the message names the field or option and how to fix it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or one it needs) does not exist; the message names it and how to
    get it. Also a ``FileNotFoundError``, which is what it is."""


class ModelLoadError(UserError):
    """The model cannot be found or is not supported; the message says what to do."""
