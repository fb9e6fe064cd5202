"""gc's bulk teardown (netfw/observe/gc_bulk.py, issue 22), the command layer faked: the namespaces of the VMs whose
every tap is gone are deleted in one `ip -force -batch -`, nothing written before it, their records removed once their
veth ends are read gone; every other VM, and a VM the batch did not finish, is detached NIC by NIC."""

from __future__ import annotations

import pytest

from netfw import api, runner
from netfw.kernel.port import LINUX, Port
from netfw.observe import gc

from .fake import FakeHost, link
from .test_faults_per_nic import _ours, attached_links, merge, record


def tap_gone(vm: int, nic: int) -> dict:
    """A NIC whose VM ended without clean: QEMU's exit took the tap; netfw's objects are left."""
    links = attached_links(vm, nic, "vnbr0")
    del links[f"one-{vm}"][f"one-{vm}-{nic}"]
    return links


@pytest.fixture
def host(mocker, tmp_path):
    """VM 7 (NICs 0 and 1) and VM 8: taps gone; VM 6: tap gone, and its namespace holds a link netfw did not make."""
    mocker.patch.object(api, "check_host")
    links = merge({None: {"vnbr0": link("vnbr0", "bridge")}}, tap_gone(7, 0), tap_gone(7, 1), tap_gone(8, 0),
                  tap_gone(6, 0), {"one-6": {"x6": link("x6", "veth")}})
    fake = FakeHost(mocker, links=links, netns={"one-6", "one-7", "one-8"})
    for vm, nic in ((6, 0), (7, 0), (7, 1), (8, 0)):
        record(tmp_path, vm, nic, Port(LINUX, "vnbr0", "02:00:00:00:00:01"))
    return fake


def applying(fake: FakeHost, fail: bool = False):
    """Let the fake carry out the `link del` and `netns del` lines of `ip -force -batch -` as the kernel does (a
    namespace deleted takes its veth pairs, the hypervisor's ends too), or fail the first such batch, the bulk one,
    doing nothing."""
    plain = fake._execute
    failing = [fail]

    def execute(argv, stdin, timeout):
        if list(argv) == ["ip", "-force", "-batch", "-"] and "netns del" in (stdin or ""):
            fake.calls.append((list(argv), stdin))
            if failing.pop() if failing else False:
                return runner.Result(tuple(argv), 1, "", "injected failure\nCommand failed -:1")
            for words in (line.split() for line in stdin.splitlines()):
                if words[:2] == ["link", "del"]:
                    fake.links[None].pop(words[2], None)
                elif words[:2] == ["netns", "del"]:
                    fake.netns.discard(words[2])
                    inside = fake.links.pop(words[2], {})
                    vm = words[2].split("-")[1]
                    for name in [n for n, l in fake.links[None].items() if f"{n}-f" in inside
                                 and l.get("ifalias", "").startswith(f"netfw vm={vm} ")]:
                        del fake.links[None][name]
            return runner.Result(tuple(argv), 0, "", "")
        return plain(argv, stdin, timeout)

    runner._execute.side_effect = execute


def changes(fake: FakeHost) -> list[tuple[list[str], str | None]]:
    return [(argv, stdin) for argv, stdin in fake.calls if "-j" not in argv and argv[:1] != ["sh"]]


