"""The `netfw` console script: `netfw --version` is answered before the command line parser is imported.

OpenNebula starts netfw once per driver action, so start-up is paid on every VM start, migration and NIC hot-plug;
typer and click alone take ~30 ms to import. Everything but a bare `--version` goes to netfw.cli.
"""

from __future__ import annotations

import gc
import os
import sys


def run() -> None:
    """Console-script entry point (it exits)."""
    if sys.argv[1:] == ["--version"]:
        from . import __version__

        print(f"netfw {__version__}")
        sys.exit(0)
    # loguru's import would add a default stderr handler that the CLI replaces at once; every handler costs ~10 ms
    # (loguru's exception formatter expands sysconfig's install paths), so this one is never made.
    os.environ.setdefault("LOGURU_AUTOINIT", "False")
    from .cli import run as cli

    try:
        cli()
    finally:
        # What was imported lives until exit anyway. Frozen, it is skipped by the full collection that interpreter
        # teardown runs (~15 ms over typer, loguru, sh and netfw); refcounting still frees and finalizes as before.
        gc.freeze()
