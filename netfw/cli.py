"""The netfw command line: parse, build the model, plan, run. Exit 0 success, 1 failed (rolled back) or drift,
2 bad input (nothing touched)."""

from __future__ import annotations

import re
import sys
from typing import Optional

import click
import typer

from . import __version__

# Imports are placed where they are needed: OpenNebula starts netfw once per driver action, and `--help`, usage
# errors and bad input need neither loguru (~30 ms, it imports asyncio) nor the kernel-facing modules (sh).

app = typer.Typer(
    help="Per-VM firewall layer for KVM hypervisors: one network namespace per VM, one firewall bridge per NIC.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

STATE_HELP = "Where netfw keeps what it applied (env NETFW_STATE_DIR)."


_verbose: Optional[bool] = None  # --verbose as the group callback saw it; logging is set up on first use


def _logger():
    """loguru's logger with the CLI's one stderr handler, added when a command first needs it (it runs, or fails):
    `netfw attach --help` and usage errors, which the group callback also precedes, need neither loguru (~30 ms,
    it imports asyncio) nor its handler (~4 ms)."""
    global _verbose
    from loguru import logger

    if _verbose is not None:
        logger.remove()
        # "LEVEL: message" is also what OpenNebula expects of a driver's stderr (INFO:, ERROR:, DEBUG:).
        logger.add(sys.stderr, level="DEBUG" if _verbose else "INFO", format="{level}: {message}", colorize=False)
        _verbose = None
    return logger


def _version(value: bool) -> None:
    if value:
        typer.echo(f"netfw {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every command with its full argv (DEBUG)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    backend: Optional[str] = typer.Option(
        None, "--backend", envvar="NETFW_IPTABLES_BACKEND", click_type=click.Choice(["auto", "nft", "legacy"]),
        help="iptables backend for new attachments: auto (the system's default), nft or legacy. "
             "A NIC keeps the backend it was attached with."),
) -> None:
    """netfw: per-VM firewall namespaces for OpenNebula-style clouds."""
    import os

    global _verbose
    if ctx.invoked_subcommand != "one":  # `one` sets up the driver's own (a loguru handler costs ~4 ms to add)
        _verbose = verbose  # set up by _logger() when the command runs: this callback also precedes `attach --help`
    if backend:
        os.environ["NETFW_IPTABLES_BACKEND"] = backend


def fail(code: int, message: str) -> None:
    """One line on stderr, then exit with code."""
    _logger().error("{}", message.splitlines()[0] if code == 2 else message)
    raise typer.Exit(code)


def guarded(fn):
    """Run fn(); map InputError to exit 2, a rolled-back failure or command error to exit 1; an OS error (a file
    netfw could not use) to one line and exit 1, never a traceback."""
    from .model import InputError
    from .runner import CommandError
    from .transaction import TransactionError

    _logger()  # the INFO line of every step goes to stderr
    try:
        return fn()
    except InputError as e:
        fail(2, str(e))
    except TransactionError as e:
        # on the ERROR line itself, not after the failing input lines a *-restore error carries below it
        first, _, context = str(e).partition("\n")
        fail(1, (f"{first} (rolled back)" if not e.undo_failures else first) + (f"\n{context}" if context else ""))
    except CommandError as e:
        fail(1, str(e))
    except OSError as e:
        fail(1, f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))


def emit(outcome, as_json: bool) -> None:
    if as_json:
        import json

        typer.echo(json.dumps(outcome.as_dict(), indent=1))
    elif outcome.commands:
        typer.echo("\n".join(outcome.commands))
    else:
        done = "; ".join(outcome.changed) if outcome.changed else "nothing to change"
        which = f"NIC {outcome.nic}" if outcome.nic is not None else "NICs"
        typer.echo(f"{outcome.action} VM {outcome.vm} {which}: {done}")


