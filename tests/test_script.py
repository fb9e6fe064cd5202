"""netfw.rules.script: every line-oriented standard input (*-restore, ipset restore, ip -batch) is composed by one helper
that refuses a line break inside a line, so that a value a validator missed fails closed instead of becoming a
command of its own. Each composer of the code is checked with a value that slipped past validation."""

from __future__ import annotations

import pytest

from netfw.rules import script, tables
from netfw.model.spec import InputError
from netfw.rules.chains import FamilyRules, IpsetSpec
from netfw.rules.render import ipset_restore_text, restore_text
from netfw.kernel.port import LINUX, Port
from netfw.steps import CutOver
from netfw.steps.base import run_batch
from netfw.steps.ipsets import _destroy_text

from .fake import FakeHost, link

SMUGGLED = "10.0.0.1/32 -j ACCEPT\n-I FORWARD 1 -j ACCEPT"


def test_join_ends_every_line():
    assert script.join(["*filter", "COMMIT"]) == "*filter\nCOMMIT\n"
    assert script.join([]) == ""


@pytest.mark.parametrize("line", ["a\nb", "a\rb", "a\0b", "a\n", "\r"])
def test_join_refuses_a_line_break_or_nul_inside_a_line(line):
    with pytest.raises(InputError, match="refusing a script line with a line break or NUL inside"):
        script.join(["*filter", line, "COMMIT"])


def test_restore_composers_refuse_a_smuggled_line():
    rules = FamilyRules("ip6", {"one-7-0-s": (f"-A one-7-0-s -s {SMUGGLED} -j RETURN",)}, ())
    with pytest.raises(InputError):
        restore_text(rules)
    with pytest.raises(InputError):
        tables.restore_text("ip6", [f"-A one-7-0-s -s {SMUGGLED}"])
    with pytest.raises(InputError):
        ipset_restore_text([IpsetSpec("one-7-0-i1-4", "inet", ("10.0.0.0/24\nflush x",), "one-7-0-i1-4t")])
    with pytest.raises(InputError):
        _destroy_text(["one-7-0-i1-4\ndestroy"])


def test_batch_composers_refuse_a_smuggled_line(mocker):
    fake = FakeHost(mocker)
    with pytest.raises(InputError):
        run_batch(["ip"], ["link set one-7-0 up\nlink del eth0"])
    with pytest.raises(InputError):  # a port naming a bad bridge is refused where it is made
        Port(LINUX, "vnbr0 up\nlink set eth0 netns one-7", None)
    assert fake.calls == []  # nothing ran


def test_a_cut_over_around_a_smuggled_name_runs_no_script(mocker):
    """The last line of defence: a value no validator saw (forced in here) is refused by the composer."""
    veth = link("one-7-0-h", "veth", ifalias="netfw vm=7 nic=0 role=h")
    fake = FakeHost(mocker, links={None: {"one-7-0": link("one-7-0", "veth", master="vnbr0"), "one-7-0-h": veth}})
    port = Port(LINUX, "vnbr0", None)
    object.__setattr__(port, "bridge", "vnbr0 up\nlink set eth0 netns one-7")
    with pytest.raises(InputError):
        CutOver(7, 0, "one-7-0", port).apply()
    assert all("-j" in argv for argv, _ in fake.calls)  # only the read-only probes ran
