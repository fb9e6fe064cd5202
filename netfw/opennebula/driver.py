"""OpenNebula network-driver actions on top of the API: pre, post, clean, update_sg, update_nic.

OpenNebula runs `/var/tmp/one/vnm/<VN_MAD>/<action>` on the hypervisor with the base64 VM document on standard
input and the action's positional arguments (see docs/OPENNEBULA.md and docs/opennebula.md). Each action here reads
that document with netfw.opennebula.one, picks the NICs netfw handles, and calls the API:

| action     | arguments          | what netfw does                                                            |
|------------|--------------------|----------------------------------------------------------------------------|
| pre        | (none)             | check the host and the document; the VM's pending record (netfw.state.pending)   |
| post       | DEPLOY_ID HOST     | api.attach_all: every handled NIC in one transaction                       |
| clean      | HOST               | api.detach per handled NIC (gone taps tolerated), the pending record goes  |
| update_sg  | DEPLOY_ID          | api.update_all: the rules of every handled NIC, atomically                 |
| update_nic | DEPLOY_ID VNET_ID  | the handled NICs on VNET_ID: rules and addresses (update_all), then MTU    |

post, update_sg and update_nic then remove, for each NIC they attached or updated whose driver may have built them,
the legacy security groups of OpenNebula's filter driver named after that NIC (netfw.opennebula.legacy, issue 20): once netfw's
own firewall holds the NIC, it is filtered by netfw alone.

Handled NICs: VN_MAD in the configured list. In pre, post and clean, ATTACH=YES (a hot attach or detach) narrows
them (one.VmDoc.hotplug): on a NIC, that NIC only; on a PCI NIC, none; on a NIC_ALIAS, its parent NIC, which post
re-applies with the alias's addresses and clean re-applies without them (api.update_all: never a detach of the
parent). update_sg and update_nic ignore ATTACH: every handled NIC gets the document's rules.
Errors: an input problem raises InputError (exit 2, nothing touched); a failed action exit 1. `main` prints exactly
one `ERROR: ...` line for either, never a traceback, as OpenNebula reads a driver's stderr.
"""

from __future__ import annotations

import sys

from loguru import logger

from netfw import api, runner
from . import legacy, one
from netfw import state
from netfw.state import pending
from .driver_call import ActionError, Call, Config, Result, arguments, config, vnet_id, with_settings
from netfw.errors import InputError
from netfw.model.spec import NicSpec
from netfw.steps.base import show



def _which(specs: list[NicSpec]) -> str:
    return ", ".join(str(s.nic) for s in specs)


def _result(call: Call, action: str, specs: list[NicSpec], outcomes: list[api.Outcome],
            extra: Result | None = None) -> Result:
    changed = sum(len(o.changed) for o in outcomes)
    summary = (f"netfw {action}: VM {call.doc.vm} NIC {_which(specs)}: "
               + (f"{changed} change(s)" if changed else "no change") + (extra.summary if extra else "")
               + _left(call.doc, call.cfg))
    return Result(summary, [c for o in outcomes for c in o.commands] + (extra.commands if extra else []))


#: VN_MADs whose drivers never call OpenNebula's filter driver (SGDriver): no legacy security groups to look for.
#: Any other driver of a handled NIC (fw, 802.1Q, vxlan, elastic, nodeport, one not known here) may have built them.
NO_LEGACY_SG = ("bridge", "ovswitch", "ovswitch_vxlan", "dummy")


def without_legacy(call: Call, specs: list[NicSpec]) -> Result:
    """Remove the legacy security groups of these NICs (netfw.opennebula.legacy), now that netfw's firewall holds them: the
    part of the summary line that says so, and in a dry run the commands it would run."""
    mads = {n.spec.nic: n.vn_mad for n in call.nics}
    nics = [s.nic for s in specs if mads.get(s.nic) not in NO_LEGACY_SG]
    if not nics:
        return Result("")
    if not call.cfg.dry_run:
        found = legacy.remove(call.doc.vm, nics)
        commands: list[str] = []
    else:
        with runner.recording() as recorded:
            found = legacy.remove(call.doc.vm, nics)
        commands = show([(list(argv), stdin) for argv, stdin in recorded.commands])
    done, what = sorted(found.found), "to remove" if call.cfg.dry_run else "removed"
    return Result(f"; legacy security groups {what}: NIC {', '.join(map(str, done))}" if done else "", commands)


def _left(doc: one.VmDoc, cfg: Config) -> str:
    """'; not handled: 1 NIC with VN_MAD dummy (3)' for the summary line, "" when netfw handles every NIC."""
    left = doc.not_handled(cfg.vn_mads)
    return f"; not handled: {left}" if left else ""


# --- the actions ----------------------------------------------------------------------------------------------------


