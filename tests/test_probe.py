"""netfw.kernel.probe's "does not exist" classification (fail closed): gone() accepts the exact messages of iproute2 and
nsenter about the object asked for and nothing else, and links() reads only those as absent.

The messages are the tools' own, as printed on this machine (iproute2 6.1, util-linux 2.38) in the sandbox:
`ip link show dev X` exits 1 with `Device "X" does not exist.`, `ip link set/del X` and `tc ... dev X` exit 1 with
`Cannot find device "X"`, `ip -n NS ...` exits 255 with `Cannot open network namespace "NS": No such file or
directory` (netfw enters a namespace with nsenter, probe.iproute), `ip netns del NS` exits 1 with `Cannot remove namespace file "/run/netns/NS": No such file or directory`,
`nsenter --net=/run/netns/NS` exits 1 with `nsenter: cannot open /run/netns/NS: No such file or directory`, and
`ip -batch` follows a failed line N with `Command failed -:N`.
"""

from __future__ import annotations

import json

import pytest

from netfw.kernel import probe
from netfw import runner

DEV, OTHER, NS = "one-7-0", "one-7-1", "one-7"

SHOW_GONE = f'Device "{DEV}" does not exist.'
FIND_GONE = f'Cannot find device "{DEV}"'
NS_GONE = f'Cannot open network namespace "{NS}": No such file or directory'
NS_DEL_GONE = f'Cannot remove namespace file "/run/netns/{NS}": No such file or directory'
NSENTER_GONE = f"nsenter: cannot open /run/netns/{NS}: No such file or directory"


def error(stderr: str, code: int = 1, stdout: str = "", argv=("ip", "link")) -> runner.CommandError:
    return runner.CommandError(runner.Result(argv, code, stdout, stderr))


# --- gone(): every exact message it accepts, about the object asked for -----------------------------------------------

