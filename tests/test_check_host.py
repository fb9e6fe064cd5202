"""api.check_host itself (mocked everywhere else): the tools netfw runs are looked up on PATH, the iptables tools of the
configured backend by their backend's names, and br_netfilter by its /proc directory.

PATH is a directory of real (dummy) executables made here; only the br_netfilter probe (os.path.isdir of
/proc/sys/net/bridge) is answered by the test, as whether the module is loaded is a property of the host.
"""

from __future__ import annotations

import os

import pytest

from netfw import api
from netfw.model.spec import InputError

BRIDGE_NF = "/proc/sys/net/bridge"
#: What netfw runs on every attach, update or detach, whatever else the list grows to hold.
ESSENTIAL = ("ip", "nsenter", "sysctl", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save",
             "ebtables-restore", "ebtables-save", "ipset", "conntrack")
LEGACY = ("iptables-legacy-save", "iptables-legacy-restore", "ip6tables-legacy-save", "ip6tables-legacy-restore")
NFT = ("iptables-nft-save", "iptables-nft-restore", "ip6tables-nft-save", "ip6tables-nft-restore")


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A PATH holding only the executables put there; br_netfilter loaded unless told otherwise."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    loaded = {"br_netfilter": True}
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: loaded["br_netfilter"] if p == BRIDGE_NF else real_isdir(p))

    class Host:
        bin = folder
        module = loaded

        @staticmethod
        def install(*names: str, mode: int = 0o755) -> None:
            for name in names:
                (folder / name).write_text("#!/bin/sh\nexit 0\n")
                (folder / name).chmod(mode)

        @staticmethod
        def remove(name: str) -> None:
            (folder / name).unlink()

    return Host


def everything(host) -> None:
    host.install(*dict.fromkeys(api.TOOLS + ESSENTIAL + LEGACY + NFT))


def missing(error: pytest.ExceptionInfo) -> list[str]:
    """The tools a 'missing tools: a, b (how to install them)' message names, in its order."""
    text = str(error.value)
    assert text.startswith("missing tools: "), text
    return text.removeprefix("missing tools: ").split(" (")[0].split(", ")


@pytest.mark.parametrize("backend", [None, "auto", "nft", "legacy"])
def test_a_complete_host_passes(host, monkeypatch, backend):
    if backend:
        monkeypatch.setenv("NETFW_IPTABLES_BACKEND", backend)
    everything(host)
    api.check_host()


@pytest.mark.parametrize("tool", ESSENTIAL)
def test_each_missing_tool_is_named(host, tool):
    everything(host)
    host.remove(tool)
    with pytest.raises(InputError) as info:
        api.check_host()
    assert missing(info) == [tool]
    assert "apt-get install" in str(info.value)  # and how to get it


def test_several_missing_tools_are_named_once_each_in_one_message(host):
    everything(host)
    for tool in ("ipset", "conntrack", "ebtables-restore"):
        host.remove(tool)
    with pytest.raises(InputError) as info:
        api.check_host()
    assert sorted(missing(info)) == ["conntrack", "ebtables-restore", "ipset"]


def test_an_empty_path_names_every_tool_once(host):
    with pytest.raises(InputError) as info:
        api.check_host()
    named = missing(info)
    assert len(named) == len(set(named))
    assert set(ESSENTIAL) <= set(named)
    assert not set(named) & set(LEGACY + NFT)  # the default backend needs no backend-named tool


def test_a_file_that_is_not_executable_is_not_a_tool(host):
    everything(host)
    host.remove("conntrack")
    host.install("conntrack", mode=0o644)
    with pytest.raises(InputError) as info:
        api.check_host()
    assert missing(info) == ["conntrack"]


@pytest.mark.parametrize("backend, names", [("legacy", LEGACY), ("nft", NFT)])
def test_a_backend_needs_its_own_tools(host, monkeypatch, backend, names):
    """With NETFW_IPTABLES_BACKEND (--backend) the rules are loaded by e.g. iptables-legacy-restore: a host with
    only the default names lacks exactly those."""
    monkeypatch.setenv("NETFW_IPTABLES_BACKEND", backend)
    host.install(*dict.fromkeys(api.TOOLS + ESSENTIAL))
    with pytest.raises(InputError) as info:
        api.check_host()
    assert sorted(missing(info)) == sorted(names)
    host.install(*names)
    api.check_host()


def test_the_other_backend_s_tools_are_not_needed(host, monkeypatch):
    monkeypatch.setenv("NETFW_IPTABLES_BACKEND", "legacy")
    host.install(*dict.fromkeys(api.TOOLS + ESSENTIAL + LEGACY))
    api.check_host()


def test_an_unknown_backend_is_refused(host, monkeypatch):
    everything(host)
    monkeypatch.setenv("NETFW_IPTABLES_BACKEND", "iptables-legacy-restore; reboot")
    with pytest.raises(InputError, match=r"^iptables backend 'iptables-legacy-restore; reboot' is not one of"):
        api.check_host()


def test_without_br_netfilter_the_host_is_refused(host):
    everything(host)
    host.module["br_netfilter"] = False
    with pytest.raises(InputError, match=r"^br_netfilter is not loaded: run `modprobe br_netfilter`"):
        api.check_host()


def test_missing_tools_are_named_before_br_netfilter(host):
    everything(host)
    host.remove("ip")
    host.module["br_netfilter"] = False
    with pytest.raises(InputError) as info:
        api.check_host()
    assert missing(info) == ["ip"]


def test_check_host_runs_nothing(host, mocker):
    """It only looks: no process is started (the command layer is never reached)."""
    from netfw import runner

    execute = mocker.patch.object(runner, "_execute")
    everything(host)
    api.check_host()
    host.remove("ipset")
    with pytest.raises(InputError):
        api.check_host()
    execute.assert_not_called()
