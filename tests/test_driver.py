"""netfw.opennebula.driver and `netfw one`: which NICs each OpenNebula action hands to which API call, with which arguments,
and how outcomes become exit codes and one ERROR line. The API is faked: nothing touches the host."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfw import api, runner
from netfw.opennebula import driver, driver_call, legacy
from netfw import state
from netfw.cli import app
from netfw.steps.base import show
from netfw.model.spec import InputError, NicSpec
from netfw.runner import CommandError, Result
from netfw.transaction import TransactionError

from . import oned

DATA = Path(__file__).parent / "data" / "one"
BAD = sorted((DATA / "bad").iterdir())


class Doc(str):
    """A whole VM document (`onevm show -x`) that one() sends to its action in the test's shape (tests/oned.py):
    as oned does (reduced for pre, post, clean and update_sg; whole and wrapped for update_nic), or as it is."""

    def __new__(cls, raw: bytes):
        doc = super().__new__(cls, base64.b64encode(raw).decode() + "\n")
        doc.raw = raw
        return doc


def b64(name: str) -> Doc:
    """A test document, sent by one() in the shape of the running test."""
    return Doc((DATA / name).read_bytes())


@pytest.fixture(autouse=True, params=oned.SHAPES)
def shape(request, monkeypatch):
    """Every test here runs once for each shape of document (issue 18: oned's reduced document was never tried)."""
    monkeypatch.setattr(Doc, "shape", request.param, raising=False)
    return request.param


@pytest.fixture(autouse=True)
def _no_process(monkeypatch):
    """The API is faked here: a command started through netfw.runner would reach this machine's own tables."""
    def refuse(argv, stdin, timeout):
        raise AssertionError(f"a unit test of the driver started {argv}")
    monkeypatch.setattr(runner, "_execute", refuse)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """pre and clean keep the VM's pending record in the state directory: never the machine's /var/lib/netfw."""
    monkeypatch.setenv("NETFW_STATE_DIR", str(tmp_path / "netfw-state"))
    return tmp_path / "netfw-state"


class FakeApi:
    """Records the API calls (and netfw.opennebula.legacy.remove's, as "legacy"); `fail` maps a call name to the exception it
    raises."""

    def __init__(self, monkeypatch, fail: dict[str, BaseException] | None = None, legacy_found: tuple = ()):
        self.calls: list[tuple] = []
        self.fail = fail or {}
        self.legacy_found = legacy_found  # the NICs whose legacy security groups the fake "finds" and removes
        for name in ("check_host", "attach_all", "update_all", "detach"):
            monkeypatch.setattr(api, name, self._fake(name))
        monkeypatch.setattr(legacy, "remove", self._legacy)

    def _legacy(self, vm, nics):
        self.calls.append(("legacy", (vm, nics), {}))
        if "legacy" in self.fail:
            raise self.fail["legacy"]
        return legacy.Plan(found={n: ["iptables -X x"] for n in nics if n in self.legacy_found})

    def _fake(self, name):
        def call(*args, **kw):
            self.calls.append((name, args, kw))
            if name in self.fail:
                raise self.fail[name]
            if name == "check_host":
                return None
            vm = args[0][0].vm if name.endswith("_all") else args[0]
            return api.Outcome(name, vm, None, changed=["something"])
        return call

    def nics(self, name: str) -> list[list[int]]:
        """The NIC ids of each call of `name`."""
        out = []
        for called, args, _ in self.calls:
            if called == name:
                out.append([s.nic for s in args[0]] if name.endswith("_all") else [args[1]])
        return out


def one(*argv: str, stdin: str = "", env: dict | None = None):
    """`netfw one ARGV` with stdin (a Doc: in the test's shape for the action); returns (exit code, stdout, stderr)."""
    if isinstance(stdin, Doc):
        action = next((a for a in argv if a in driver_call.ACTIONS), "post")
        stdin = oned.stdin_for(action, stdin.raw, Doc.shape).decode()
    result = CliRunner().invoke(app, ["one", *argv], input=stdin, env=env or {"NETFW_VN_MADS": None})
    return result.exit_code, result.stdout, result.stderr


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR:")]


# --- configuration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, mads", [
    (None, ("fw", "802.1Q", "vxlan", "bridge", "ovswitch", "ovswitch_vxlan")),
    ("", ("fw", "802.1Q", "vxlan", "bridge", "ovswitch", "ovswitch_vxlan")),
    ("fw", ("fw",)),
    (" fw , 802.1Q,,fw ", ("fw", "802.1Q")),
    ("netfw,bridge", ("netfw", "bridge")),
])  # fmt: skip
def test_vn_mads(text, mads):
    assert driver_call.parse_vn_mads(text) == mads


