"""The netfw command line: parse, build the model, plan, run. Exit 0 success, 1 failed (rolled back) or drift,
2 bad input (nothing touched).

base.py holds the app and what the commands share; nic.py the commands on one NIC, observe.py those that look; the
OpenNebula driver actions (`netfw one`) are here; one_install.py (`netfw one install`) and hook.py (`netfw hook`)
are their own typer apps. Commands are registered in the order --help lists them.

May import: every layer below it.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from . import nic, observe  # noqa: F401  (their commands register on the app, in this order)
from .base import DRY_OPT, STATE_OPT, app

__all__ = ["app", "run", "unexpected", "MAX_UNEXPECTED"]


class OneCommand(typer.core.TyperCommand):
    """`netfw one`: a driver action, or, when the first word is install or uninstall, that command with its own
    options (netfw/cli/one_install.py), so that the driver actions' parsing stays exactly as it is."""

    _KEY = "netfw.opennebula.one.setup"

    def parse_args(self, ctx, args):
        from .one_install import COMMANDS

        if args and args[0] in COMMANDS:
            ctx.meta[self._KEY] = list(args)
            return []
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        setup = ctx.meta.pop(self._KEY, None)
        if setup is None:
            return super().invoke(ctx)
        from .one_install import app as setup_app

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
    from netfw.opennebula import driver
    from netfw.model.document import MAX_INPUT

    driver.setup_logging(bool(ctx.parent and ctx.parent.params.get("verbose")), to_stdout=log_stdout)
    if backend:
        import os

        os.environ["NETFW_IPTABLES_BACKEND"] = backend
    # Read with its bound: a document larger than MAX_INPUT is refused without being read whole (`< /dev/zero`).
    document = b"" if sys.stdin.isatty() else sys.stdin.buffer.read(MAX_INPUT + 1)  # empty: exit 2
    options = {"vn_mads": vn_mads, "state_dir": state_dir, "dry_run": dry_run, "conntrack_max": conntrack_max}
    raise typer.Exit(driver.main(action, list(args or ()), document, options, echo=typer.echo))


from .hook import app as _hook_app  # noqa: E402 (typer alone: its commands import what they need)

app.add_typer(_hook_app, name="hook")


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
