"""The VM's pending record (netfw.state.pending): written by `netfw one pre`, replaced by the next, completed by a hot
attach's, removed by `clean` (a hot detach's: its NIC only), read back as strictly as a state record. The API is
faked (tests/test_driver.py's FakeApi): nothing touches the host but the test's own state directory."""

from __future__ import annotations

import json
import os
import stat

import pytest

from netfw import state
from netfw.state import pending
from netfw.model.spec import NicSpec
from netfw.model.serial import spec_to_dict
from netfw.state.fs import StateError

from .test_driver import Doc, FakeApi, b64, errors, one
from .test_driver import _no_process, shape  # noqa: F401  (the same autouse fixtures: every shape, no process)




@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NETFW_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def read(root, vm=42) -> pending.Pending | None:
    with state.opened(root, create=False) as records:
        return pending.load(records, vm)


def test_pre_records_what_post_would_attach(monkeypatch, root):
    fake = FakeApi(monkeypatch)
    code, _, err = one("--conntrack-max", "5000", "pre", stdin=b64("two_nics.xml"))
    assert code == 0, err
    assert "INFO: netfw pre: VM 42: host ready for NIC 0, 1, 3; pending for the libvirt hook: NIC 0, 1, 3" in err
    assert one("--conntrack-max", "5000", "post", "one-42", "h", stdin=b64("two_nics.xml"))[0] == 0
    attached = next(args[0] for name, args, _ in fake.calls if name == "attach_all")
    got = read(root)
    assert got == pending.Pending(42, "auto", {s.nic: s for s in attached})  # the very specs post attaches
    path = root / "vm-42" / "pending.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == os.geteuid()
    assert [c[0] for c in fake.calls][:1] == ["check_host"]  # the host checks stay


def test_pre_records_the_backend(monkeypatch, root):
    FakeApi(monkeypatch)
    assert one("--backend", "legacy", "pre", stdin=b64("two_nics.xml"))[0] == 0
    assert read(root).backend == "legacy"


def test_the_next_pre_replaces_the_record(monkeypatch, root):
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    assert one("pre", "--vn-mads", "fw", stdin=b64("two_nics.xml"))[0] == 0
    assert sorted(read(root).nics) == [0]


def test_pre_without_a_handled_nic_removes_the_record(monkeypatch, root):
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    code, _, err = one("pre", "--vn-mads", "dummy", stdin=b64("two_nics.xml"))
    assert code == 0 and "nothing to do; pending record removed" in err
    assert read(root) is None


def test_a_hot_attach_pre_puts_its_nic_into_the_record(monkeypatch, root):
    """No hook runs for a hot-plug (post attaches the NIC); a later start of the domain must find it."""
    FakeApi(monkeypatch)
    assert one("pre", "--vn-mads", "fw", stdin=b64("two_nics.xml"))[0] == 0  # NIC 0 only
    code, _, err = one("pre", stdin=b64("attach_nic.xml"))  # ATTACH=YES on NIC 1
    assert code == 0 and "pending for the libvirt hook: NIC 0, 1" in err
    assert sorted(read(root).nics) == [0, 1]


def test_a_hot_attach_pre_without_a_record_records_its_nic_alone(monkeypatch, root):
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("attach_nic.xml"))[0] == 0
    assert sorted(read(root).nics) == [1]


def test_clean_removes_the_record(monkeypatch, root):
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    code, _, err = one("clean", "h", stdin=b64("two_nics.xml"))
    assert code == 0 and "; pending record removed" in err
    assert read(root) is None and not (root / "vm-42" / "pending.json").exists()


def test_a_hot_detach_clean_removes_its_nic_only(monkeypatch, root):
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    code, _, err = one("clean", "h", stdin=b64("attach_nic.xml"))  # ATTACH=YES on NIC 1
    assert code == 0 and "; pending record updated" in err
    assert sorted(read(root).nics) == [0, 3]


def test_a_dry_run_pre_writes_nothing(monkeypatch, root):
    FakeApi(monkeypatch)
    code, _, err = one("pre", "--dry-run", stdin=b64("two_nics.xml"))
    assert code == 0 and "pending record not written (dry run)" in err
    assert not root.exists()


def test_a_bad_document_writes_no_record(monkeypatch, root):
    FakeApi(monkeypatch)
    bad = Doc(b64("two_nics.xml").raw.replace(b"<ID>42</ID>", b"<ID>x</ID>"))
    assert one("pre", stdin=bad)[0] == 2
    assert not root.exists()


def test_a_failing_host_check_writes_no_record(monkeypatch, root):
    from netfw.model.spec import InputError
    FakeApi(monkeypatch, fail={"check_host": InputError("br_netfilter is not loaded")})
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 2
    assert not root.exists()


# --- read back as strictly as a state record ------------------------------------------------------------------------


def _write(root, text: str, vm: int = 42) -> None:
    (root / f"vm-{vm}").mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    (root / f"vm-{vm}" / "pending.json").write_text(text)
    (root / f"vm-{vm}" / "pending.json").chmod(0o600)