@pytest.mark.parametrize("text", ["fw;rm -rf", "fw bridge", ",,", "a/b"])
def test_vn_mads_rejected(text):
    with pytest.raises(InputError, match="VN_MAD list"):
        driver_call.parse_vn_mads(text)


def test_vn_mads_from_environment(monkeypatch):
    monkeypatch.setenv("NETFW_VN_MADS", "802.1Q")
    assert driver.config().vn_mads == ("802.1Q",)
    assert driver.config(vn_mads="fw").vn_mads == ("fw",)  # the option wins


# --- which NICs, which call -----------------------------------------------------------------------------------------


def test_post_attaches_the_handled_nics_in_one_call(monkeypatch):
    fake = FakeApi(monkeypatch)
    code, out, err = one("post", "one-42", "kvm-host-1", stdin=b64("two_nics.xml"))
    assert code == 0, err
    assert fake.nics("attach_all") == [[0, 1, 3]]  # NIC 3 is ovswitch: handled too
    assert errors(err) == [] and "INFO: netfw post: VM 42 NIC 0, 1, 3: 1 change(s)" in err
    assert out == ""


def test_conntrack_max_of_the_driver_reaches_every_nic(monkeypatch):
    """A document carries no conntrack cap: `netfw one --conntrack-max` (NETFW_CONNTRACK_MAX) sets it for each NIC."""
    fake = FakeApi(monkeypatch)
    assert one("--conntrack-max", "5000", "post", "one-42", "h", stdin=b64("two_nics.xml"))[0] == 0
    assert one("post", "one-42", "h", stdin=b64("two_nics.xml"))[0] == 0
    assert one("update_sg", "one-42", "--conntrack-max", "7000", stdin=b64("two_nics.xml"))[0] == 0
    caps = [[s.conntrack_max for s in args[0]] for name, args, _ in fake.calls if name != "legacy"]
    assert caps == [[5000] * 3, [8192] * 3, [7000] * 3]  # NICs 0, 1 and 3 (ovswitch)
    code, _, err = one("--conntrack-max", "1", "post", "one-42", "h", stdin=b64("two_nics.xml"))
    assert code == 2 and errors(err) == ["ERROR: conntrack cap 1 is not an integer in 2..1048576"]


def test_vn_mads_option_and_environment_choose_the_nics(monkeypatch):
    fake = FakeApi(monkeypatch)
    assert one("--vn-mads", "802.1Q", "post", "one-42", "h", stdin=b64("two_nics.xml"))[0] == 0  # before ACTION
    assert one("post", "one-42", "h", "--vn-mads", "fw", stdin=b64("two_nics.xml"))[0] == 0  # or after
    assert one("post", "one-42", "h", stdin=b64("two_nics.xml"), env={"NETFW_VN_MADS": "ovswitch"})[0] == 0
    assert fake.nics("attach_all") == [[1], [0], [3]]


def test_no_handled_nic_is_nothing_to_do(monkeypatch):
    fake = FakeApi(monkeypatch)
    code, _, err = one("--vn-mads", "vcenter", "post", "one-42", "h", stdin=b64("two_nics.xml"))
    assert code == 0 and "nothing to do" in err and fake.calls == []


@pytest.mark.parametrize("action, args", [("post", ["one-42", "h"]), ("clean", ["h"])])
def test_attach_yes_touches_only_that_nic(monkeypatch, action, args):
    fake = FakeApi(monkeypatch)
    assert one(action, *args, stdin=b64("attach_nic.xml"))[0] == 0
    assert fake.nics("attach_all" if action == "post" else "detach") == [[1]]