def pre(call: Call) -> Result:
    """Check the host (the tap does not exist yet; the document was validated when it was parsed), then record what
    the handled NICs need for the libvirt qemu hook: the VM's pending record (netfw.state.pending)."""
    api.check_host()
    vm, which = call.doc.vm, _which(call.specs)
    if call.cfg.dry_run:
        return Result(f"netfw pre: VM {vm}: host ready for NIC {which}; pending record not written (dry run)")
    done = pending.on_pre(call.cfg.state_dir, vm, call.specs, hot=call.doc.hotplug_of is not None)
    return Result(f"netfw pre: VM {vm}: host ready for NIC {which}; pending for the libvirt hook: NIC "
                  f"{', '.join(map(str, sorted(done.nics)))}")


def _forget(call: Call | None, doc: one.VmDoc, cfg: Config) -> str:
    """clean: the pending record goes, or its hot-detached NIC's part (netfw.state.pending.on_clean)."""
    if cfg.dry_run or (doc.hotplug_of is not None and call is None):
        return ""
    hot = list(call.nics) if doc.hotplug_of is not None else None
    return pending.on_clean(cfg.state_dir, doc.vm, doc.hotplug_of, hot)


def post(call: Call) -> Result:
    """Every handled NIC behind its firewall, in one transaction (one NIC fails: all of this call undone)."""
    outcome = api.attach_all(call.specs, dry_run=call.cfg.dry_run, state_dir=call.cfg.state_dir)
    return _result(call, "post", call.specs, [outcome], _kept(call, call.specs))


def clean(call: Call) -> Result:
    """Detach every handled NIC; go on after a failure so that as much as possible goes, then report them all.

    An alias hot-detach detaches nothing: the parent NIC keeps its firewall, without the alias's addresses.
    """
    if call.doc.hotplug_of == "alias":
        return _without_alias(call)
    outcomes, failures = [], []
    for spec in call.specs:
        try:
            outcomes.append(api.detach(spec.vm, spec.nic, bridge=spec.bridge, dry_run=call.cfg.dry_run,
                                       state_dir=call.cfg.state_dir))
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - reported with its NIC; the other NICs are still cleaned
            failures.append(f"NIC {spec.nic}: {e}")
    if failures:
        raise ActionError(f"netfw clean: VM {call.doc.vm}: " + "; ".join(failures))
    return _result(call, "clean", call.specs, outcomes, Result(_forget(call, call.doc, call.cfg)))


def _without_alias(call: Call) -> Result:
    """Re-apply the parents of a hot-detached alias without its addresses (one transaction, flows of the NIC
    re-checked); a parent netfw has no record of is not behind netfw, and is left alone."""
    root = state.state_dir(call.cfg.state_dir)
    specs = [n.alias_detached for n in call.nics]
    attached = [s for s in specs if state.load(root, s.vm, s.nic) is not None]
    for spec in specs:
        if spec not in attached:
            logger.info("NIC {} is not attached (no record in {}): nothing to re-apply", spec.nic, root)
    forgot = _forget(call, call.doc, call.cfg)
    if not attached:
        return Result(f"netfw clean: VM {call.doc.vm} NIC {_which(specs)}: not attached, nothing to do{forgot}")
    outcome = api.update_all(attached, dry_run=call.cfg.dry_run, state_dir=call.cfg.state_dir)
    return _result(call, "clean", attached, [outcome], Result(forgot))


def update_sg(call: Call) -> Result:
    """Replace the rules of every handled NIC atomically; a handled NIC that is not attached is an input error."""
    outcome = api.update_all(call.specs, dry_run=call.cfg.dry_run, state_dir=call.cfg.state_dir)
    return _result(call, "update_sg", call.specs, [outcome], _kept(call, call.specs))


def update_nic(call: Call) -> Result:
    """The handled NICs on VNET_ID: addresses, filters, rules and MTU, all in one transaction (api.update_all).

    The tap belongs to the hypervisor: an MTU change reaches the firewall bridge and both veth ends.
    """
    vnet, cfg = vnet_id(call.args), call.cfg
    specs = [n.spec for n in call.nics if n.network_id == vnet]
    if not specs:
        return Result(f"netfw update_nic: VM {call.doc.vm}: no handled NIC on virtual network {vnet}")
    outcome = api.update_all(specs, dry_run=cfg.dry_run, state_dir=cfg.state_dir)
    return _result(call, "update_nic", specs, [outcome], _kept(call, specs))


def _kept(call: Call, specs: list[NicSpec]) -> Result:
    """After an attach or update: the pending record holds those NICs as they are now (the next start of the domain
    attaches them with these rules, not those of the last pre), then the legacy security groups go."""
    updated = "" if call.cfg.dry_run else pending.on_update(call.cfg.state_dir, call.doc.vm, specs)
    legacy_part = without_legacy(call, specs)
    return Result(updated + legacy_part.summary, legacy_part.commands)


_HANDLERS = {"pre": pre, "post": post, "clean": clean, "update_sg": update_sg, "update_nic": update_nic}
#: The actions that a hot attach or detach (ATTACH=YES) narrows to what it concerns; the others ignore ATTACH.
HOTPLUG_ACTIONS = ("pre", "post", "clean")


