"""Exceptions shared across netfw."""


class InputError(ValueError):
    """Bad input: the CLI prints it on one line and exits 2; nothing on the host was touched."""
