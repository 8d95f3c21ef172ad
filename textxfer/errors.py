"""The project's exception type: the CLI prints it as one line and exits non-zero."""


class TextxferError(Exception):
    """A user-facing error: the message says what is wrong, where, and what to do."""