GOOD = {"vm": 42, "backend": "auto", "nics": [spec_to_dict(NicSpec(42, 0, "br0", mac="02:00:00:00:00:01"))]}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(vm=43), "it is for VM 43, not VM 42"),
    (lambda d: d.update(vm=True), "it is for VM True, not VM 42"),
    (lambda d: d.update(backend="iptables; reboot"), "is not one of auto, nft, legacy"),
    (lambda d: d.update(extra=1), "must be {vm, backend, nics"),
    (lambda d: d.update(nics={}), "must be {vm, backend, nics"),
    (lambda d: d["nics"].append(d["nics"][0]), "NIC 0 is for VM 42 or appears twice"),
    (lambda d: d["nics"][0].update(vm=7), "NIC 0 is for VM 7 or appears twice"),
    (lambda d: d["nics"][0].update(tap="eth0"), "is not the NIC's"),
    (lambda d: d["nics"][0].update(bridge="br0\nx"), "bridge"),
    (lambda d: d["nics"][0].update(mac="02:00:00:00:00:01%"), "MAC"),
    (lambda d: d["nics"][0].update(rules="all"), "rules is neither null nor a list"),
    (lambda d: d["nics"][0].update(extra=1), "unknown field(s) extra"),
])
def test_a_bad_record_is_refused(root, change, message):
    data = json.loads(json.dumps(GOOD))
    change(data)
    _write(root, json.dumps(data))
    with pytest.raises(StateError) as e:
        read(root)
    assert message in str(e.value) and "pending record" in str(e.value)


def test_a_record_that_is_not_json_or_a_symlink_is_refused(root, tmp_path):
    _write(root, '{"vm": 42, "vm": 42}')
    with pytest.raises(StateError, match="a key appears twice"):
        read(root)
    (root / "vm-42" / "pending.json").unlink()
    (tmp_path / "elsewhere").write_text(json.dumps(GOOD))
    (root / "vm-42" / "pending.json").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StateError, match="symbolic link"):
        read(root)


def test_a_good_record_reads_back(root):
    _write(root, json.dumps(GOOD))
    assert read(root) == pending.Pending(42, "auto", {0: NicSpec(42, 0, "br0", mac="02:00:00:00:00:01")})


def test_a_hot_attach_pre_fails_closed_on_a_bad_record(monkeypatch, root):
    FakeApi(monkeypatch)
    _write(root, "{")
    code, _, err = one("pre", stdin=b64("attach_nic.xml"))
    assert code == 2 and errors(err)[0].startswith("ERROR: pending record ")
    assert (root / "vm-42" / "pending.json").read_text() == "{"


def test_an_alias_hot_attach_and_detach_rewrite_the_parent_nic(monkeypatch, root):
    """pre (ATTACH=YES on a NIC_ALIAS) records its parent with the alias's addresses; clean without them."""
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    assert one("pre", stdin=b64("attach_alias.xml"))[0] == 0
    with_alias = read(root).nics
    code, _, err = one("clean", "h", stdin=b64("attach_alias.xml"))
    assert code == 0 and "; pending record updated" in err
    without = read(root).nics
    changed = [n for n in without if without[n] != with_alias[n]]
    assert len(changed) == 1 and set(without[changed[0]].ips) < set(with_alias[changed[0]].ips)
    assert sorted(without) == sorted(with_alias)


def _changed() -> Doc:
    """two_nics.xml with a rule of SG 100 (NIC 0) and one of SG 101 (NIC 1) changed."""
    raw = b64("two_nics.xml").raw
    new = raw.replace(b"<![CDATA[22,80:90]]>", b"<![CDATA[22,80:91]]>").replace(b"<![CDATA[53]]>", b"<![CDATA[5353]]>")
    assert new.count(b"80:91") == 1 and new.count(b"5353") == 1
    return Doc(new)


@pytest.mark.parametrize("action, args", [("update_sg", ["one-42"]), ("update_nic", ["one-42", "1"])])
def test_an_update_puts_the_updated_nics_into_the_record(monkeypatch, root, action, args):
    """A start of the domain after update_sg or update_nic gets the rules as updated, not those of the last pre."""
    fake = FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    before = read(root).nics
    changed = _changed()
    code, _, err = one(action, *args, stdin=changed)
    assert code == 0 and "; pending record updated" in err, err
    updated = next(args[0] for name, args, _ in fake.calls if name == "update_all")
    after = read(root).nics
    assert {n: after[n] for n in (s.nic for s in updated)} == {s.nic: s for s in updated}
    assert {n: s for n, s in after.items() if n not in {s.nic for s in updated}} == \
        {n: s for n, s in before.items() if n not in {s.nic for s in updated}}
    assert after != before


def test_an_update_of_a_vm_without_a_record_makes_none(monkeypatch, root):
    FakeApi(monkeypatch)
    code, _, err = one("update_sg", "one-42", stdin=b64("two_nics.xml"))
    assert code == 0 and "pending" not in err and read(root) is None


def test_a_failed_update_leaves_the_record(monkeypatch, root):
    from netfw.runner import CommandError, Result
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    before = (root / "vm-42" / "pending.json").read_text()
    FakeApi(monkeypatch, fail={"update_all": CommandError(Result(("x",), 1, "", "boom"))})
    changed = _changed()
    assert one("update_sg", "one-42", stdin=changed)[0] == 1
    assert (root / "vm-42" / "pending.json").read_text() == before


def test_post_keeps_the_record_as_attached_and_does_not_rewrite_an_unchanged_one(monkeypatch, root):
    FakeApi(monkeypatch)
    assert one("pre", stdin=b64("two_nics.xml"))[0] == 0
    path, before = root / "vm-42" / "pending.json", read(root).nics
    inode = path.stat().st_ino
    code, _, err = one("post", "one-42", "h", stdin=b64("two_nics.xml"))
    assert code == 0 and "pending" not in err and path.stat().st_ino == inode  # the same document: not written
    code, _, err = one("post", "one-42", "h", stdin=_changed())
    assert code == 0 and "; pending record updated" in err and path.stat().st_ino != inode
    after = read(root).nics
    assert after[0].rules != before[0].rules and after[1].rules != before[1].rules and after[3] == before[3]