def run(action: str, args: list[str], document: bytes | str, cfg: Config) -> Result:
    """Run one driver action on a VM document (plain XML or base64). Raises InputError before touching anything."""
    named = arguments(action, args)
    doc = one.parse_vm(document)
    if not doc.drivers:  # oned runs a network driver only for a VM with such an element: this is no driver document
        raise InputError("VM document: no NIC, NIC_ALIAS or PCI element under TEMPLATE has a VN_MAD: not a "
                         "document oned sends to a network driver")
    if doc.pci_nics:
        logger.info("VM {}: PCI NIC {} not handled (a passthrough device has no tap to filter)", doc.vm,
                    ", ".join(doc.pci_nics))
    nics = [with_settings(n, cfg)
            for n in (doc.hotplug(cfg.vn_mads) if action in HOTPLUG_ACTIONS else doc.handled(cfg.vn_mads))]
    logger.debug("{} VM {} {}: NICs [{}] of [{}], ATTACH on {}", action, doc.vm, named, _which([n.spec for n in nics]),
                 ", ".join(f"{n.spec.nic}:{n.vn_mad or '?'}" for n in doc.nics), doc.hotplug_of or "nothing")
    if not nics:
        if action in HOTPLUG_ACTIONS and doc.hotplug_of is not None:
            what = {"nic": "NIC", "pci": "PCI NIC", "alias": "NIC_ALIAS's parent NIC"}[doc.hotplug_of]
            return Result(f"netfw {action}: VM {doc.vm}: the {what} being hot-(de)attached is not one netfw "
                          f"handles: nothing to do" + _left(doc, cfg))
        gone = _forget(None, doc, cfg) if action in ("pre", "clean") else ""  # none handled: nothing pending
        return Result(f"netfw {action}: VM {doc.vm}: no NIC with VN_MAD in {','.join(cfg.vn_mads)}: nothing to do"
                      + gone + _left(doc, cfg))
    return _HANDLERS[action](Call(doc, nics, named, cfg))


# --- the process: logging and exit codes as OpenNebula reads them ---------------------------------------------------


def _one_line(text: str) -> str:
    """A message on one line: its lines joined with ' | ' (OpenNebula shows non-prefixed lines as the error)."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip()) or "unknown error"


def _only_driver_errors(record) -> bool:
    """Keep every record but the ERROR ones of other modules: the driver prints the one ERROR line itself."""
    return record["level"].name != "ERROR" or record["name"] == __name__


def _below_error(record) -> bool:
    return record["level"].no < logger.level("ERROR").no


def _hook_format(record) -> str:
    """A hook's standard output line: the message alone for INFO (the driver prefixes `INFO: <action>: `), else
    'LEVEL: message'."""
    return ("{message}\n" if record["level"].name == "INFO" else "{level}: {message}\n")


def setup_logging(verbose: bool = False, to_stdout: bool = False) -> None:
    """'LEVEL: message' on stderr; the transaction's own ERROR lines are left to the driver's single ERROR line.

    to_stdout (`netfw one --log-stdout`, set by the wrappers when they run as a hook in `<action>.d/`): OpenNebula's
    drivers log a hook's standard output and drop its standard error when it succeeds, and put its standard error
    into the error they raise when it fails; so every line below ERROR goes to standard output, the ERROR line to
    standard error.
    """
    level = "DEBUG" if verbose else "INFO"
    logger.remove()
    if to_stdout:
        logger.add(sys.stdout, level=level, format=_hook_format, colorize=False, filter=_below_error)
        logger.add(sys.stderr, level="ERROR", format="{level}: {message}", colorize=False, filter=_only_driver_errors)
        return
    logger.add(sys.stderr, level=level, format="{level}: {message}", colorize=False, filter=_only_driver_errors)


def main(action: str, args: list[str], document: bytes | str, cfg_options: dict, echo=print) -> int:
    """Run the action and map its outcome to an exit code: 0 done, 1 failed (rolled back), 2 bad input."""
    from netfw.runner import CommandError
    from netfw.transaction import TransactionError

    try:
        cfg = config(**cfg_options)
        result = run(action, args, document, cfg)
    except InputError as e:
        logger.error("{}", _one_line(e))
        return 2
    except TransactionError as e:
        logger.error("{}", _one_line(f"{e} (rolled back)" if not e.undo_failures else e))
        return 1
    except (CommandError, ActionError) as e:
        logger.error("{}", _one_line(e))
        return 1
    except Exception as e:  # noqa: BLE001 - a driver must answer with one ERROR line, never a traceback
        logger.error("{}", _one_line(f"netfw {action}: unexpected {type(e).__name__}: {e}"))
        return 1
    for line in result.commands:
        echo(line)
    logger.info("{}", result.summary)
    return 0


