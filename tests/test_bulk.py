"""netfw.kernel.bulk (issue 22): many namespaces' reads through one process, kept as the Results of the very
commands the probes run, or not kept at all (the command layer faked: tests/fake.py; the real script against the
real tools: tests/integration/test_bulk.py)."""

from __future__ import annotations

import pytest

from netfw import runner
from netfw.kernel import bulk, cache, probe
from netfw.observe import counters, health, metrics, status

from .fake import FakeHost
from .test_cache import host, reads_of  # noqa: F401 (a fixture)

LINKS = ("ip", "-j", "-d", "link", "show")
NONCE = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("tail", [
    LINKS, ("iptables-save", "-c"), ("ip6tables-legacy-save", "-c"), ("ebtables-save", "-c"),
    ("bridge", "-j", "fdb", "show", "br", "one-br-7-0", "brport", "one-7-0"),
    ("sysctl", "-e", "net.ipv6.conf.all.disable_ipv6", "net.bridge.bridge-nf-call-iptables"),
    ("sysctl", "-n", "net.netfilter.nf_conntrack_count")])
def test_a_command_the_loop_runs_is_one_word_and_back(tail):
    word = bulk.token(tail)
    assert word and "," not in word and bulk.untoken(word) == tail


@pytest.mark.parametrize("tail", [
    ("ip", "link", "show"), ("ip", "-j", "-d", "link", "show", "dev", "x"), ("iptables-save",),
    ("iptables-restore", "-c"), ("sh", "-c"), ("rm", "-c"),
    ("bridge", "-j", "fdb", "show", "br", "a,b", "brport", "p"),
    ("bridge", "-j", "fdb", "show", "br", "a:b", "brport", "p"),
    ("bridge", "-j", "fdb", "show", "br", "a", "brport", "p\nq"),
    ("bridge", "-j", "fdb", "show", "br", "a", "brport", "$(reboot)"),
    ("sysctl", "-e", "net.ipv4.ip_forward\n"), ("sysctl", "-e", "../../x"), ("sysctl", "-w", "net.a.b=1"),
    ("sysctl", "-n", "net.a.b", "net.a.c"), ("sysctl", "-e")])
def test_any_other_command_or_word_is_never_sent(tail):
    assert bulk.token(tail) is None


def frame(ns: str, answers: list[tuple[int, str, str]], left: tuple[int, str] = (0, "")) -> str:
    out = f"\n{NONCE} ns {ns}\n"
    for i, (code, stdout, stderr) in enumerate(answers):
        out += f"\n{NONCE} out {i}\n{stdout}\n{NONCE} rc {i} {code}\n{stderr}\n{NONCE} end\n"
    return out + f"\n{NONCE} left {left[0]}\n{left[1]}\n{NONCE} done\n"


def test_parse_keeps_each_answer_as_the_result_of_its_own_command():
    jobs = [("one-7", [LINKS, ("iptables-save", "-c")])]
    text = frame("one-7", [(0, "[]\n", ""), (4, "", "iptables-save v1.8.9: oops")])
    [(ns, _, found)] = list(bulk.parse(text, NONCE, jobs))
    prefix = ("nsenter", "--net=/run/netns/one-7")
    assert ns == "one-7" and found == {
        prefix + LINKS: runner.Result(prefix + LINKS, 0, "[]\n", ""),
        prefix + ("iptables-save", "-c"): runner.Result(prefix + ("iptables-save", "-c"), 4, "",
                                                        "iptables-save v1.8.9: oops")}


def test_parse_gives_nsenter_s_failure_to_every_command_of_the_namespace():
    jobs = [("one-9", [LINKS, ("iptables-save", "-c")])]
    why = "nsenter: cannot open /run/netns/one-9: No such file or directory"
    [(_, _, found)] = list(bulk.parse(frame("one-9", [], (1, why)), NONCE, jobs))
    assert {r.code for r in found.values()} == {1} and {r.stderr for r in found.values()} == {why}
    error = runner.CommandError(found[("nsenter", "--net=/run/netns/one-9") + LINKS])
    assert probe.gone(error, ns="one-9")  # read as the namespace gone, exactly as the command alone


