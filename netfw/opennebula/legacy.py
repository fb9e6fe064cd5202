"""OpenNebula's legacy security groups, taken away from the NICs netfw handles (issue 20).

The `fw`, `802.1Q` and `vxlan` drivers (and any other that calls `VNMMAD::VNMDriver.filter_driver`) build a NIC's
legacy security groups in the hypervisor's own iptables, ip6tables and ipsets in their `post` (SGIPTables, read from
OpenNebula's `src/vnm_mad/remotes/lib/security_groups_iptables.rb`), with no switch to turn that off. Every one of
those objects is named after the NIC, `one-<VM>-<NIC>`:

- the chains `one-<VM>-<NIC>-i` and `-o` in the filter table of both families;
- the jumps to them: `-I opennebula -m physdev --physdev-is-bridged --physdev-in/--physdev-out <tap> -j ...`,
  `-I opennebula -d <address> -j ...-i` (routed NICs, aliases), `-I INPUT -m physdev --physdev-in <tap> -j ...-o`;
- the ipsets `one-<VM>-<NIC>-ip-spoofing`, `-ip6-spoofing` and `one-<VM>-<NIC>-<SG>-<i|o>-...` per security group.

The legacy `clean` (`nic_deactivate`) removes exactly the chains `^one-<VM>-<NIC>(-|$)`, the rules of `opennebula`
and `INPUT` that jump to `-i`/`-o`, and the ipsets `^one-<VM>-<NIC>(-|$)`, and does so without error when they are
absent; this module removes the same objects, so the legacy `clean` and `update_sg` still succeed afterwards. It
never touches the global chain `opennebula` nor its jump from `FORWARD`: it ends with `-j ACCEPT`, which is what lets
bridged traffic through a `FORWARD` chain whose policy is `DROP` (Docker's, a host firewall's), so it stays.

Reads fail closed (a failed `iptables-save` is an error, never "nothing there"); every name is checked before it
reaches a command; the rules of a family go in one `iptables-restore --noflush` (atomic); a second run finds nothing
and runs nothing. The caller removes these only after netfw's own firewall for the NIC is in force.

The legacy driver changes these tables under its own lock (`vnm_driver.rb` `lock`: an exclusive flock on
`/tmp/onevnm-<class name, downcased>-lock`, i.e. `/tmp/onevnm-vnmmad::sgdriver-lock`), and deletes its jumps by line
number (`iptables -L opennebula --line-numbers`, then `-D opennebula N`): a rule deleted by anyone else between its
read and its delete makes it delete another NIC's jump. So the whole read-and-remove runs under that lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shlex
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from loguru import logger

from netfw.model import names
from netfw import runner
from netfw.rules import script, tables
from netfw.kernel.backend import tool

#: The legacy driver's lock file: SGDriver's `lock` opens "/tmp/onevnm-#{self.class.name.downcase}-lock" and the
#: class is VNMMAD::SGDriver. Root's environment may name another (tests do); sudo's env_reset keeps oneadmin's away.
LOCK_PATH = "/tmp/onevnm-vnmmad::sgdriver-lock"
LOCK_ENV = "NETFW_LEGACY_SG_LOCK"
#: How long to wait for the legacy driver to release its lock (it holds it while it runs one process per rule).
LOCK_TIMEOUT = 120.0

#: Names the legacy driver gives a NIC's objects: its own test `^one-<VM>-<NIC>(-|$)`, plus what names may hold.
_NAME = re.compile(r"one-[0-9]+-[0-9]+(-[A-Za-z0-9_.:+-]*)?")
#: ipset's "in use" error: the kernel may keep a reference for a moment after the last rule naming the set went
#: (the legacy driver sleeps 0.5 s for that, OpenNebula issue #6299).
_IN_USE = "in use by a kernel component"
_DESTROY_TRIES = 20


def prefix(vm: int, nic: int) -> str:
    """`one-<VM>-<NIC>`, the stem of every legacy name of the NIC."""
    names.check_ids(vm, nic)
    return f"one-{vm}-{nic}"


def owned(name: str, vm: int, nic: int) -> bool:
    """Whether the legacy driver names this chain or ipset after the NIC (its `^one-<VM>-<NIC>(-|$)`). Pure."""
    stem = prefix(vm, nic)
    return (name == stem or name.startswith(stem + "-")) and _NAME.fullmatch(name) is not None


@dataclass
class Plan:
    """What to remove for a set of NICs: restore input per family, the ipsets, and a count for the log."""

    restore: dict[str, list[str]] = field(default_factory=dict)  # family -> "-D ..." / "-F c" / "-X c" lines
    ipsets: list[str] = field(default_factory=list)
    found: dict[int, list[str]] = field(default_factory=dict)  # NIC -> what of it was found (for the log)

    def empty(self) -> bool:
        return not self.ipsets and not any(self.restore.values())


def _target(rule: str) -> str | None:
    """The chain an `-A CHAIN ... -j|-g TARGET` line jumps to: iptables-save prints the target last, and a jump to
    a user chain has no target options, so the last two words. None for anything else. Pure."""
    try:
        words = shlex.split(rule)
    except ValueError:
        return None
    return words[-1] if len(words) >= 4 and words[-2] in ("-j", "-g") else None


def _nic_of(name: str | None, vm: int, nics: list[int]) -> int | None:
    return next((n for n in nics if name is not None and owned(name, vm, n)), None)


def plan_family(table: tables.Table, vm: int, nics: list[int], plan: Plan, family: str) -> None:
    """Add to plan the family's lines that take the NICs' legacy chains and every jump to them away. Pure."""
    body: list[tuple[int, str]] = []
    chains = {c: n for c in table.policies if (n := _nic_of(c, vm, nics)) is not None}
    ends = tuple(f" {c}" for c in chains)  # a jump to one of them ends so: parse only those lines
    for chain, rules in table.rules.items() if chains else ():
        if chain not in chains:  # the NIC's own chains are flushed below
            body += [(chains[t], tables.delete_line(r)) for r in rules
                     if r.endswith(ends) and (t := _target(r)) in chains]
    body += [(n, f"-F {c}") for c, n in chains.items()] + [(n, f"-X {c}") for c, n in chains.items()]
    for nic, line in body:
        plan.found.setdefault(nic, []).append(f"{family}tables {line}")
    plan.restore[family] = [line for _, line in body]


def plan(vm: int, nics: list[int], saves: dict[str, str], ipset_names: list[str]) -> Plan:
    """What to remove for VM's NICs, from `iptables-save -t filter`, `ip6tables-save -t filter` and `ipset list
    -n` of the hypervisor namespace. Pure."""
    out = Plan()
    for family in ("ip", "ip6"):
        plan_family(tables.parse_save(saves[family]), vm, nics, out, family)
    for name in ipset_names:
        nic = _nic_of(name, vm, nics)
        if nic is not None:
            out.ipsets.append(name)
            out.found.setdefault(nic, []).append(f"ipset destroy {name}")
    return out


def _read(vm: int, nics: list[int]) -> Plan:
    saves = {f: runner.read([tool(f, "save"), "-t", "filter"]).stdout for f in ("ip", "ip6")}
    sets = runner.read(["ipset", "list", "-n"]).stdout.split()
    return plan(vm, nics, saves, sets)


def _destroy(sets: list[str]) -> None:
    """Destroy the sets (one `ipset restore`), again while the kernel still holds one for a moment."""
    text = script.join(f"destroy {s}" for s in sets)
    for attempt in range(_DESTROY_TRIES):
        try:
            runner.run(["ipset", "restore"], stdin=text)
            return
        except runner.CommandError as e:
            if _IN_USE not in e.stderr or attempt == _DESTROY_TRIES - 1:
                raise
            done = set(runner.read(["ipset", "list", "-n"]).stdout.split())
            text = script.join(f"destroy {s}" for s in sets if s in done)
            time.sleep(0.1)


def _lock_path() -> str:
    return os.environ.get(LOCK_ENV) or LOCK_PATH


def _open_lock(path: str, create: bool) -> int | None:
    """The legacy driver's lock file, never through a symbolic link and never truncated. Absent and not to be
    created (a dry run): None. Created world-writable, as oneadmin's driver opens it for writing."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO put there must not block the open
    for _ in range(3):
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            if not create:
                return None
        else:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise runner.refused("legacy-lock", f"the legacy driver's lock file {path} is not a regular file")
            return fd
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue  # the driver made it meanwhile: open that one
        os.fchmod(fd, 0o666)
        return fd
    raise runner.refused("legacy-lock", f"cannot open the legacy driver's lock file {path}")


@contextmanager
def driver_lock(create: bool = True, timeout: float | None = None):
    """Hold the legacy driver's lock (exclusive flock), waiting for it at most `timeout` seconds."""
    path = _lock_path()
    try:
        fd = _open_lock(path, create)
    except OSError as e:
        raise runner.refused("legacy-lock", f"cannot open the legacy driver's lock file {path}: {e}") from None
    if fd is None:
        yield
        return
    deadline = time.monotonic() + (LOCK_TIMEOUT if timeout is None else timeout)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise runner.refused("legacy-lock", f"the legacy driver's lock {path} is held: {e}") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the flock


def remove(vm: int, nics: list[int]) -> Plan:
    """Remove the legacy security groups of VM's NICs from the hypervisor namespace: their jumps, chains (both
    families, each in one atomic restore) and ipsets. Nothing of theirs there: nothing runs. Returns what it found.
    """
    for nic in nics:
        prefix(vm, nic)
    with driver_lock(create=not runner.dry()):
        found = _read(vm, nics)
        for family, body in found.restore.items():
            if body:
                runner.run([tool(family, "restore"), "--noflush"], stdin=tables.restore_text(family, body))
        if found.ipsets:
            _destroy(found.ipsets)
    done = "would remove" if runner.dry() else "removed"
    for nic, what in found.found.items():
        logger.info("NIC {}: {} the legacy security groups of {}: {}", nic, done, prefix(vm, nic), "; ".join(what))
    return found
