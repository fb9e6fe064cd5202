"""`netfw hook qemu`, `netfw hook install`, `netfw hook uninstall`: the command line of the libvirt qemu hook
(netfw/opennebula/hook.py) and of its installation (netfw/opennebula/hook_install.py). Exit codes as the rest of netfw: 0 done, 1 failed
(rolled back), 2 refused (bad input, nothing touched)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, no_args_is_help=True,
                  help="libvirt's qemu hook: OpenNebula's NICs behind their firewall before QEMU starts "
                       "(docs/opennebula.md).")

HOOKS_DIR = "/etc/libvirt/hooks"
STATE_OPT = typer.Option(None, "--state-dir", help="Where netfw keeps what it applied (env NETFW_STATE_DIR): the "
                                                   "directory OpenNebula's pre wrote the pending record to.")
HOOKS_OPT = typer.Option(HOOKS_DIR, "--hooks-dir", help="libvirt's hooks directory (the hook goes to qemu.d/netfw).")
DRY_OPT = typer.Option(False, "--dry-run", help="Print what would change; change nothing.")
JSON_OPT = typer.Option(False, "--json", help="Print the outcome as JSON.")


@app.command("qemu")
def qemu(
    domain: str = typer.Argument(..., help="The domain's name (OpenNebula's: one-<VM>; any other is left alone)."),
    operation: str = typer.Argument(..., help="libvirt's operation: prepare, start, stopped, release, ..."),
    sub: str = typer.Argument(..., help="Its sub-operation: begin, end, ..."),
    extra: Optional[list[str]] = typer.Argument(None, help="libvirt's extra argument (ignored)."),
    state_dir: Optional[str] = STATE_OPT,
) -> None:
    """Run by libvirt (scripts/libvirt/qemu.d/netfw) with the domain XML on stdin. At `start begin`: every NIC of the
    domain that OpenNebula's pre left a pending record for goes behind its firewall, in one transaction, before QEMU
    starts; exit non-zero and libvirt does not start the domain. At `prepare begin`, `stopped end` and `release end`:
    what netfw keeps for the VM's NICs (veth end, namespace, records) goes. Anything else: nothing. Lines on stderr
    only (libvirt reads a migrate or restore hook's stdout)."""
    from netfw.opennebula import hook

    if not hook.acts_on(domain, operation, sub):
        raise typer.Exit(0)  # stdin unread: libvirt ignores a hook that closes it early
    from .base import guarded
    from netfw.opennebula.domain import MAX_XML

    xml = b"" if sys.stdin.isatty() else sys.stdin.buffer.read(MAX_XML + 1)

    def go():
        from loguru import logger

        outcome = hook.run(domain, operation, sub, xml, state_dir)
        if outcome.failures:
            from .base import fail
            fail(1, f"{outcome.summary}; failed: {'; '.join(outcome.failures)}")
        logger.info("{}", outcome.summary)

    guarded(go)


def _installed(action: str, hooks_dir: str, dry_run: bool, as_json: bool, script: Optional[str] = None) -> None:
    from netfw.opennebula import hook_install

    from .base import setup_done

    setup_done(lambda: hook_install.run(action, hooks_dir, dry_run, script), f"netfw hook {action}", as_json)


@app.command("install")
def install(
    hooks_dir: str = HOOKS_OPT,
    script: Optional[str] = typer.Option(
        None, "--script", help="netfw's hook script (default: the package's, or the source tree's "
                               "scripts/libvirt/qemu.d/netfw)."),
    dry_run: bool = DRY_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Install the qemu hook on a hypervisor: HOOKS_DIR/qemu.d/netfw (qemu.d made when missing). Running it again
    changes nothing; it updates netfw's script after an upgrade, and refuses a file of that name that is not
    netfw's. Then restart libvirtd (it reads its hooks when it starts). Exit 0 done, 1 failed, 2 refused."""
    _installed("install", hooks_dir, dry_run, as_json, script)


@app.command("uninstall")
def uninstall(hooks_dir: str = HOOKS_OPT, dry_run: bool = DRY_OPT, as_json: bool = JSON_OPT) -> None:
    """Remove netfw's qemu hook (only a file that is netfw's). Then restart libvirtd. Exit 0 done, 1 failed,
    2 refused."""
    _installed("uninstall", hooks_dir, dry_run, as_json)