def test_pre_checks_the_host_and_touches_nothing(monkeypatch):
    fake = FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    assert [c[0] for c in fake.calls] == ["check_host"]


def test_pre_fails_when_the_host_lacks_something(monkeypatch):
    FakeApi(monkeypatch, fail={"check_host": InputError("br_netfilter is not loaded")})
    code, _, err = one("pre", stdin=b64("two_nics.xml"))
    assert code == 2 and errors(err) == ["ERROR: br_netfilter is not loaded"]


def test_clean_detaches_each_nic_with_its_bridge_as_fallback(monkeypatch, tmp_path):
    fake = FakeApi(monkeypatch)
    assert one("clean", "kvm-host-1", "--state-dir", str(tmp_path), stdin=b64("two_nics.xml"))[0] == 0
    assert [(c[1], c[2]["bridge"], c[2]["state_dir"]) for c in fake.calls] == [
        ((42, 0), "onebr0", str(tmp_path)), ((42, 1), "onebr.20", str(tmp_path)), ((42, 3), "ovsbr0", str(tmp_path))]


def test_clean_goes_on_after_a_failing_nic_and_reports_it(monkeypatch):
    calls = []

    def detach(vm, nic, **kw):
        calls.append(nic)
        if nic == 0:
            raise CommandError(Result(("ip", "link", "del", "x"), 1, "", "Device busy\nsecond line"))
        return api.Outcome("detach", vm, nic)

    monkeypatch.setattr(api, "detach", detach)
    code, _, err = one("clean", "h", stdin=b64("two_nics.xml"))
    assert code == 1 and calls == [0, 1, 3]
    assert errors(err) == ["ERROR: netfw clean: VM 42: NIC 0: `ip link del x` exited 1: Device busy | second line"]


def test_update_sg_updates_every_handled_nic_at_once(monkeypatch):
    fake = FakeApi(monkeypatch)
    assert one("update_sg", "one-42", stdin=b64("two_nics.xml"))[0] == 0
    assert fake.nics("update_all") == [[0, 1, 3]]


def test_update_nic_takes_the_nics_of_that_network_in_one_update(monkeypatch, tmp_path):
    fake = FakeApi(monkeypatch)
    wrapped = base64.encodebytes((DATA / "two_nics.xml").read_bytes()).decode()  # update_nic: with line breaks
    assert one("update_nic", "one-42", "1", "--state-dir", str(tmp_path), stdin=wrapped)[0] == 0
    assert fake.nics("update_all") == [[1]] and fake.nics("attach_all") == []
    # NIC 0 (network 0) has MTU 1450 in the document: update_all carries it (one transaction resizes and reloads).
    assert one("update_nic", "one-42", "0", "--state-dir", str(tmp_path), stdin=wrapped)[0] == 0
    assert fake.nics("update_all") == [[1], [0]] and fake.nics("attach_all") == []


def test_update_nic_on_an_unknown_network_changes_nothing(monkeypatch):
    fake = FakeApi(monkeypatch)
    code, _, err = one("update_nic", "one-42", "9", stdin=b64("two_nics.xml"))
    assert code == 0 and fake.calls == [] and "no handled NIC on virtual network 9" in err


def test_dry_run_prints_the_commands(monkeypatch):
    def attach_all(specs, **kw):
        assert kw["dry_run"] is True
        return api.Outcome("attach", 42, None, commands=["# step", "ip link add x"])

    def remove(vm, nics):  # netfw.opennebula.legacy.remove, in a dry run: its changing commands are recorded, not started
        assert runner.dry() and (vm, nics) == (42, [0, 1])  # NIC 3 is ovswitch: no legacy security groups
        runner.run(["iptables-restore", "--noflush"], stdin="*filter\n-X one-42-0-i\nCOMMIT\n")
        return legacy.Plan(found={0: ["iptables -X one-42-0-i"]})

    monkeypatch.setattr(api, "attach_all", attach_all)
    monkeypatch.setattr(legacy, "remove", remove)
    code, out, err = one("post", "one-42", "h", "--dry-run", stdin=b64("two_nics.xml"))
    assert code == 0 and out == "# step\nip link add x\n" + "".join(
        line + "\n" for line in show([(["iptables-restore", "--noflush"], "*filter\n-X one-42-0-i\nCOMMIT\n")]))
    assert "legacy security groups to remove: NIC 0" in err  # a dry run removes nothing


