"""The commands that look: status (a host's health, a VM's counters), gc, metrics, log."""

from __future__ import annotations

from typing import Optional

import typer

from .base import DRY_OPT, ID, JSON_OPT, STATE_OPT, VM_ARG, _logger, app, fail, guarded


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

    from netfw.observe import health
    from netfw.observe import status as view

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

    from netfw.observe import gc as collector

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
    from netfw.observe import metrics as exposition

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

    from netfw.observe import logcmd
    from netfw.observe.nflog import NflogError

    def emit(entry: dict) -> None:
        print(json.dumps(entry) if as_json else logcmd.line(entry), flush=True)

    def go():
        try:
            return logcmd.stream(vm, nic, count=count, state_dir=state_dir, emit=emit,
                                 ready=lambda: _logger().info("listening for VM {}'s dropped packets", vm))
        except NflogError as e:
            fail(1, str(e))

    guarded(go)
