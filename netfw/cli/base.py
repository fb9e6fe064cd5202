"""What every netfw command shares: the typer app and its global options, logging set up on first use, the exit
codes (fail, guarded), the output of an Outcome (emit), and the arguments and options several commands take."""

from __future__ import annotations

import re
import sys
from typing import Optional

import click
import typer

from netfw import __version__

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
    from netfw.model.spec import InputError
    from netfw.runner import CommandError
    from netfw.transaction import TransactionError

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
    from netfw.model.spec import Bandwidth

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


def setup_done(call, what: str, as_json: bool, stopped: str = "") -> None:
    """`netfw one install` and `netfw hook install` (and their uninstall): call() plans and makes the changes. Bad
    input is one ERROR line and exit 2 (nothing changed), a file that could not be changed one line and exit 1
    (stopped: what the operator does then); else the changes, one per line, and the summary (or --json)."""
    from ..errors import InputError

    try:
        outcome = call()
    except InputError as e:
        setup_error(2, f"{what}: {e}")
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        setup_error(1, f"{what}: {where}{e.strerror or e}{stopped}")
    if as_json:
        import json

        typer.echo(json.dumps(outcome.as_dict(), indent=1))
        return
    for change in outcome.changes:
        typer.echo(change)
    typer.echo(f"INFO: {outcome.summary()}")


def setup_error(code: int, message: str) -> None:
    """The one `ERROR:` line of the set-up commands (they log nothing else), then exit with code."""
    print(f"ERROR: {' '.join(message.split())}", file=sys.stderr)
    raise typer.Exit(code)