# --- failures: exit codes and exactly one ERROR line ----------------------------------------------------------------


class _Step:
    """Stands for the step that failed: TransactionError only asks it to describe itself."""

    def describe(self):
        return "veth pair one-42-1-h"


@pytest.mark.parametrize("error, code, line", [
    (InputError("tap one-42-1 does not exist"), 2, "ERROR: tap one-42-1 does not exist"),
    (TransactionError(_Step(), RuntimeError("boom\nmore"), []), 1,
     "ERROR: veth pair one-42-1-h: boom | more (rolled back)"),
    (TransactionError(_Step(), RuntimeError("boom"), [(_Step(), RuntimeError("stuck"))]), 1,
     "ERROR: veth pair one-42-1-h: boom; rollback incomplete: veth pair one-42-1-h: stuck"),
    (PermissionError(13, "Permission denied", "/var/lib/netfw"), 1,
     "ERROR: netfw post: unexpected PermissionError: [Errno 13] Permission denied: '/var/lib/netfw'"),
])  # fmt: skip
def test_failures_give_one_error_line(monkeypatch, error, code, line):
    FakeApi(monkeypatch, fail={"attach_all": error})
    got, _, err = one("post", "one-42", "h", stdin=b64("two_nics.xml"))
    assert got == code
    assert errors(err) == [line]
    assert "Traceback" not in err


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
@pytest.mark.parametrize("action, args", [("pre", []), ("post", ["one-1", "h"]), ("clean", ["h"]),
                                          ("update_sg", ["one-1"]), ("update_nic", ["one-1", "0"])])
def test_bad_documents_exit_2_with_one_error_line_and_touch_nothing(monkeypatch, path, action, args):
    fake = FakeApi(monkeypatch)
    raw = path.read_bytes()
    stdin = raw.decode() if path.suffix == ".txt" else base64.b64encode(raw).decode()  # .txt: sent as they are
    code, out, err = one(action, *args, stdin=stdin)
    assert code == 2, err
    assert len(errors(err)) == 1 and errors(err)[0].startswith("ERROR: VM document: "), err
    assert [line for line in err.splitlines() if not line.startswith(("ERROR:", "INFO:", "DEBUG:"))] == []
    assert fake.calls == [] and out == ""


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "ERROR: unknown driver action 'bogus' (one of: pre, post, clean, update_sg, update_nic)"),
    (["update_nic", "one-42"], "ERROR: update_nic needs its arguments DEPLOY_ID VNET_ID"),
    (["update_nic", "one-42", "x"], "ERROR: VNET_ID is not a number: 'x'"),
    (["--vn-mads", "a b", "post"], "ERROR: VN_MAD list 'a b': not a comma-separated list of driver names"),
])  # fmt: skip
def test_bad_arguments_exit_2(monkeypatch, argv, message):
    fake = FakeApi(monkeypatch)
    code, _, err = one(*argv, stdin=b64("two_nics.xml"))
    assert (code, errors(err)) == (2, [message]) and fake.calls == []


def test_empty_stdin_exits_2(monkeypatch):
    FakeApi(monkeypatch)
    code, _, err = one("post", "one-42", "h", stdin="")
    assert (code, errors(err)) == (2, ["ERROR: VM document: it is empty"])


def test_extra_arguments_are_ignored(monkeypatch):
    fake = FakeApi(monkeypatch)
    assert one("clean", "h", "extra", stdin=b64("two_nics.xml"))[0] == 0
    assert fake.nics("detach") == [[0], [1], [3]]


# --- the wrappers ---------------------------------------------------------------------------------------------------

WRAPPERS = Path(__file__).resolve().parents[1] / "scripts" / "opennebula"