class _Id(click.ParamType):
    """A VM or NIC id: decimal digits only (Python's int() also takes '+1', ' 1', '1_0' and other scripts' digits)."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,10}", value):
            self.fail(f"{value!r} is not an id (decimal digits, at most 10)", param, ctx)
        return int(value)


ID = _Id()
VM_ARG = typer.Argument(..., click_type=ID, help="VM id (non-negative integer).")
NIC_ARG = typer.Argument(..., click_type=ID, help="NIC id (non-negative integer).")
RULES_OPT = typer.Option(None, "--rules", help="File of a JSON list of SECURITY_GROUP_RULE objects ('-': stdin; "
                                               "'[]': nothing allowed). Without it: security group 0, allow all.")
MAC_OPT = typer.Option(None, "--mac", help="The NIC's MAC (MAC spoofing filter).")
IP_OPT = typer.Option(None, "--ip", help="An address of the NIC, IPv4 or IPv6 (repeatable; IP spoofing filter).")
FMAC_OPT = typer.Option(None, "--filter-mac-spoofing/--no-filter-mac-spoofing", help="Drop frames from other MACs.")
FIP_OPT = typer.Option(None, "--filter-ip-spoofing/--no-filter-ip-spoofing",
                       help="Drop packets and ARP from addresses that are not the NIC's.")
def _bw(flag: str, what: str, attribute: str):
    return typer.Option(None, flag, min=1, help=f"{what} (OpenNebula's {attribute}).")


IN_AVG_OPT = _bw("--inbound-avg", "Average rate to the VM, KB/s", "INBOUND_AVG_BW")
IN_PEAK_OPT = _bw("--inbound-peak", "Peak rate to the VM, KB/s", "INBOUND_PEAK_BW")
IN_BURST_OPT = _bw("--inbound-burst", "Burst at the peak rate to the VM, KB", "INBOUND_PEAK_KB")
OUT_AVG_OPT = _bw("--outbound-avg", "Average rate from the VM, KB/s", "OUTBOUND_AVG_BW")
OUT_PEAK_OPT = _bw("--outbound-peak", "Peak rate from the VM, KB/s", "OUTBOUND_PEAK_BW")
OUT_BURST_OPT = _bw("--outbound-burst", "Burst at the peak rate from the VM, KB", "OUTBOUND_PEAK_KB")


def _limits(**given):
    """A Bandwidth from the --inbound-*/--outbound-* options, None when none was given."""
    from .model import Bandwidth

    return Bandwidth(**given) if any(v is not None for v in given.values()) else None


ROUTER_OPT = typer.Option(None, "--router/--no-router",
                          help="The VM may send DHCP server replies and IPv6 router advertisements.")
XML_OPT = typer.Option(None, "--vm-xml", help="OpenNebula VM document, XML or base64 ('-': stdin); "
                                              "gives bridge, tap, MTU, addresses, filters and rules.")
CT_MAX_OPT = typer.Option(None, "--conntrack-max", help="Conntrack entries the NIC may hold in each IP family, half "
                                                        "of them from one source (a flow above is dropped); default "
                                                        "8192.")
DRY_OPT = typer.Option(False, "--dry-run", help="Print the commands that would run; change nothing.")
JSON_OPT = typer.Option(False, "--json", help="Machine-readable output.")
STATE_OPT = typer.Option(None, "--state-dir", help=STATE_HELP)


def _read(source: str, what: str) -> bytes:
    """At most MAX_INPUT bytes of FILE, or of standard input for '-': more is refused, never read (/dev/zero)."""
    from .document import MAX_INPUT
    from .model import InputError

    if not source:
        raise InputError(f"{what}: an empty name is neither a file nor '-'")
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(MAX_INPUT + 1)
    except OSError as e:
        raise InputError(f"cannot read {source}: {e.strerror}") from None
    if len(data) > MAX_INPUT:
        raise InputError(f"{what} {source}: larger than {MAX_INPUT} bytes")
    return data


def _rules(source: str):
    """The rules of a --rules file ('-': stdin) as Rules; () for '[]' (nothing allowed)."""
    from .model import InputError
    from .rules import load_rules_json

    try:
        text = _read(source, "--rules").decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--rules {source}: not UTF-8 ({e.reason} at byte {e.start})") from None
    return load_rules_json(text)


def _from_document(vm: int, nic: int, vm_xml: str, **flags):
    """The NIC's spec from an OpenNebula VM document; flags other than --tap cannot be mixed with it."""
    from . import one
    from .model import InputError

    mixed = ["--inbound-*/--outbound-*" if k == "bandwidth" else f"--{k.replace('_', '-')}"
             for k, v in flags.items() if v not in (None, [], ())]
    if mixed:
        raise InputError(f"--vm-xml gives the NIC's settings: do not combine it with {', '.join(mixed)}")
    return one.parse_vm(_read(vm_xml, "--vm-xml"), vm=vm).nic(nic).spec