ACCEPTED = {
    "ip link show": (SHOW_GONE + "\n", [DEV], None),
    "ip link show in a batch, with its Command failed line": (f"{SHOW_GONE}\nCommand failed -:2\n", [DEV], None),
    "ip link set/del, tc": (FIND_GONE + "\n", [DEV], None),
    "ip link del in a batch": (f"{FIND_GONE}\nCommand failed -:1\n", [DEV], None),
    "two devices asked, both gone": (f"{SHOW_GONE}\nCommand failed -:1\nDevice \"{OTHER}\" does not exist.\n"
                                     "Command failed -:3\n", [DEV, OTHER], None),
    "one of two devices asked gone": (SHOW_GONE + "\n", [OTHER, DEV], None),
    "ip -n NS": (NS_GONE + "\n", [], NS),
    "ip -n NS -batch (Command failed after it)": (f"{NS_GONE}\nCommand failed -:1\n", [], NS),
    "ip netns del": (NS_DEL_GONE + "\n", [], NS),
    "ip -batch link del and netns del": (f"{FIND_GONE}\nCommand failed -:1\n{NS_DEL_GONE}\nCommand failed -:2\n",
                                         [DEV], NS),
    "nsenter": (NSENTER_GONE + "\n", [], NS),
    "a device and its namespace both asked, the namespace gone": (NS_GONE + "\n", [DEV], NS),
    "surrounding blank lines and spaces": (f"\n  {SHOW_GONE}  \n\n", [DEV], None),
    "a tuple of devices": (SHOW_GONE, (DEV,), None),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_gone_accepts_the_exact_message_about_the_object_asked_for(case):
    stderr, devices, ns = ACCEPTED[case]
    assert probe.gone(error(stderr), devices, ns) is True


# --- gone(): everything else is a failure to see ----------------------------------------------------------------------

REFUSED = {
    # another object than the one asked about
    "another device (show)": (f'Device "{OTHER}" does not exist.', [DEV], None),
    "another device (find)": (f'Cannot find device "{OTHER}"', [DEV], None),
    "a device whose name starts like the one asked": (f'Device "{DEV}0" does not exist.', [DEV], None),
    "a device that is a prefix of the one asked": (f'Cannot find device "{DEV[:-1]}"', [DEV], None),
    "a device when no device was asked": (SHOW_GONE, [], NS),
    "one device of two gone, the other not asked": (f"{SHOW_GONE}\nCommand failed -:1\nDevice \"{OTHER}\" does not "
                                                    "exist.\nCommand failed -:2", [DEV], None),
    "another namespace (ip -n)": ('Cannot open network namespace "one-8": No such file or directory', [], NS),
    "another namespace (netns del)": ('Cannot remove namespace file "/run/netns/one-8": No such file or directory',
                                      [], NS),
    "another namespace (nsenter)": ("nsenter: cannot open /run/netns/one-8: No such file or directory", [], NS),
    "a namespace when none was asked": (NS_GONE, [DEV], None),
    "a namespace file outside /run/netns": (f'Cannot remove namespace file "/tmp/{NS}": No such file or directory',
                                            [], NS),
    "nsenter on a path outside /run/netns": (f"nsenter: cannot open /tmp/{NS}: No such file or directory", [], NS),
    # the right object, but another error
    "namespace not opened for another reason": (f'Cannot open network namespace "{NS}": Permission denied', [], NS),
    "nsenter: permission denied": (f"nsenter: cannot open /run/netns/{NS}: Permission denied", [], NS),
    "netns del: device busy": (f'Cannot remove namespace file "/run/netns/{NS}": Device or resource busy', [], NS),
    # an extra line of any other error
    "extra line: permission denied": (f"{SHOW_GONE}\nPermission denied", [DEV], None),
    "extra line: RTNETLINK Operation not permitted": (f"{FIND_GONE}\nCommand failed -:1\nRTNETLINK answers: Operation "
                                                      "not permitted\nCommand failed -:2", [DEV], None),
    "extra line: RTNETLINK Device or resource busy": (f"RTNETLINK answers: Device or resource busy\nCommand failed "
                                                      f"-:1\n{SHOW_GONE}\nCommand failed -:2", [DEV], None),
    "extra line after the namespace": (f"{NS_GONE}\nRTNETLINK answers: Operation not permitted", [], NS),
    "extra line after nsenter": (f"{NSENTER_GONE}\nsysctl: permission denied on key \"net.ipv4.ip_forward\"", [], NS),
    "extra line: killed": (f"{SHOW_GONE}\nKilled", [DEV], None),
    # nothing said, or nothing about an object
    "empty stderr": ("", [DEV], NS),
    "blank stderr": ("  \n\n", [DEV], NS),
    "Command failed alone": ("Command failed -:1", [DEV], NS),
    "Command failed lines only": ("Command failed -:1\nCommand failed -:2\n", [DEV], NS),
    "Command failed without a line number": (f"{SHOW_GONE}\nCommand failed -:", [DEV], None),
    # a message with more (or less) than the exact words
    "trailing word after does not exist.": (f"{SHOW_GONE} yet", [DEV], None),
    "does not exist without its full stop": (f'Device "{DEV}" does not exist', [DEV], None),
    "trailing word after Cannot find device": (f"{FIND_GONE} now", [DEV], None),
    "trailing word after the namespace message": (f"{NS_GONE} really", [], NS),
    "trailing word after netns del": (f"{NS_DEL_GONE} really", [], NS),
    "trailing word after nsenter": (f"{NSENTER_GONE} really", [], NS),
    "trailing word after Command failed": (f"{SHOW_GONE}\nCommand failed -:2 and more", [DEV], None),
    "leading word before the message": (f"ip: {SHOW_GONE}", [DEV], None),
    "the device unquoted": (f"Device {DEV} does not exist.", [DEV], None),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_gone_refuses_anything_but_the_exact_message_about_the_object_asked_for(case):
    stderr, devices, ns = REFUSED[case]
    assert probe.gone(error(stderr), devices, ns) is False


# --- links(): the command layer faked, the exact commands asserted ----------------------------------------------------


def link(name: str) -> dict:
    return {"ifname": name, "flags": ["UP"], "mtu": 1500}


class Kernel:
    """runner._execute answering every command with one result; records (argv, stdin)."""

    def __init__(self, mocker, code: int = 0, stdout: str = "", stderr: str = "", netns: bool = True):
        self.calls: list[tuple[list[str], str | None]] = []
        self.answer = (code, stdout, stderr)
        mocker.patch.object(runner, "_execute", side_effect=self._execute)
        mocker.patch.object(probe, "netns_exists", side_effect=lambda ns: netns)

    def _execute(self, argv, stdin, timeout):
        self.calls.append((list(argv), stdin))
        return runner.Result(tuple(argv), *self.answer)


def arrays(*names: str) -> str:
    """What `ip -j -batch` prints: one JSON array per command that succeeded."""
    return "".join(json.dumps([link(n)]) + "\n" for n in names)


BATCH = ["ip", "-j", "-d", "-force", "-batch", "-"]
ASKED = "link show dev one-7-0\nlink show dev one-7-1\nlink show dev lo\n"


def test_links_of_a_batch_with_one_missing_device_returns_the_others(mocker):
    kernel = Kernel(mocker, 1, arrays("one-7-0", "lo"), f'Device "{OTHER}" does not exist.\nCommand failed -:2\n')
    assert probe.links(None, ["one-7-0", OTHER, "lo"]) == {"one-7-0": link("one-7-0"), "lo": link("lo")}
    assert kernel.calls == [(BATCH, ASKED)]


def test_links_in_a_namespace_with_one_missing_device_returns_the_others(mocker):
    kernel = Kernel(mocker, 1, arrays("one-7-0", "lo"), f'Device "{OTHER}" does not exist.\nCommand failed -:2\n')
    assert probe.links(NS, ["one-7-0", OTHER, "lo"]) == {"one-7-0": link("one-7-0"), "lo": link("lo")}
    assert kernel.calls == [(["nsenter", f"--net=/run/netns/{NS}", "ip", *BATCH[1:]], ASKED)]


def test_links_of_a_batch_where_every_device_is_missing_is_empty(mocker):
    Kernel(mocker, 1, "", f'{SHOW_GONE}\nCommand failed -:1\nDevice "{OTHER}" does not exist.\nCommand failed -:2\n')
    assert probe.links(None, [DEV, OTHER]) == {}


def test_links_of_a_batch_that_succeeds_returns_every_device(mocker):
    kernel = Kernel(mocker, 0, arrays(DEV, OTHER))
    assert probe.links(None, [DEV, OTHER]) == {DEV: link(DEV), OTHER: link(OTHER)}
    assert kernel.calls == [(BATCH, f"link show dev {DEV}\nlink show dev {OTHER}\n")]


@pytest.mark.parametrize("stderr", [
    f"{SHOW_GONE}\nCommand failed -:1\nRTNETLINK answers: Operation not permitted\nCommand failed -:2\n",
    "RTNETLINK answers: Device or resource busy\nCommand failed -:1\n",
    f'Device "one-9-0" does not exist.\nCommand failed -:1\n',  # a device that was not asked for
    "",  # exit 1 and nothing said
    "Command failed -:1\n",
], ids=["another error beside a missing device", "another error", "another device", "no stderr", "Command failed"])
def test_links_of_a_batch_failing_with_another_error_raises(mocker, stderr):
    Kernel(mocker, 1, arrays(OTHER), stderr)
    with pytest.raises(runner.CommandError) as raised:
        probe.links(None, [DEV, OTHER])
    assert raised.value.code == 1 and raised.value.stderr == stderr


@pytest.mark.parametrize("code", [2, 255, -9])
def test_links_with_a_missing_device_but_not_ips_exit_code_for_it_raises(mocker, code):
    """`Device X does not exist` is exit 1: with any other code something else went wrong too."""
    Kernel(mocker, code, "", f"{SHOW_GONE}\nCommand failed -:1\n")
    with pytest.raises(runner.CommandError):
        probe.links(None, [DEV])


@pytest.mark.parametrize("names", [None, [DEV]], ids=["every link", "named links"])
def test_links_with_the_namespace_gone_meanwhile_is_empty(mocker, names):
    """The namespace existed when asked (netns_exists), and went before nsenter opened it."""
    kernel = Kernel(mocker, 1, "", NSENTER_GONE + "\n")
    assert probe.links(NS, names) == {}
    assert kernel.calls[0][0][:3] == ["nsenter", f"--net=/run/netns/{NS}", "ip"] and len(kernel.calls) == 1


@pytest.mark.parametrize("stderr", [
    f"nsenter: cannot open /run/netns/{NS}: Permission denied\n",
    "nsenter: cannot open /run/netns/one-8: No such file or directory\n",  # another namespace
    f"{NSENTER_GONE}\nRTNETLINK answers: Operation not permitted\n",
    f"nsenter: reassociate to namespace 'ns/net' failed: Invalid argument\n",  # a file that is no namespace
    "",
], ids=["permission denied", "another namespace", "an extra line", "not a namespace", "no stderr"])
def test_links_when_the_namespace_cannot_be_entered_for_another_reason_raises(mocker, stderr):
    Kernel(mocker, 1, "", stderr)
    with pytest.raises(runner.CommandError) as raised:
        probe.links(NS, [DEV])
    assert raised.value.code == 1


@pytest.mark.parametrize("code", [2, 255, -9])
def test_links_namespace_gone_message_with_another_exit_code_raises(mocker, code):
    """nsenter's "cannot open" is read as "gone" only with nsenter's exit code for it (1)."""
    Kernel(mocker, code, "", NSENTER_GONE + "\n")
    with pytest.raises(runner.CommandError):
        probe.links(NS, [DEV])


@pytest.mark.parametrize("code, stderr", [(1, NSENTER_GONE), (255, NS_GONE)], ids=["nsenter", "ip -n"])
def test_links_of_the_hypervisor_never_reads_a_namespace_message_as_absent(mocker, code, stderr):
    Kernel(mocker, code, "", stderr + "\n")
    with pytest.raises(runner.CommandError):
        probe.links(None, [DEV])


def test_links_of_a_namespace_that_does_not_exist_is_empty_without_a_command(mocker):
    kernel = Kernel(mocker, 0, arrays(DEV), netns=False)
    assert probe.links(NS, [DEV]) == {} and probe.links(NS) == {}
    assert kernel.calls == []


def test_links_without_names_lists_every_link_and_a_failure_raises(mocker):
    kernel = Kernel(mocker, 0, json.dumps([link("lo"), link(DEV)]))
    assert probe.links(NS) == {"lo": link("lo"), DEV: link(DEV)}
    assert kernel.calls == [(["nsenter", f"--net=/run/netns/{NS}", "ip", "-j", "-d", "link", "show"], None)]
    kernel.answer = (1, "", SHOW_GONE + "\n")  # nothing was asked by name: no "does not exist" is acceptable
    with pytest.raises(runner.CommandError):
        probe.links(NS)