@pytest.mark.parametrize("action", list(driver_call.ACTIONS))
def test_wrapper_runs_netfw_one_action_with_sudo_and_options(tmp_path, action):
    """Run as oneadmin (a fake `id` says uid 9869), the wrapper execs `sudo -n NETFW one [--state-dir D]
    [--vn-mads M] ACTION ARGS` with stdin passed on."""
    import os
    import subprocess

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "argv"
    (fake_bin / "sudo").write_text(f'#!/bin/sh\necho sudo "$@" > {log}\ncat >> {log}\n')
    (fake_bin / "netfw").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "id").write_text("#!/bin/sh\necho 9869\n")
    for f in fake_bin.iterdir():
        f.chmod(0o755)
    conf = tmp_path / "opennebula.conf"
    conf.write_text("NETFW_VN_MADS=fw,bridge\n")
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "NETFW_CONF": str(conf), "NETFW_STATE_DIR": "/srv/netfw"}
    res = subprocess.run([str(WRAPPERS / action), "a1", "a2"], input="DOC\n", text=True, env=env,
                         capture_output=True)
    assert res.returncode == 0, res.stderr
    assert os.access(WRAPPERS / action, os.X_OK)
    assert log.read_text() == (f"sudo -n {fake_bin}/netfw one --state-dir /srv/netfw --vn-mads fw,bridge "
                               f"{action} a1 a2\nDOC\n")


def test_wrapper_without_netfw_says_so_in_one_error_line(tmp_path):
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "NETFW_CONF": "/nonexistent", "NETFW_BIN": str(tmp_path / "missing")}
    res = subprocess.run([str(WRAPPERS / "post")], input="", text=True, env=env, capture_output=True)
    assert res.returncode == 1
    assert errors(res.stderr) == [f"ERROR: netfw post: command {tmp_path}/missing not found "
                                  "(set NETFW_BIN in /nonexistent)"]


# --- ATTACH (issue 8, findings 4 and 5) and PCI NICs (issue 10) ------------------------------------------------------


def _specs(fake: FakeApi, name: str) -> list[list[NicSpec]]:
    return [list(args[0]) for called, args, _ in fake.calls if called == name]


def test_post_of_an_alias_hot_attach_reapplies_its_parent_with_the_alias(monkeypatch):
    fake = FakeApi(monkeypatch)
    assert one("post", "one-42", "h", stdin=b64("attach_alias.xml"))[0] == 0
    (specs,) = _specs(fake, "attach_all")
    assert [s.nic for s in specs] == [0] and "10.0.0.44" in specs[0].ips


def _record(state_dir: Path, spec: NicSpec) -> None:
    state.write(state.nic_path(state_dir, spec.vm, spec.nic), state.document(state.Applied(spec, 1500)))


def test_clean_of_an_alias_hot_detach_reapplies_its_parent_without_the_alias(monkeypatch, tmp_path):
    """Finding 4: clean with ATTACH=YES on NIC_ALIAS 4 used to detach NIC 0 (its parent) from its firewall while
    the VM kept running; now NIC 0 is updated without 10.0.0.44 and nothing is detached."""
    from netfw.opennebula import one as one_doc

    nic0 = one_doc.parse_vm((DATA / "attach_alias.xml").read_bytes()).nic(0)
    _record(tmp_path, nic0.spec)
    fake = FakeApi(monkeypatch)
    code, _, err = one("clean", "h", "--state-dir", str(tmp_path), stdin=b64("attach_alias.xml"))
    assert code == 0, err
    assert fake.nics("detach") == []
    assert _specs(fake, "update_all") == [[nic0.alias_detached]]
    assert "10.0.0.44" not in nic0.alias_detached.ips and "10.0.0.43" in nic0.alias_detached.ips


def test_clean_of_an_alias_hot_detach_leaves_a_parent_netfw_never_attached(monkeypatch, tmp_path):
    fake = FakeApi(monkeypatch)
    code, _, err = one("clean", "h", "--state-dir", str(tmp_path), stdin=b64("attach_alias.xml"))
    assert code == 0 and fake.calls == []
    assert "INFO: NIC 0 is not attached" in err