def _spec(vm, nic, bridge, tap, rules, mac, ip, filter_mac, filter_ip, router, vm_xml, bandwidth=None):
    """One NicSpec from the command line (flags, a rules file or a VM document): validated, nothing touched.

    NicSpec validates every value (--ip and --mac included); `--rules ""` is an error, never "no rules given".
    """
    import dataclasses

    from .model import InputError, NicSpec

    if vm_xml is not None:
        spec = _from_document(vm, nic, vm_xml, bridge=bridge, rules=rules, mac=mac, ip=ip,
                              filter_mac_spoofing=filter_mac, filter_ip_spoofing=filter_ip, router=router,
                              bandwidth=bandwidth)
        return spec if tap is None else dataclasses.replace(spec, tap=tap)
    if not bridge:
        raise InputError("--bridge (or --vm-xml) is required")
    return NicSpec(vm=vm, nic=nic, bridge=bridge, tap=tap or "", mac=mac, ips=tuple(ip or ()),
                   filter_mac=bool(filter_mac), filter_ip=bool(filter_ip), router=bool(router),
                   rules=_rules(rules) if rules is not None else None, bandwidth=bandwidth)


@app.command()
def attach(
    vm: int = VM_ARG,
    nic: int = NIC_ARG,
    bridge: Optional[str] = typer.Option(None, "--bridge", "-b", help="The VN bridge the tap is on now."),
    tap: Optional[str] = typer.Option(None, "--tap", help="The VM tap (default one-VM-NIC)."),
    rules: Optional[str] = RULES_OPT,
    mac: Optional[str] = MAC_OPT,
    ip: Optional[list[str]] = IP_OPT,
    filter_mac_spoofing: Optional[bool] = FMAC_OPT,
    filter_ip_spoofing: Optional[bool] = FIP_OPT,
    router: Optional[bool] = ROUTER_OPT,
    inbound_avg: Optional[int] = IN_AVG_OPT,
    inbound_peak: Optional[int] = IN_PEAK_OPT,
    inbound_burst: Optional[int] = IN_BURST_OPT,
    outbound_avg: Optional[int] = OUT_AVG_OPT,
    outbound_peak: Optional[int] = OUT_PEAK_OPT,
    outbound_burst: Optional[int] = OUT_BURST_OPT,
    vm_xml: Optional[str] = XML_OPT,
    conntrack_max: Optional[int] = CT_MAX_OPT,
    dry_run: bool = DRY_OPT,
    as_json: bool = JSON_OPT,
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Put VM NIC behind its own firewall: namespace, firewall bridge, veth, rules, then cut-over of the tap."""
    import dataclasses

    from . import api

    def go():
        limits = _limits(inbound_avg=inbound_avg, inbound_peak=inbound_peak, inbound_burst=inbound_burst,
                         outbound_avg=outbound_avg, outbound_peak=outbound_peak, outbound_burst=outbound_burst)
        spec = _spec(vm, nic, bridge, tap, rules, mac, ip, filter_mac_spoofing, filter_ip_spoofing, router, vm_xml,
                     limits)
        if conntrack_max is not None:
            spec = dataclasses.replace(spec, conntrack_max=conntrack_max)
        return api.attach(spec, dry_run=dry_run, state_dir=state_dir)

    emit(guarded(go), as_json)


@app.command()
def update(
    vm: int = VM_ARG,
    nic: int = NIC_ARG,
    rules: Optional[str] = typer.Option(None, "--rules", help="JSON list of SECURITY_GROUP_RULE objects that "
                                                                "replaces the NIC's rules ('-': stdin)."),
    mac: Optional[str] = MAC_OPT,
    ip: Optional[list[str]] = IP_OPT,
    filter_mac_spoofing: Optional[bool] = FMAC_OPT,
    filter_ip_spoofing: Optional[bool] = FIP_OPT,
    router: Optional[bool] = ROUTER_OPT,
    inbound_avg: Optional[int] = IN_AVG_OPT,
    inbound_peak: Optional[int] = IN_PEAK_OPT,
    inbound_burst: Optional[int] = IN_BURST_OPT,
    outbound_avg: Optional[int] = OUT_AVG_OPT,
    outbound_peak: Optional[int] = OUT_PEAK_OPT,
    outbound_burst: Optional[int] = OUT_BURST_OPT,
    vm_xml: Optional[str] = XML_OPT,
    conntrack_max: Optional[int] = CT_MAX_OPT,
    dry_run: bool = DRY_OPT,
    as_json: bool = JSON_OPT,
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Replace an attached NIC's rules atomically; options not given keep what was last applied."""
    from . import api, state
    from .model import InputError

    def go():
        limits = _limits(inbound_avg=inbound_avg, inbound_peak=inbound_peak, inbound_burst=inbound_burst,
                         outbound_avg=outbound_avg, outbound_peak=outbound_peak, outbound_burst=outbound_burst)
        if vm_xml is not None:
            spec = _from_document(vm, nic, vm_xml, rules=rules, mac=mac, ip=ip, filter_mac_spoofing=filter_mac_spoofing,
                                  filter_ip_spoofing=filter_ip_spoofing, router=router, bandwidth=limits)
            return api.update(_kept_cap(spec, conntrack_max, state_dir), dry_run=dry_run, state_dir=state_dir)
        applied = state.load(state.state_dir(state_dir), vm, nic)
        if applied is None:
            raise InputError(f"VM {vm} NIC {nic} is not attached (no record in {state.state_dir(state_dir)})")
        changes = {"mac": mac, "ips": tuple(ip) if ip else None, "filter_mac": filter_mac_spoofing,
                   "filter_ip": filter_ip_spoofing, "router": router,
                   "rules": _rules(rules) if rules is not None else None, "bandwidth": limits,
                   "conntrack_max": conntrack_max}
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            raise InputError("nothing to update: give --rules, --vm-xml, --conntrack-max, an identity option or a "
                             "bandwidth limit")
        import dataclasses
        return api.update(dataclasses.replace(applied.spec, **changes), dry_run=dry_run, state_dir=state_dir)

    emit(guarded(go), as_json)


def _kept_cap(spec, conntrack_max: int | None, state_dir: str | None):
    """spec (from a VM document, which carries no conntrack cap) with --conntrack-max, else with the NIC's recorded
    cap: a document never resets it to the default."""
    import dataclasses

    from . import state

    if conntrack_max is None:
        applied = state.load(state.state_dir(state_dir), spec.vm, spec.nic)
        if applied is None:
            return spec
        conntrack_max = applied.spec.conntrack_max
    return dataclasses.replace(spec, conntrack_max=conntrack_max)


@app.command()
def detach(
    vm: int = VM_ARG,
    nic: int = NIC_ARG,
    bridge: Optional[str] = typer.Option(
        None, "--bridge", "-b", help="VN bridge to return the tap to, only used when netfw cannot tell it."),
    dry_run: bool = DRY_OPT,
    as_json: bool = JSON_OPT,
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Return the tap to its VN bridge and remove the NIC's firewall; succeeds when parts are already gone."""
    from . import api

    emit(guarded(lambda: api.detach(vm, nic, dry_run=dry_run, state_dir=state_dir, bridge=bridge)), as_json)


@app.command()
def verify(
    vm: int = VM_ARG,
    nic: Optional[int] = typer.Argument(None, click_type=ID, help="NIC id (default: every NIC netfw attached)."),
    vm_xml: Optional[str] = typer.Option(None, "--vm-xml", help="Compare with this OpenNebula VM document "
                                                                "instead of what was last applied."),
    as_json: bool = JSON_OPT,
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Check every object and relation attach made; exit 0 when all hold, 1 with the list of drift."""
    from . import api
    from .model import InputError

    def go():
        expected = None
        if vm_xml is not None:
            if nic is None:
                raise InputError("verify --vm-xml needs the NIC id")
            expected = _kept_cap(_from_document(vm, nic, vm_xml), None, state_dir)
        return api.verify(vm, nic, state_dir=state_dir, expected=expected)

    report = guarded(go)
    ok = not any(report.values())
    if as_json:
        import json

        typer.echo(json.dumps({"vm": vm, "ok": ok, "nics": {str(n): {"ok": not d, "drift": d}
                                                             for n, d in report.items()}}, indent=1))
    else:
        for n, drift in report.items():
            typer.echo(f"VM {vm} NIC {n}: " + ("ok" if not drift else f"{len(drift)} problem(s)"))
            for line in drift:
                typer.echo(f"  - {line}")
    raise typer.Exit(0 if ok else 1)


@app.command()
def status(
    vm: Optional[int] = typer.Argument(None, click_type=ID, help="VM id: its NICs' counters, rules and conntrack table "
                                                         "(default: every NIC netfw knows, with its health)."),
    nic: Optional[int] = typer.Argument(None, click_type=ID, help="NIC id (default: every NIC of the VM)."),
    as_json: bool = JSON_OPT,
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Health of every VM NIC netfw knows (attached, drift, stale, orphan, error), or one VM's traffic counters,
    drops, rule counters and conntrack table; exit 0 when all are attached and clean, 1 otherwise."""
    import json

    from . import health
    from . import status as view

    if vm is None:
        healths = guarded(lambda: health.survey(state_dir))
        ok = health.all_attached(healths)
        if as_json:
            typer.echo(json.dumps({"ok": ok, "nics": [h.as_dict() for h in healths]}, indent=1))
        else:
            typer.echo("\n".join(view.host_lines(healths)))
        raise typer.Exit(0 if ok else 1)
    result = guarded(lambda: view.vm_status(vm, nic, state_dir))
    typer.echo(json.dumps(result.as_dict(), indent=1) if as_json else "\n".join(view.vm_lines(result)))
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def gc(
    dry_run: bool = DRY_OPT,
    as_json: bool = JSON_OPT,
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Remove stale records (no kernel object left: after a reboot), orphan objects (netfw's, without a record), what
    killed runs left (journals) and the NICs whose tap is gone (a VM that ended without clean), each by a detach that
    puts a tap netfw holds back on its VN bridge first, each VM decided under its lock; print what it removes. Never
    touches a link without netfw's alias. Exit 1 when something had to be left."""
    import json

    from . import gc as collector

    items = guarded(lambda: collector.collect(state_dir, dry_run=dry_run))
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "items": [i.as_dict() for i in items]}, indent=1))
    else:
        verb = "would remove" if dry_run else "removed"
        for i in items:
            what = f"VM {i.vm}" + (f" NIC {i.nic}" if i.nic is not None else "") + f" ({i.health})"
            if i.error:
                typer.echo(f"{what}: left: {i.error}")
            else:
                typer.echo(f"{what}: {verb}" + "".join(f"\n  {line}" for line in i.done))
        if not items:
            typer.echo("nothing to collect")
    raise typer.Exit(1 if any(i.error for i in items) else 0)


@app.command()
def metrics(
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write to FILE atomically (for "
                                         "node_exporter's textfile collector: a *.prom file in its directory) "
                                         "instead of standard output."),
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Prometheus text exposition of every attached VM: packets and bytes accepted and dropped, drops by reason,
    rule counters, conntrack entries and cap, NIC health. Exit 1 when something could not be read."""
    from . import metrics as exposition

    text, errors = guarded(lambda: exposition.collect(state_dir))
    if output:
        guarded(lambda: exposition.write_atomically(output, text))
    else:
        typer.echo(text, nl=False)
    for error in errors:
        _logger().error("{}", error)
    raise typer.Exit(1 if errors else 0)


@app.command()
def log(
    vm: int = VM_ARG,
    nic: Optional[int] = typer.Argument(None, click_type=ID, help="NIC id (default: every NIC of the VM)."),
    as_json: bool = JSON_OPT,
    count: Optional[int] = typer.Option(None, "--count", "-n", min=1, help="Stop after N packets."),
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Stream the VM's dropped packets as they happen, one per line: time, NIC, direction, protocol, addresses,
    ports, why (no rule matched, anti-spoofing, conntrack cap, ethertype). Rate-limited in the kernel per NIC."""
    import json

    from . import logcmd
    from .nflog import NflogError

    def emit(entry: dict) -> None:
        print(json.dumps(entry) if as_json else logcmd.line(entry), flush=True)

    def go():
        try:
            return logcmd.stream(vm, nic, count=count, state_dir=state_dir, emit=emit,
                                 ready=lambda: _logger().info("listening for VM {}'s dropped packets", vm))
        except NflogError as e:
            fail(1, str(e))

    guarded(go)


class OneCommand(typer.core.TyperCommand):
    """`netfw one`: a driver action, or, when the first word is install or uninstall, that command with its own
    options (netfw/install_cli.py), so that the driver actions' parsing stays exactly as it is."""

    _KEY = "netfw.one.setup"

    def parse_args(self, ctx, args):
        from .install_cli import COMMANDS

        if args and args[0] in COMMANDS:
            ctx.meta[self._KEY] = list(args)
            return []
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        setup = ctx.meta.pop(self._KEY, None)
        if setup is None:
            return super().invoke(ctx)
        from .install_cli import app as setup_app

        group = typer.main.get_command(setup_app)
        with group.make_context(ctx.info_name, setup, parent=ctx.parent) as sub:
            return group.invoke(sub)


@app.command(cls=OneCommand)
def one(
    ctx: typer.Context,
    action: str = typer.Argument(..., help="pre, post, clean, update_sg or update_nic; or install / uninstall on "
                                           "the front-end (netfw one install --help)."),
    args: Optional[list[str]] = typer.Argument(
        None, help="As OpenNebula passes them: post DEPLOY_ID HOST, clean HOST, update_sg DEPLOY_ID, "
                   "update_nic DEPLOY_ID VNET_ID."),
    vn_mads: Optional[str] = typer.Option(
        None, "--vn-mads", help="Comma list of the VN_MADs whose NICs netfw handles "
                                "(env NETFW_VN_MADS; default fw,802.1Q,vxlan,bridge,ovswitch,ovswitch_vxlan)."),
    backend: Optional[str] = typer.Option(
        None, "--backend", help="iptables backend for NICs attached from now on: auto, nft or legacy."),
    conntrack_max: Optional[int] = typer.Option(
        None, "--conntrack-max", help="Conntrack entries each handled NIC may hold per IP family (default 8192)."),
    log_stdout: bool = typer.Option(
        False, "--log-stdout", help="Run as a hook in a driver's <action>.d/ (the wrappers set it there): INFO and "
                                    "WARNING lines on stdout, which the driver logs; the ERROR line on stderr."),
    dry_run: bool = DRY_OPT,
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """OpenNebula network-driver action: the base64 VM document on stdin; exit 0, 1 (failed, rolled back) or
    2 (bad input, nothing touched), with one `ERROR: ...` line on stderr. On the front-end, `netfw one install`
    and `netfw one uninstall` hook netfw into OpenNebula's drivers (see their --help)."""
    from . import driver
    from .document import MAX_INPUT

    driver.setup_logging(bool(ctx.parent and ctx.parent.params.get("verbose")), to_stdout=log_stdout)
    if backend:
        import os

        os.environ["NETFW_IPTABLES_BACKEND"] = backend
    # Read with its bound: a document larger than MAX_INPUT is refused without being read whole (`< /dev/zero`).
    document = b"" if sys.stdin.isatty() else sys.stdin.buffer.read(MAX_INPUT + 1)  # empty: exit 2
    options = {"vn_mads": vn_mads, "state_dir": state_dir, "dry_run": dry_run, "conntrack_max": conntrack_max}
    raise typer.Exit(driver.main(action, list(args or ()), document, options, echo=typer.echo))


#: Longest message of an unforeseen error kept on its ERROR line (it may quote megabytes of input).
MAX_UNEXPECTED = 1000


def unexpected(error: Exception) -> str:
    """The one ERROR line for an error netfw did not foresee: its type and message, on one line, bounded. Pure."""
    text = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if len(text) > MAX_UNEXPECTED:
        text = text[:MAX_UNEXPECTED] + f"... ({len(text)} characters)"
    return f"ERROR: netfw: unexpected {type(error).__name__}" + (f": {text}" if text else "")


def run() -> None:
    """Console-script entry point: usage errors become one `ERROR:` line and exit 2; any error netfw did not
    foresee one `ERROR:` line naming its type and exit 1, never a traceback (the last guard: the caller, often
    OpenNebula, reads the ERROR line and the exit code)."""
    try:  # older typer releases use click; newer ones carry their own copy of it
        from click.exceptions import UsageError
    except ImportError:
        from typer._click.exceptions import UsageError

    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # plain `netfw`: the help, as asked
            print(e.format_message())
            sys.exit(2)
        where = f"{e.ctx.command_path}: " if e.ctx else ""
        print(f"ERROR: {where}{e.format_message()} (see --help)", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - anything not foreseen: one line, exit 1
        print(unexpected(e), file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
