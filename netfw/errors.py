"""Exceptions shared across netfw."""


class InputError(ValueError):
    """Bad input: the CLI prints it on one line and exits 2; nothing on the host was touched."""

    #: Longest message kept: a message quotes the bad value, which may be megabytes long.
    MAX_MESSAGE = 1000

    def __init__(self, message: str):
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE] + f"... ({len(message)} characters)"
        super().__init__(message)