def test_parse_keeps_nothing_that_did_not_come_back_whole():
    jobs = [("one-7", [LINKS, ("iptables-save", "-c")]), ("one-8", [LINKS])]
    whole = frame("one-7", [(0, "[]\n", ""), (0, "*filter\n", "")]) + frame("one-8", [(0, "[]\n", "")])
    cut = whole[:whole.index(f"{NONCE} rc 1")]  # the process killed while one-7's save was printed
    found = {ns: results for ns, _, results in bulk.parse(cut, NONCE, jobs)}
    assert list(found) == [] or all(len(r) <= 1 for r in found.values())
    assert "one-8" not in found
    forged = whole.replace(NONCE, "f" * 32, 1)  # a frame without the nonce is not a frame
    assert [ns for ns, _, _ in bulk.parse(forged, NONCE, jobs)] == ["one-8"]


def test_outside_reads_nothing_is_read_ahead(host):  # noqa: F811
    assert bulk.prefetch([probe.ip("one-6", *LINKS[1:]), probe.in_netns("one-6", "iptables-save", "-c")]) == 0
    assert host.calls == [] and host.bulks == []


def test_a_command_read_ahead_is_taken_once(host):  # noqa: F811
    argv = probe.in_netns("one-6", "iptables-save", "-c")
    with cache.reads():
        assert bulk.prefetch([argv, probe.ip("one-6", *LINKS[1:])]) == 2
        cache.read(argv)
        assert len(host.bulks) == 1 and len(host.calls) == 2
        cache.read(argv)  # taken: read again, alone
        assert host.calls[-1] == (argv, None) and len(host.calls) == 3


def test_a_failed_loop_keeps_nothing_and_every_probe_reads_alone(host):  # noqa: F811
    host.fail = "set -f"  # the loop's own process fails
    found = {(h.vm, h.nic): h.health for h in health.survey(host.tmp)}
    assert found == {(6, 0): "drift", (7, 0): "drift"}
    assert sorted(argv for argv, _ in host.calls) == sorted([["ip", *LINKS[1:]], *reads_of(6), *reads_of(7)])


def test_status_asks_every_namespace_in_one_process(host):  # noqa: F811
    health.survey(host.tmp)
    assert len(host.bulks) == 1 and host.bulks[0][7::2] == ["one-6", "one-7"]
    direct = [argv for argv, _ in host.calls if argv[0] != "nsenter"]
    assert direct == [["ip", *LINKS[1:]]]  # the hypervisor's links: read as before


def test_metrics_and_status_vm_read_the_conntrack_count_ahead_too(host):  # noqa: F811
    metrics.collect(host.tmp)
    assert len(host.bulks) == 1 and all("sysctl-n:net.netfilter.nf_conntrack_count" in spec
                                        for spec in host.bulks[0][8::2])
    host.bulks.clear()
    status.vm_status(7, None, host.tmp)
    assert len(host.bulks) == 1 and host.bulks[0][7] == "one-7"
    assert counters.conntrack_count_argv("one-7") in [argv for argv, _ in host.calls]


def test_gc_s_first_look_reads_only_links_ahead(host):  # noqa: F811
    health.survey(host.tmp, verify=False)
    assert len(host.bulks) == 1 and host.bulks[0][8::2] == ["links", "links"]


def test_hostile_namespace_names_are_never_sent(mocker):
    fake = FakeHost(mocker, netns={"one-6"})
    with cache.reads():
        argvs = [["nsenter", "--net=/run/netns/one-6;reboot", *LINKS], ["nsenter", "--net=/run/netns/x", *LINKS],
                 ["nsenter", "--net=/etc/one-6", *LINKS]]
        assert bulk.prefetch(argvs) == 0
    assert fake.bulks == []
