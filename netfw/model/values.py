"""The one validator of each kind of value that reaches a restore file or an `ip -batch` script. Pure.

Every entry point (CLI flags, rules files, VM documents, state records) goes through these, by way of the model
(model.NicSpec and model.Rule validate themselves), so that one check decides what an address or a MAC is.
Each raises ValueError with a one-line message that shows the value with repr(), so that a line break in it is
printed as `\\n` and never starts a line of its own.
"""

from __future__ import annotations

import functools
import ipaddress
import re

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: A MAC as users write it: six bytes of one or two hex digits, separated by ':' or '-'.
_MAC_RE = re.compile(r"[0-9A-Fa-f]{1,2}([:-])[0-9A-Fa-f]{1,2}(\1[0-9A-Fa-f]{1,2}){4}")
#: What an address may be made of before ipaddress sees it: no zone ('%'), no whitespace or control characters.
_ADDRESS_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}")


def address(text: object) -> Address:
    """An IPv4 or IPv6 address, without a zone or scope id (`fe80::1%eth0`), else ValueError.

    ipaddress accepts anything after '%' as an IPv6 scope id, line breaks included: a scope id would carry a value
    onto a line of its own in a restore file, so the text is checked character by character first.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address (not a string)")
    return _address(text)


@functools.lru_cache(maxsize=4096)  # the same peers come back in every NIC of a security group (records, renders)
def _address(text: str) -> Address:
    if "%" in text:
        raise ValueError(f"{text!r} has a zone; give the plain address")
    if not _ADDRESS_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def canonical_address(text: object) -> str:
    """The address in its canonical text form (`2001:DB8:0::1` → `2001:db8::1`), else ValueError."""
    return str(address(text))


def mac(text: object) -> str:
    """A MAC in the form the save tools print (lower case, two digits a byte, ':'), else ValueError."""
    if not isinstance(text, str) or not _MAC_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a MAC address")
    return ":".join(f"{int(part, 16):02x}" for part in re.split("[:-]", text))


def block_count(first: Address, size: int) -> int:
    """How many CIDR blocks the minimal cover of `size` addresses from `first` has, without building them.

    The cover of [a, c) splits at m, c with its bits below k cleared, where k is the highest bit in which a and c
    differ: going up from a, each block is the lowest set bit of what is left up to m, so [a, m) takes one block per
    set bit of m - a; from m on, each block is the largest power of two that still fits, one per set bit of c - m.
    O(1), so a cap can be checked before anything is expanded (summarize_address_range gives the same blocks).
    """
    if size <= 0:
        return 0
    a = int(first)
    c = a + size
    m = c >> ((a ^ c).bit_length() - 1) << ((a ^ c).bit_length() - 1)
    return (m - a).bit_count() + (c - m).bit_count()