@pytest.mark.parametrize("action, args, call, nics", [
    ("update_sg", ["one-42"], "update_all", [[0, 1, 3]]),
    ("update_nic", ["one-42", "1"], "update_all", [[1]]),
    ("update_nic", ["one-42", "0"], "update_all", [[0]]),
])  # fmt: skip
@pytest.mark.parametrize("doc", ["attach_nic.xml", "attach_alias.xml"])
def test_update_sg_and_update_nic_ignore_attach(monkeypatch, action, args, call, nics, doc):
    """Finding 5: with ATTACH=YES on NIC 1 (or an alias of NIC 0), update_sg updated that NIC only and left the
    others with their old, possibly broader, rules."""
    fake = FakeApi(monkeypatch)
    assert one(action, *args, stdin=b64(doc))[0] == 0
    assert fake.nics(call) == nics


@pytest.mark.parametrize("action, args", [("pre", []), ("post", ["one-11", "h"]), ("clean", ["h"])])
def test_a_pci_nic_hot_plug_is_nothing_for_netfw(monkeypatch, action, args):
    """ATTACH=YES on a PCI NIC: no NIC of netfw is concerned (clean used to detach them all)."""
    fake = FakeApi(monkeypatch)
    code, _, err = one(action, *args, stdin=b64("attach_pci.xml"))
    assert code == 0 and [c for c in fake.calls if c[0] != "check_host"] == []
    assert "the PCI NIC being hot-(de)attached is not one netfw handles: nothing to do" in err


def test_a_vm_with_a_pci_nic_is_handled_and_the_pci_nic_named(monkeypatch):
    """Issue 10: an SR-IOV NIC listing groups 0 and 200 was refused (`security group 0, which no NIC has`)."""
    fake = FakeApi(monkeypatch)
    code, _, err = one("post", "one-11", "h", stdin=b64("pci_nic.xml"))
    assert code == 0, err
    assert fake.nics("attach_all") == [[0]]
    assert "INFO: VM 11: PCI NIC 1 not handled (a passthrough device has no tap to filter)" in err


# --- issue 18: what netfw does not understand, what OpenNebula logs, one default list ---------------------------------


def test_a_document_in_which_nothing_has_a_vn_mad_is_refused(monkeypatch):
    """oned runs a network driver only for the drivers of the VM's NICs: a document naming none is not one of its
    (here OpenNebula's 2014 test document), and is refused rather than read as nothing to do."""
    fake = FakeApi(monkeypatch)
    for action, args in (("pre", []), ("post", ["one-3", "h"]), ("clean", ["h"]), ("update_sg", ["one-3"])):
        code, out, err = one(action, *args, stdin=b64("one_sg_test_pre_vm.xml"))
        assert (code, out) == (2, "")
        assert errors(err) == ["ERROR: VM document: no NIC, NIC_ALIAS or PCI element under TEMPLATE has a VN_MAD: "
                               "not a document oned sends to a network driver"]
    assert fake.calls == []


def test_the_summary_names_what_is_left_to_other_drivers(monkeypatch):
    FakeApi(monkeypatch)
    code, _, err = one("--vn-mads", "fw", "post", "one-42", "h", stdin=b64("two_nics.xml"))
    assert code == 0
    assert "INFO: netfw post: VM 42 NIC 0: 1 change(s); not handled: 1 NIC with VN_MAD 802.1Q (1), 1 NIC with " \
           "VN_MAD ovswitch (3)" in err.splitlines()
    code, _, err = one("--vn-mads", "vcenter", "update_sg", "one-42", stdin=b64("two_nics.xml"))
    assert code == 0
    assert "INFO: netfw update_sg: VM 42: no NIC with VN_MAD in vcenter: nothing to do; not handled: 2 NICs with " \
           "VN_MAD fw (0, 1)" not in err  # (counted per VN_MAD, each NIC under its own)
    assert "INFO: netfw update_sg: VM 42: no NIC with VN_MAD in vcenter: nothing to do; not handled: 1 NIC with " \
           "VN_MAD fw (0), 1 NIC with VN_MAD 802.1Q (1), 1 NIC with VN_MAD ovswitch (3)" in err.splitlines()


