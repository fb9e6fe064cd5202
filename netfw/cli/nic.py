"""The commands on one NIC: attach, update, detach, verify, and the NicSpec they build from flags, a rules file or a
VM document (validated, nothing touched)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .base import (CT_MAX_OPT, DRY_OPT, FIP_OPT, FMAC_OPT, ID, IN_AVG_OPT, IN_BURST_OPT, IN_PEAK_OPT, IP_OPT, JSON_OPT,
                   MAC_OPT, NIC_ARG, OUT_AVG_OPT, OUT_BURST_OPT, OUT_PEAK_OPT, ROUTER_OPT, RULES_OPT, STATE_OPT, VM_ARG,
                   XML_OPT, _limits, app, emit, guarded)


def _read(source: str, what: str) -> bytes:
    """At most MAX_INPUT bytes of FILE, or of standard input for '-': more is refused, never read (/dev/zero)."""
    from netfw.model.document import MAX_INPUT
    from netfw.model.spec import InputError

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
    from netfw.model.spec import InputError
    from netfw.model.rules import load_rules_json

    try:
        text = _read(source, "--rules").decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--rules {source}: not UTF-8 ({e.reason} at byte {e.start})") from None
    return load_rules_json(text)


def _from_document(vm: int, nic: int, vm_xml: str, **flags):
    """The NIC's spec from an OpenNebula VM document; flags other than --tap cannot be mixed with it."""
    from netfw.opennebula import one
    from netfw.model.spec import InputError

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

    from netfw.model.spec import InputError, NicSpec

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

    from netfw import api

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
    from netfw import api
    from netfw import state
    from netfw.model.spec import InputError

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

    from netfw import state

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
    from netfw import api

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
    from netfw import api
    from netfw.model.spec import InputError

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
