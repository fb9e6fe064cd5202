"""`netfw one install` and `netfw one uninstall` (netfw/opennebula/install.py): the command line.

`netfw one ACTION ...` runs OpenNebula's driver actions; these two words, given first after `one`, run a command of
their own with their own options instead (netfw.cli's OneCommand hands them over), so that the driver actions parse
exactly as before.
"""

from __future__ import annotations

from typing import Optional

import typer

from netfw.opennebula import install

#: The words after `netfw one` that are commands of their own, not driver actions.
COMMANDS = ("install", "uninstall")

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  no_args_is_help=True)

REMOTES_OPT = typer.Option(install.DEFAULT_REMOTES, "--remotes",
                           help="OpenNebula's remotes directory on the front-end (with vnm/<driver>/).")
DRIVERS_OPT = typer.Option(None, "--drivers", help="Comma list of the drivers (VN_MADs) to hook into "
                                                   "(default fw,802.1Q,vxlan,bridge,ovswitch,ovswitch_vxlan).")
DRY_OPT = typer.Option(False, "--dry-run", help="Print what would change; change nothing.")
JSON_OPT = typer.Option(False, "--json", help="Print the outcome as JSON.")


def _run(action: str, remotes: str, drivers: Optional[str], dry_run: bool, as_json: bool,
         scripts: Optional[str] = None, settings: Optional[str] = None) -> None:
    from netfw.opennebula.driver_call import parse_vn_mads

    from .base import setup_done

    setup_done(lambda: install.run(action, remotes, parse_vn_mads(drivers), dry_run, scripts, settings),
               f"netfw one {action}", as_json, " (stopped part-way: run it again to finish)")


@app.command("install")
def install_(
    remotes: str = REMOTES_OPT,
    drivers: Optional[str] = DRIVERS_OPT,
    settings: str = typer.Option(
        install.DEFAULT_SETTINGS, "--settings",
        help="netfw's settings file, whose NETFW_VN_MADS is set to the same drivers (copy it to the hosts "
             "when it is not the package's default list); '' to leave it alone."),
    scripts: Optional[str] = typer.Option(
        None, "--scripts", help="Where netfw's OpenNebula scripts are (default: the package's, or the source tree's)."),
    dry_run: bool = DRY_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Hook netfw into OpenNebula's network drivers on the front-end (docs/opennebula.md, way A): pre.d/netfw and
    post.d/netfw; clean and update_nic as chains, the driver's own kept as clean.legacy and update_nic.legacy;
    update_sg replaced, the driver's kept as update_sg.legacy. Running it again changes nothing (it updates netfw's
    scripts after a netfw upgrade). Then: onehost sync --force. Root only (refused through oneadmin's sudo rule).
    Exit 0 done, 1 stopped part-way (run it again), 2 refused: nothing changed."""
    _run("install", remotes, drivers, dry_run, as_json, scripts, settings or None)


@app.command("uninstall")
def uninstall(
    remotes: str = REMOTES_OPT,
    drivers: Optional[str] = DRIVERS_OPT,
    dry_run: bool = DRY_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Take netfw out of OpenNebula's network drivers: remove netfw's scripts and rename the driver's originals
    back (the very files install kept). Then: onehost sync --force. Exit 0 done, 1 stopped part-way, 2 refused."""
    _run("uninstall", remotes, drivers, dry_run, as_json)