def test_the_namespaces_of_vms_whose_taps_are_gone_go_in_one_batch(host, tmp_path):
    files = []
    applying(host)
    plain = runner._execute.side_effect

    def spy(argv, stdin, timeout):
        if list(argv) == ["ip", "-force", "-batch", "-"] and "netns del one-7" in (stdin or ""):
            files.extend(sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")))
        return plain(argv, stdin, timeout)

    runner._execute.side_effect = spy
    items = gc.collect(tmp_path)
    assert [(i.vm, i.nic, i.health, i.error) for i in items] == [
        (6, 0, "tap gone", None), (7, 0, "tap gone", None), (7, 1, "tap gone", None), (8, 0, "tap gone", None)]
    bulk = [(argv, stdin) for argv, stdin in changes(host) if stdin and "netns del one-7" in stdin]
    assert bulk == [(["ip", "-force", "-batch", "-"], "netns del one-7\nnetns del one-8\n")]
    assert "vm-7/nic-0.json" in files and not [f for f in files if "intent" in f]  # nothing written before it
    assert not any("one-7" in " ".join(argv) + (stdin or "") or "one-8" in " ".join(argv) + (stdin or "")
                   for argv, stdin in changes(host) if (argv, stdin) not in bulk)  # nothing else of VMs 7 and 8
    assert any("one-6" in " ".join(argv) for argv, _ in changes(host))  # VM 6: its own detach
    assert "one-6" in host.netns and "x6" in host.links["one-6"]  # a link netfw did not make keeps its namespace
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")) == []
    assert items[1].done == ["namespace one-7 with the NIC's bridge and veth pair", "veth end one-7-0 on vnbr0",
                             f"state record {tmp_path}/vm-7/nic-0.json"]
    assert not [n for n in host.links[None] if n.startswith(("one-7-", "one-8-"))]


def test_a_batch_that_failed_leaves_each_nic_to_its_own_detach(host, tmp_path):
    applying(host, fail=True)
    items = gc.collect(tmp_path)
    assert [(i.vm, i.nic, i.error) for i in items] == [(6, 0, None), (7, 0, None), (7, 1, None), (8, 0, None)]
    lines = [" ".join(argv) + "\n" + (stdin or "") for argv, stdin in changes(host)]
    bulk = next(i for i, line in enumerate(lines) if "netns del one-7\nnetns del one-8" in line)
    after = "".join(lines[bulk + 1:])  # each veth end deleted under its staging name, by its own NIC's detach
    assert all(f"link del {end}" in after for end in ("one-7-0-h", "one-7-1-h", "one-8-0-h"))
    assert "netns del one-8" in after and sorted(tmp_path.rglob("*.json")) == []


def test_a_dry_run_lists_each_detach_and_changes_nothing(host, tmp_path):
    applying(host)
    items = gc.collect(tmp_path, dry_run=True)
    assert [(i.vm, i.nic) for i in items] == [(6, 0), (7, 0), (7, 1), (8, 0)] and all(i.done for i in items)
    assert not any("netns del one-7\nnetns del one-8" in (stdin or "") for _, stdin in host.calls)
    assert len(list(tmp_path.rglob("nic-*.json"))) == 4 and host.netns == {"one-6", "one-7", "one-8"}


def test_a_journal_keeps_its_vm_out_of_the_batch(host, tmp_path):
    """An interrupted run of VM 8: its own detach resumes it."""
    from netfw import state
    from netfw.model.spec import NicSpec

    applied = state.Applied(NicSpec(8, 0, "vnbr0"), 1500, 0, "auto", Port(LINUX, "vnbr0", "02:00:00:00:00:01"))
    with state.opened(tmp_path) as records:
        records.write(8, 0, state.document(applied, "detach"), intent=True)
    applying(host)
    gc.collect(tmp_path)
    bulk = [stdin for argv, stdin in changes(host) if stdin and "netns del one-7\n" in stdin]
    assert bulk == ["netns del one-7\n"]
    assert host.netns == {"one-6"}


@pytest.mark.parametrize("stderr, survives", [
    ("RTNETLINK answers: No such device\nCannot send link get request: No such device\nCommand failed -:1\n", True),
    ("RTNETLINK answers: Operation not permitted\n", False),
])
def test_a_veth_end_vanishing_while_it_is_read_is_read_again_and_nothing_else_is(host, tmp_path, stderr, survives):
    """The kernel destroys a deleted namespace's veth ends while gc reads them by name: ip then fails with "No such
    device" (the link went between its lookup and its request). That is read again, never read as absent; any other
    failure fails gc, the records kept."""
    applying(host)
    plain, failed = runner._execute.side_effect, []

    def racing(argv, stdin, timeout):
        bulk_done = any("netns del one-7" in (s or "") for _, s in host.calls)
        if bulk_done and not failed and argv[:5] == ["ip", "-j", "-d", "-force", "-batch"]:
            failed.append(list(argv))
            return runner.Result(tuple(argv), 1, "", stderr)
        return plain(argv, stdin, timeout)

    runner._execute.side_effect = racing
    if survives:
        assert [(i.vm, i.nic, i.error) for i in gc.collect(tmp_path)][1:] == [(7, 0, None), (7, 1, None), (8, 0, None)]
        assert not list(tmp_path.rglob("vm-[78]/*.json"))
    else:
        with pytest.raises(runner.CommandError, match="Operation not permitted"):
            gc.collect(tmp_path)
        assert len(list(tmp_path.rglob("vm-[78]/*.json"))) == 3
    assert failed
