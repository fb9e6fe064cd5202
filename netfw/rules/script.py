"""The one composer of line-oriented standard input: `*tables-restore`, `ipset restore` and `ip -batch` scripts.

These tools read one command per line, so a value that carried a line break (`2001:db8::5%1\\n-I FORWARD 1 -j
ACCEPT`) would become a command of its own, run as root. Every value is validated where it enters (netfw.model.values,
netfw.model.spec); this is the last line of defence, so that a validator that missed one fails closed instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from netfw.errors import InputError


def join(lines: Iterable[str]) -> str:
    """The lines, each ended by a newline ("" for none); InputError if one holds a line break or NUL. Pure."""
    out = []
    for line in lines:
        # \r ends a line for some readers, NUL ends a C string: neither belongs inside a command either.
        if not isinstance(line, str) or "\n" in line or "\r" in line or "\0" in line:
            raise InputError(f"refusing a script line with a line break or NUL inside: {line!r}")
        out.append(line + "\n")
    return "".join(out)