@pytest.mark.parametrize("fail", [False, True])
def test_log_stdout_puts_info_on_stdout_and_the_error_on_stderr(monkeypatch, fail):
    """As a hook in <action>.d/, OpenNebula's run_hooks logs the hook's stdout (each line as `INFO: post: ...`) and
    drops its stderr on success; on failure it raises with the stderr. So: the summary on stdout, the ERROR line on
    stderr, and nothing else there."""
    FakeApi(monkeypatch, fail={"attach_all": InputError("tap one-42-0 does not exist")} if fail else None)
    code, out, err = one("--log-stdout", "post", "one-42", "h", stdin=b64("two_nics.xml"))
    if fail:
        assert (code, out) == (2, "")
        assert err.splitlines() == ["ERROR: tap one-42-0 does not exist"]
    else:
        assert (code, err) == (0, "")
        assert out.splitlines() == ["netfw post: VM 42 NIC 0, 1, 3: 1 change(s)"]


def test_a_wrapper_installed_as_a_hook_passes_log_stdout(tmp_path):
    """Way A of docs/opennebula.md: the wrapper runs as /var/tmp/one/vnm/<driver>/<action>.d/netfw."""
    import shutil
    import subprocess

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "argv"
    (fake_bin / "netfw").write_text(f'#!/bin/sh\necho "$@" > {log}\n')
    (fake_bin / "netfw").chmod(0o755)
    hook = tmp_path / "vnm" / "bridge" / "post.d" / "netfw"
    hook.parent.mkdir(parents=True)
    shutil.copy(WRAPPERS / "post", hook)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "NETFW_CONF": "/nonexistent", "NETFW_SUDO": "0"}
    res = subprocess.run([str(hook), "one-42", "h"], input="DOC\n", text=True, env=env, capture_output=True)
    assert res.returncode == 0, res.stderr
    assert log.read_text() == "one --log-stdout post one-42 h\n"


def test_one_default_vn_mad_list_everywhere():
    """Issue 18: the docs' settings example and `--help` named a default without the Open vSwitch drivers; an
    operator who copied it left every Open vSwitch NIC unfiltered. Code, help, docs and wrappers say the same."""
    from netfw.opennebula.one import DEFAULT_VN_MADS

    default = ",".join(DEFAULT_VN_MADS)
    assert "ovswitch" in DEFAULT_VN_MADS and "ovswitch_vxlan" in DEFAULT_VN_MADS
    root = Path(__file__).resolve().parents[1]
    _, out, _ = one("--help")
    assert f"default {default}" in " ".join(out.split())
    docs = (root / "docs" / "opennebula.md").read_text()
    assert f"NETFW_VN_MADS={default} " in docs
    assert f"(default `{default}`)" in docs
    for action in driver_call.ACTIONS:
        assert f"#                    {default}\n" in (WRAPPERS / action).read_text(), action
    import re

    for text in (docs, (root / "README.md").read_text()):  # no other list of drivers passed off as the default
        for found in re.findall(r"NETFW_VN_MADS=([\w.,]+)", text):
            assert found == default or found == "netfw", found


@pytest.mark.parametrize("action, order", [("update_nic", ("legacy", "netfw")), ("clean", ("netfw", "legacy"))])
@pytest.mark.parametrize("legacy, netfw", [(0, 0), (1, 0), (0, 2), (1, 2)])
def test_the_chain_runs_both_parts_in_order_whatever_the_first_did(tmp_path, action, order, legacy, netfw):
    """Issue 18: the documented update_nic chain (`legacy ... || exit`) skipped netfw's update when the driver's
    update_nic failed (the ovswitch driver's virsh domiftune on netfw's veth end). Issue 20: clean runs netfw's part
    first, so that the driver's own clean finds the bridge as it would without netfw. Both parts always run with the
    same arguments and stdin; the exit status is the first failure's."""
    import shutil
    import subprocess

    folder = tmp_path / "vnm" / "ovswitch"
    folder.mkdir(parents=True)
    shutil.copy(WRAPPERS / "chain", folder / action)
    status = {"legacy": legacy, "netfw": netfw}
    for part in ("legacy", "netfw"):
        (folder / f"{action}.{part}").write_text(f'#!/bin/sh\necho "$0 $*" >> {tmp_path}/log\ncat >> {tmp_path}/log\n'
                                                 f"exit {status[part]}\n")
        (folder / f"{action}.{part}").chmod(0o755)
    doc = oned.wrapped(b"<VM><ID>42</ID></VM>").decode()  # update_nic's stdin: base64 with line breaks
    res = subprocess.run([str(folder / action), "one-42", "5"], input=doc, text=True, capture_output=True)
    first_failure = next((status[p] for p in order if status[p]), 0)
    assert res.returncode == first_failure, res.stderr
    body = doc.rstrip("\n").splitlines()
    assert (tmp_path / "log").read_text().splitlines() == [
        f"{folder}/{action}.{order[0]} one-42 5", *body, f"{folder}/{action}.{order[1]} one-42 5", *body]


