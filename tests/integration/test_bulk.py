"""netfw.kernel.bulk with the real shell and tools (issue 22): what the loop reads of many namespaces in one process
is, command by command, what each command says when run alone: the same exit code, output and error, for a
namespace that is there, one that is not, a sysctl key that does not exist, an FDB port that does not exist."""

from __future__ import annotations

from netfw import runner
from netfw.kernel import bulk, cache, probe
from netfw.observe import counters
from netfw.steps.netns import SYSCTLS

from .lab import sh


def commands(ns: str) -> list[list[str]]:
    return [probe.ip(ns, "-j", "-d", "link", "show"), probe.in_netns(ns, "iptables-save", "-c"),
            probe.in_netns(ns, "ip6tables-save", "-c"), probe.in_netns(ns, "ebtables-save", "-c"),
            probe.in_netns(ns, "iptables-legacy-save", "-c"),
            probe.sysctls_argv(ns, [*SYSCTLS, "net.ipv4.no_such_key"]), probe.sysctls_argv(ns, ["net.no.such"]),
            probe.fdb_argv(ns, "one-br-7-0", "one-7-0"), probe.fdb_argv(ns, "one-br-7-0", "nothing"),
            counters.conntrack_count_argv(ns)]


def alone(argv: list[str]) -> tuple[int, str, str]:
    res = runner._execute(argv, None, None)
    return res.code, res.stdout, res.stderr.rstrip("\n")  # the loop's $(...) drops stderr's last line break


def test_what_the_loop_reads_is_what_each_command_says_alone(lab):
    for ns in ("one-7", "one-8"):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "add", "one-br-7-0", "type", "bridge")
        sh("ip", "-n", ns, "link", "add", "one-7-0", "type", "veth", "peer", "name", "x0")
        sh("ip", "-n", ns, "link", "set", "one-7-0", "master", "one-br-7-0")
        sh("ip", "-n", ns, "link", "set", "one-7-0", "up")
        sh("nsenter", f"--net=/run/netns/{ns}", "iptables-restore", stdin="*filter\n:FORWARD DROP [0:0]\n"
           "-A FORWARD -m comment --comment x -j ACCEPT\nCOMMIT\n")
    sh("nsenter", "--net=/run/netns/one-8", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    asked = [argv for ns in ("one-7", "one-8", "one-9") for argv in commands(ns)]  # one-9 does not exist
    with cache.reads() as reads:
        assert bulk.prefetch(asked, chunk=2) == len(asked)  # two processes: one-7 and one-8, then one-9
        for argv in asked:
            kept = reads.outputs[cache.namespace_of(argv)][tuple(argv)]
            assert (kept.code, kept.stdout, kept.stderr) == alone(argv), argv
    assert {cache.namespace_of(a): alone(a)[0] for a in asked if a[2] == "iptables-save"} == {
        "one-7": 0, "one-8": 0, "one-9": 1}  # not a comparison of empty answers
    assert "net.ipv6.conf.all.disable_ipv6 = 1" in alone(probe.sysctls_argv("one-8", list(SYSCTLS)))[1]
