"""The netfw command line: parse, build the model, plan, run. Exit 0 success, 1 failed (rolled back) or drift,
2 bad input (nothing touched)."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from loguru import logger

from . import __version__

app = typer.Typer(
    help="Per-VM firewall layer for KVM hypervisors: one network namespace per VM, one firewall bridge per NIC.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

STATE_HELP = "Where netfw keeps what it applied (env NETFW_STATE_DIR)."


def _logging(verbose: bool) -> None:
    logger.remove()
    # "LEVEL: message" is also what OpenNebula expects of a driver's stderr (INFO:, ERROR:, DEBUG:).
    logger.add(sys.stderr, level="DEBUG" if verbose else "INFO", format="{level}: {message}", colorize=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"netfw {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every command with its full argv (DEBUG)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """netfw: per-VM firewall namespaces for OpenNebula-style clouds."""
    _logging(verbose)


def fail(code: int, message: str) -> None:
    """One line on stderr, then exit with code."""
    logger.error("{}", message.splitlines()[0] if code == 2 else message)
    raise typer.Exit(code)


def guarded(fn):
    """Run fn(); map InputError to exit 2, a rolled-back failure or command error to exit 1."""
    from .model import InputError
    from .runner import CommandError
    from .transaction import TransactionError

    try:
        return fn()
    except InputError as e:
        fail(2, str(e))
    except TransactionError as e:
        fail(1, f"{e} (rolled back)" if not e.undo_failures else str(e))
    except CommandError as e:
        fail(1, str(e))


def emit(outcome, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(outcome.as_dict(), indent=1))
    elif outcome.commands:
        typer.echo("\n".join(outcome.commands))
    else:
        done = "; ".join(outcome.changed) if outcome.changed else "nothing to change"
        typer.echo(f"{outcome.action} VM {outcome.vm} NIC {outcome.nic}: {done}")


VM_ARG = typer.Argument(..., min=0, help="VM id (non-negative integer).")
NIC_ARG = typer.Argument(..., min=0, help="NIC id (non-negative integer).")


@app.command()
def attach(
    vm: int = VM_ARG,
    nic: int = NIC_ARG,
    bridge: str = typer.Option(..., "--bridge", "-b", help="The VN bridge the tap is on now."),
    tap: Optional[str] = typer.Option(None, "--tap", help="The VM tap (default one-VM-NIC)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands that would run; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help=STATE_HELP),
) -> None:
    """Put VM NIC behind its own firewall: namespace, firewall bridge, veth, rules, then cut-over of the tap."""
    from . import api
    from .model import NicSpec

    def go():
        spec = NicSpec(vm=vm, nic=nic, bridge=bridge, tap=tap or "")
        return api.attach(spec, dry_run=dry_run, state_dir=state_dir)

    emit(guarded(go), as_json)


@app.command()
def detach(
    vm: int = VM_ARG,
    nic: int = NIC_ARG,
    bridge: Optional[str] = typer.Option(
        None, "--bridge", "-b", help="VN bridge to return the tap to, only used when netfw cannot tell it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands that would run; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help=STATE_HELP),
) -> None:
    """Return the tap to its VN bridge and remove the NIC's firewall; succeeds when parts are already gone."""
    from . import api

    emit(guarded(lambda: api.detach(vm, nic, dry_run=dry_run, state_dir=state_dir, bridge=bridge)), as_json)


@app.command()
def verify(
    vm: int = VM_ARG,
    nic: Optional[int] = typer.Argument(None, min=0, help="NIC id (default: every NIC netfw attached)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help=STATE_HELP),
) -> None:
    """Check every object and relation attach made; exit 0 when all hold, 1 with the list of drift."""
    from . import api

    report = guarded(lambda: api.verify(vm, nic, state_dir=state_dir))
    ok = not any(report.values())
    if as_json:
        typer.echo(json.dumps({"vm": vm, "ok": ok, "nics": {str(n): {"ok": not d, "drift": d}
                                                             for n, d in report.items()}}, indent=1))
    else:
        for n, drift in report.items():
            typer.echo(f"VM {vm} NIC {n}: " + ("ok" if not drift else f"{len(drift)} problem(s)"))
            for line in drift:
                typer.echo(f"  - {line}")
    raise typer.Exit(0 if ok else 1)


def run() -> None:
    """Console-script entry point."""
    app()