def test_the_chain_refuses_another_name(tmp_path):
    import shutil
    import subprocess

    shutil.copy(WRAPPERS / "chain", tmp_path / "post")
    res = subprocess.run([str(tmp_path / "post")], input="", text=True, capture_output=True)
    assert res.returncode == 1 and errors(res.stderr) == [
        "ERROR: netfw chain: installed as post; only clean and update_nic are chained"]


# --- issue 20: the legacy security groups of the NICs netfw handles go, after netfw's firewall holds them ------------


def _order(fake: FakeApi) -> list[tuple]:
    """(call, NICs) in the order they were made: a legacy removal with its NICs, an API call with its NICs."""
    return [(name, args if name == "legacy" else [s.nic for s in args[0]]) for name, args, _ in fake.calls]


@pytest.mark.parametrize("action, args, call", [("post", ["one-42", "h"], "attach_all"),
                                                ("update_sg", ["one-42"], "update_all")])
def test_post_and_update_sg_remove_the_legacy_groups_after_netfw_holds_the_nics(monkeypatch, action, args, call):
    fake = FakeApi(monkeypatch, legacy_found=(0,))
    code, _, err = one(action, *args, stdin=b64("two_nics.xml"))
    assert code == 0, err
    assert _order(fake) == [(call, [0, 1, 3]), ("legacy", (42, [0, 1]))]  # NIC 3 is ovswitch: never legacy groups
    assert f"INFO: netfw {action}: VM 42 NIC 0, 1, 3: 1 change(s); legacy security groups removed: NIC 0" in err


def test_update_nic_removes_them_for_the_nics_of_that_network(monkeypatch, tmp_path):
    fake = FakeApi(monkeypatch)
    wrapped = base64.encodebytes((DATA / "two_nics.xml").read_bytes()).decode()
    assert one("update_nic", "one-42", "1", "--state-dir", str(tmp_path), stdin=wrapped)[0] == 0
    assert _order(fake) == [("update_all", [1]), ("legacy", (42, [1]))]


def test_a_hot_attach_removes_them_for_that_nic_only(monkeypatch):
    fake = FakeApi(monkeypatch)
    assert one("post", "one-42", "h", stdin=b64("attach_nic.xml"))[0] == 0
    assert _order(fake) == [("attach_all", [1]), ("legacy", (42, [1]))]


def test_clean_and_pre_leave_them_to_the_driver(monkeypatch):
    """clean runs before the driver's own (the chain), which removes them as it does without netfw."""
    fake = FakeApi(monkeypatch)
    assert one("clean", "h", stdin=b64("two_nics.xml"))[0] == 0
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    assert [name for name, _, _ in fake.calls] == ["detach", "detach", "detach", "check_host"]


def test_bridge_and_ovswitch_nics_are_not_looked_at(monkeypatch):
    fake = FakeApi(monkeypatch)
    assert one("--vn-mads", "ovswitch", "post", "one-42", "h", stdin=b64("two_nics.xml"))[0] == 0
    assert _order(fake) == [("attach_all", [3])]


def test_a_failed_removal_fails_the_action_with_one_error_line(monkeypatch):
    """netfw's firewall stays (the NIC is filtered twice, never unfiltered); OpenNebula cancels the deployment."""
    fake = FakeApi(monkeypatch, fail={"legacy": CommandError(Result(("iptables-save", "-t", "filter"), 4, "",
                                                                   "iptables-save: permission denied"))})
    code, _, err = one("post", "one-42", "h", stdin=b64("two_nics.xml"))
    assert code == 1 and errors(err) == ["ERROR: `iptables-save -t filter` exited 4: iptables-save: permission "
                                         "denied"]
    assert [name for name, _, _ in fake.calls] == ["attach_all", "legacy"]
