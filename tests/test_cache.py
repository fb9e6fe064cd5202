"""netfw.kernel.cache (issue 22): within cache.reads(), status, metrics and gc read each namespace once, whatever the number
of checks that need it, and a failed read stays the fault of the VM whose namespace it is (the command layer faked:
tests/fake.py)."""

from __future__ import annotations

import pytest

from netfw import api, runner
from netfw.kernel import cache, probe
from netfw.observe import health, metrics, owned

from .fake import FakeHost, link
from .test_faults_per_nic import attached_links, merge, record
from netfw.kernel.port import LINUX, Port


@pytest.fixture
def host(mocker, tmp_path):
    """VMs 6 and 7, NIC 0 each, attached on the Linux bridge vnbr0 (the fake kernel holds no rules: drift)."""
    mocker.patch.object(api, "check_host")
    mocker.patch.object(owned, "namespaces", return_value=[6, 7])
    links = merge({None: {"vnbr0": link("vnbr0", "bridge")}}, attached_links(6, 0, "vnbr0"),
                  attached_links(7, 0, "vnbr0"))
    fake = FakeHost(mocker, links=links, netns={"one-6", "one-7"})
    for vm in (6, 7):
        record(tmp_path, vm, 0, Port(LINUX, "vnbr0", "02:00:00:00:00:01"))
    fake.tmp = tmp_path  # the state directory
    return fake


def reads_of(vm: int) -> list[list[str]]:
    """What status reads of VM vm's namespace: its links, sysctls, one counted save per family, the FDB entry."""
    ns = ["nsenter", f"--net=/run/netns/one-{vm}"]
    return [[*ns, "ip", "-j", "-d", "link", "show"],
            [*ns, "sysctl", "-e", "net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6",
             "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
             "net.bridge.bridge-nf-filter-vlan-tagged", "net.bridge.bridge-nf-filter-pppoe-tagged"],
            [*ns, "iptables-save", "-c"], [*ns, "ip6tables-save", "-c"], [*ns, "ebtables-save", "-c"],
            [*ns, "bridge", "-j", "fdb", "show", "br", f"one-br-{vm}-0", "brport", f"one-{vm}-0"]]


def test_status_reads_the_hypervisor_once_and_each_namespace_once(host, tmp_path):
    found = {(h.vm, h.nic): h.health for h in health.survey(tmp_path)}
    assert found == {(6, 0): "drift", (7, 0): "drift"}
    calls = [argv for argv, _ in host.calls]
    assert sorted(calls) == sorted([["ip", "-j", "-d", "link", "show"], *reads_of(6), *reads_of(7)])


def test_metrics_counts_from_the_saves_verify_read(host, tmp_path):
    text, errors = metrics.collect(tmp_path)
    assert errors == [] and 'netfw_nic_health{vm="7",nic="0",health="drift"} 1' in text
    calls = [argv for argv, _ in host.calls]
    count = lambda vm: ["nsenter", f"--net=/run/netns/one-{vm}", "sysctl", "-n",  # noqa: E731
                        "net.netfilter.nf_conntrack_count"]
    assert sorted(calls) == sorted([["ip", "-j", "-d", "link", "show"], *reads_of(6), *reads_of(7), count(6),
                                    count(7)])


def test_a_failed_read_is_read_once_and_stays_that_vm_s_error(host, tmp_path):
    host.fail = "nsenter --net=/run/netns/one-7 ip6tables-save -c"
    text, errors = metrics.collect(tmp_path)
    assert len(errors) == 1 and errors[0].startswith("VM 7 NIC 0: could not check it: ") and "injected" in errors[0]
    assert 'netfw_nic_health{vm="7",nic="0",health="error"} 1' in text
    assert 'netfw_nic_health{vm="6",nic="0",health="drift"} 1' in text  # VM 6 read and counted as usual
    assert 'netfw_packets_total{vm="6",nic="0",direction="inbound",verdict="accepted"} 0' in text
    assert sum(" ".join(argv) == host.fail for argv, _ in host.calls) == 1


@pytest.mark.parametrize("survey", [
    lambda d: health.survey(d),  # every VM verified as its namespace is read (health._as_read)
    lambda d: health.survey(d, 7),  # the status of one VM
    lambda d: health.survey(d, verify=False),  # gc's first look
], ids=["status", "status VM", "gc's look"])
def test_a_failed_read_of_the_hypervisor_s_links_fails_the_survey(host, tmp_path, survey):
    """The hypervisor's links are read beside the VM namespaces (owned.beside_host): their failure is never read as
    "no link of netfw's there" (every NIC stale, or an orphan for gc), it fails the survey, whatever the path."""
    plain = runner._execute.side_effect

    def failing(argv, stdin, timeout):
        if list(argv) == ["ip", "-j", "-d", "link", "show"]:
            return runner.Result(tuple(argv), 1, "", "injected failure")
        return plain(argv, stdin, timeout)

    runner._execute.side_effect = failing
    with pytest.raises(runner.CommandError, match="injected failure"):
        survey(tmp_path)


def test_a_namespace_read_that_failed_raises_again_at_every_use(host):
    host.fail = "nsenter --net=/run/netns/one-7 ip -j -d link show"
    with cache.reads():
        for _ in range(2):
            with pytest.raises(runner.CommandError, match="injected failure"):
                probe.links("one-7", ["one-7-0"])
        assert probe.links("one-6", ["one-6-0", "nothing"]) == {"one-6-0": host.links["one-6"]["one-6-0"]}
    assert len(host.calls) == 2  # one read per namespace


def test_outside_reads_every_probe_runs_as_it_always_did(host):
    probe.links("one-6", ["one-6-0"])
    probe.save("one-6", "ip", "filter")
    assert [argv for argv, _ in host.calls] == [
        ["nsenter", "--net=/run/netns/one-6", "ip", "-j", "-d", "-force", "-batch", "-"],
        ["nsenter", "--net=/run/netns/one-6", "iptables-save", "-t", "filter"]]


def test_uncounted_takes_the_rule_counters_off_as_a_save_without_c_prints_it():
    counted = "*filter\n:FORWARD DROP [7:420]\n[3:180] -A FORWARD -j one-7-0-i\n[0:0] -A one-7-0-i -j DROP\nCOMMIT\n"
    assert cache.uncounted(counted) == "*filter\n:FORWARD DROP [7:420]\n-A FORWARD -j one-7-0-i\n-A one-7-0-i -j DROP\n" \
                                       "COMMIT\n"


def test_each_keeps_the_order_and_raises_what_work_raises():
    assert cache.each(range(20), lambda x: x * x, workers=4) == [x * x for x in range(20)]
    with pytest.raises(ZeroDivisionError):
        cache.each([1, 0, 2], lambda x: 1 / x, workers=3)
