"""One OpenNebula driver call as netfw takes it: the driver's settings (Config: the handled VN_MADs, from
--vn-mads or NETFW_VN_MADS, the state directory, the conntrack cap), the action's positional arguments by name, the
parsed document with the NICs the action concerns (Call), and what an action returns (Result). Validated here, where
they enter; driver.py runs the actions."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field

from loguru import logger

from . import one
from netfw import state
from netfw.errors import InputError
from netfw.model.spec import NicSpec

#: The environment variable that lists the handled VN_MADs (comma-separated), when --vn-mads is not given.
VN_MADS_ENV = "NETFW_VN_MADS"

#: action -> the names of its positional arguments, as OpenNebula passes them.
ACTIONS: dict[str, tuple[str, ...]] = {
    "pre": (),
    "post": ("DEPLOY_ID", "HOST"),
    "clean": ("HOST",),
    "update_sg": ("DEPLOY_ID",),
    "update_nic": ("DEPLOY_ID", "VNET_ID"),
}

_VN_MAD_RE = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class Config:
    """How the driver runs: which NICs it handles, where its state lives, whether it only prints."""

    vn_mads: tuple[str, ...] = one.DEFAULT_VN_MADS
    state_dir: str | None = None
    dry_run: bool = False
    conntrack_max: int | None = None  # each handled NIC's conntrack cap (None: NicSpec's default)


@dataclass
class Result:
    """What an action did: lines for stdout (dry run: the commands) and a one-line summary for the VM log."""

    summary: str
    commands: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    """One driver call: the document (as parsed), the NICs this action concerns, the arguments by name."""

    doc: one.VmDoc
    nics: list[one.VmNic]
    args: dict[str, str]
    cfg: Config

    @property
    def specs(self) -> list[NicSpec]:
        return [n.spec for n in self.nics]


class ActionError(Exception):
    """The action failed for some NICs (clean goes on with the others and reports them all)."""


def parse_vn_mads(text: str | None) -> tuple[str, ...]:
    """'fw, 802.1Q,vxlan' -> ('fw', '802.1Q', 'vxlan'); None or empty -> the defaults. Pure."""
    if text is None or not text.strip():
        return one.DEFAULT_VN_MADS
    mads = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in mads if not _VN_MAD_RE.fullmatch(m)]
    if bad or not mads:
        raise InputError(f"VN_MAD list {text!r}: not a comma-separated list of driver names")
    return mads


def config(vn_mads: str | None = None, state_dir: str | None = None, dry_run: bool = False,
           conntrack_max: int | None = None) -> Config:
    """The driver configuration from options, falling back on NETFW_VN_MADS (NETFW_STATE_DIR is read by state).

    A --state-dir other than the default must exist already (and is checked now): the caller of `sudo netfw one`
    names it, and root must not create a directory wherever that caller likes (`/etc/nologin` would lock users out).
    """
    if state_dir:
        state.check_named_by_caller(state_dir)  # one message whatever is wrong: it names paths of root's
    return Config(parse_vn_mads(vn_mads if vn_mads is not None else os.environ.get(VN_MADS_ENV)), state_dir, dry_run,
                  conntrack_max)


def with_settings(nic: one.VmNic, cfg: Config) -> one.VmNic:
    """The NIC with the driver's own settings, which a VM document does not carry (the conntrack cap). Pure."""
    if cfg.conntrack_max is None:
        return nic
    cap = {"conntrack_max": cfg.conntrack_max}  # NicSpec validates it
    detached = nic.alias_detached and dataclasses.replace(nic.alias_detached, **cap)
    return dataclasses.replace(nic, spec=dataclasses.replace(nic.spec, **cap), alias_detached=detached)


def arguments(action: str, args: list[str]) -> dict[str, str]:
    """The action's positional arguments by name; missing ones are absent, extra ones are ignored (logged)."""
    if action not in ACTIONS:
        raise InputError(f"unknown driver action {action!r} (one of: {', '.join(ACTIONS)})")
    wanted = ACTIONS[action]
    if len(args) > len(wanted):
        logger.debug("{}: ignoring extra arguments {}", action, args[len(wanted):])
    named = dict(zip(wanted, args))
    if action == "update_nic":
        vnet_id(named)
    return named


def vnet_id(named: dict[str, str]) -> int:
    """The VNET_ID argument of update_nic, a number."""
    text = named.get("VNET_ID")
    if text is None:
        raise InputError("update_nic needs its arguments DEPLOY_ID VNET_ID")
    if not re.fullmatch(r"[0-9]{1,20}", text):
        raise InputError(f"VNET_ID is not a number: {text!r}")
    return int(text)
