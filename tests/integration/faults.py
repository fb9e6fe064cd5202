"""Fault injection through PATH: every program netfw starts is a wrapper that counts its calls and, at call N,
fails (before or after running the real program) or kills netfw with SIGKILL (before or after).

Real processes only: `netfw` runs as a child process with the wrappers first on its PATH, so what is measured is what
a real OOM kill, timeout or crash at that command leaves behind. A program that a wrapped program starts itself
(nsenter starting iptables-restore) sees the real PATH and is not counted.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: Every program netfw may start.
PROGRAMS = ("ip", "nsenter", "sysctl", "bridge", "tc", "ipset", "conntrack", "ovs-vsctl", "ovs-ofctl")

MODES = ("fail-before", "fail-after", "kill-before", "kill-after")

_WRAPPER = r"""#!/bin/bash
# netfw fault wrapper: count this call; at call $NETFW_FAULT_AT act as $NETFW_FAULT_MODE says.
name=${0##*/}
real=$(PATH=$NETFW_FAULT_REALPATH command -v "$name") || { echo "$name: command not found" >&2; exit 127; }
exec 9>>"$NETFW_FAULT_DIR/lock"
flock 9
n=$(( $(cat "$NETFW_FAULT_DIR/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" >"$NETFW_FAULT_DIR/count"
printf '%s %s\n' "$n" "$name $*" >>"$NETFW_FAULT_DIR/log"
flock -u 9
exec 9>&-
export PATH=$NETFW_FAULT_REALPATH
if [ "$n" = "${NETFW_FAULT_AT:-0}" ]; then
    case $NETFW_FAULT_MODE in
        fail-before) echo "injected failure before $name" >&2; exit 99 ;;
        fail-after) "$real" "$@"; echo "injected failure after $name" >&2; exit 99 ;;
        kill-before) kill -9 "$PPID"; exit 137 ;;
        kill-after) "$real" "$@"; kill -9 "$PPID"; exit 137 ;;
    esac
fi
exec "$real" "$@"
"""


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    calls: list[str]  # "N program args" per counted call


class Faults:
    """A directory of wrappers; run() starts netfw with them first on its PATH."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.bin = self.root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        for name in PROGRAMS:
            path = self.bin / name
            path.write_text(_WRAPPER)
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self.real_path = os.environ.get("PATH", "")
        self.netfw = str(Path(sys.executable).parent / "netfw")

    def run(self, argv: list[str], at: int = 0, mode: str = "fail-before", stdin: str | None = None,
            timeout: float = 120) -> Run:
        """Run `netfw ARGV` with a fault at counted call `at` (0: none); the result and the calls it made."""
        assert mode in MODES
        for name in ("count", "log"):
            (self.root / name).unlink(missing_ok=True)
        env = {**os.environ, "PATH": f"{self.bin}:{self.real_path}", "NETFW_FAULT_REALPATH": self.real_path,
               "NETFW_FAULT_DIR": str(self.root), "NETFW_FAULT_AT": str(at), "NETFW_FAULT_MODE": mode}
        proc = subprocess.run([self.netfw, *argv], input=stdin, capture_output=True, text=True, env=env,
                              timeout=timeout)
        log = self.root / "log"
        calls = log.read_text().splitlines() if log.exists() else []
        return Run(proc.returncode, proc.stdout, proc.stderr, calls)
