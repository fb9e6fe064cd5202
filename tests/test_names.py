"""Naming bounds: 15-character interface names with a deterministic fallback, chains, ipsets, aliases."""

from __future__ import annotations

import pytest

from netfw.model import names
from netfw.errors import InputError


@pytest.mark.parametrize("vm, nic, bridge, host, fw", [
    (7, 0, "one-br-7-0", "one-7-0-h", "one-7-0-f"),
    (12345, 12, "one-br-12345-12", "one-12345-12-h", "one-12345-12-f"),  # 15: still readable
    (123456, 12, "nfbr", "one-123456-12-h", "one-123456-12-f"),
    (4294967295, 999, "nfbr", "nfh", "nff"),
    (9999999999, 999, "nfbr", "nfh", "nff"),
])
def test_interface_names_fit_in_15_characters(vm, nic, bridge, host, fw):
    got = names.bridge(vm, nic), names.veth_host(vm, nic), names.veth_fw(vm, nic)
    for name, want in zip(got, (bridge, host, fw)):
        assert len(name) <= 15
        assert name == want or (len(want) < 6 and name.startswith(want) and len(name) == 15)


def test_fallback_names_are_deterministic_and_distinct():
    a = [names.bridge(4294967295, n) for n in range(1000)]
    assert a == [names.bridge(4294967295, n) for n in range(1000)]  # recomputed without state
    assert len(set(a)) == 1000
    assert names.bridge(9999999999, 1) != names.veth_host(9999999999, 1) != names.veth_fw(9999999999, 1)


def test_chains_and_ipsets_fit_their_limits_at_the_largest_ids():
    assert len(names.chain(9999999999, 999, "o")) <= names.CHAIN_MAX
    longest = names.ipset(9999999999, 999, "i", 9999, 6, temporary=True)
    assert len(longest) <= names.IPSET_MAX
    assert names.ipset(1, 0, "i", 1, 4) == "one-1-0-i1-4"
    assert names.ipset(1, 0, "i", 1, 4, temporary=True) == "one-1-0-i1-4t"
    assert len(names.ipset(9999999999, 999, "i", 10**12, 6)) <= names.IPSET_MAX


@pytest.mark.parametrize("vm, nic", [(-1, 0), (0, -1), (10**10, 0), (0, 1000)])
def test_ids_out_of_range_are_input_errors(vm, nic):
    with pytest.raises(InputError):
        names.bridge(vm, nic)


# "eth0\n": `re.match` with `$` accepted a trailing newline, which would end an `ip -batch` line (finding 1).
@pytest.mark.parametrize("name", ["", "a/b", "a b", "x" * 16, "tap:1", ".", "..", "a\tb", "eth0\n", "eth0\r", None])
def test_bad_interface_names(name):
    with pytest.raises(InputError):
        names.check_ifname(name)


def test_alias_round_trip():
    assert names.parse_alias(names.alias(7, 3, names.BRIDGE)) == (7, 3, "br")
    assert names.parse_alias("something else") is None
    assert names.parse_alias(None) is None
