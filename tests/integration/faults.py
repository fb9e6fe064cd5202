"""Fault injection through PATH: every program netfw starts is a wrapper that counts its calls and, at call N,
fails (before or after running the real program), kills netfw with SIGKILL (before or after), or pauses it before
the program runs until the test resumes it (a slow command, to run something else meanwhile: Faults.start).

Real processes only: `netfw` runs as a child process with the wrappers first on its PATH, so what is measured is what
a real OOM kill, timeout or crash at that command leaves behind. A program that a wrapped program starts itself
(nsenter starting iptables-restore) sees the real PATH and is not counted.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Every program netfw may start.
PROGRAMS = ("ip", "nsenter", "sysctl", "bridge", "tc", "ipset", "conntrack", "ovs-vsctl", "ovs-ofctl")

MODES = ("fail-before", "fail-after", "kill-before", "kill-after", "pause-before")
#: How long a paused command waits for the test at most (a test that fails must not leave netfw hanging).
PAUSE_LIMIT = 120

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
        pause-before) : >"$NETFW_FAULT_DIR/paused"
            for _ in $(seq $((NETFW_FAULT_PAUSE * 10))); do
                [ -e "$NETFW_FAULT_DIR/resume" ] && break; sleep 0.1
            done ;;
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

    def start(self, argv: list[str], at: int = 0, mode: str = "fail-before", stdin: str | None = None) -> Started:
        """Start `netfw ARGV` with a fault at counted call `at` (0: none), without waiting for it."""
        assert mode in MODES
        for name in ("count", "log", "paused", "resume"):
            (self.root / name).unlink(missing_ok=True)
        env = {**os.environ, "PATH": f"{self.bin}:{self.real_path}", "NETFW_FAULT_REALPATH": self.real_path,
               "NETFW_FAULT_DIR": str(self.root), "NETFW_FAULT_AT": str(at), "NETFW_FAULT_MODE": mode,
               "NETFW_FAULT_PAUSE": str(PAUSE_LIMIT)}
        proc = subprocess.Popen([self.netfw, *argv], stdin=subprocess.PIPE if stdin is not None else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        return Started(self.root, proc, stdin)

    def run(self, argv: list[str], at: int = 0, mode: str = "fail-before", stdin: str | None = None,
            timeout: float = 120) -> Run:
        """Run `netfw ARGV` with a fault at counted call `at` (0: none); the result and the calls it made."""
        return self.start(argv, at, mode, stdin).wait(timeout)


class Started:
    """A netfw process started by Faults.start."""

    def __init__(self, root: Path, proc: subprocess.Popen, stdin: str | None):
        self.root, self.proc, self.stdin = root, proc, stdin

    def paused(self, timeout: float = 60) -> bool:
        """Wait until the process is paused at its fault (pause-before); False when it ended first or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.root / "paused").exists():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def resume(self) -> None:
        (self.root / "resume").touch()

    def wait(self, timeout: float = 120) -> Run:
        try:
            out, err = self.proc.communicate(self.stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        log = self.root / "log"
        calls = log.read_text().splitlines() if log.exists() else []
        return Run(self.proc.returncode, out, err, calls)
