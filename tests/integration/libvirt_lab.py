"""A private libvirtd for the lab, inside `scripts/sandbox --all-ids` (../shared/docs/LIBVIRT.md).

That sandbox gives libvirt its own /run, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and a copy of
/etc/libvirt (qemu.conf: QEMU as root, no cgroups, namespaces or security driver), and a PID namespace, so a QEMU
that libvirtd daemonized dies with the sandbox. Nothing here touches the host's libvirt.

libvirtd runs in the foreground as a child of the test process and is told to stop when the test process dies
(PR_SET_PDEATHSIG); it inherits this process's environment, so with the lab's Open vSwitch running (ovs.py) its
`ovs-vsctl` calls (`<virtualport type='openvswitch'/>`) reach that instance. Hooks (/etc/libvirt/hooks/qemu.d/NAME)
are installed before libvirtd starts: it scans them only then (restart() to pick up a new one).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .ovs import _die_with_parent

URI = "qemu:///system"
HOOKS = Path("/etc/libvirt/hooks/qemu.d")
QEMU_RUN = Path("/run/libvirt/qemu")
BINARIES = ("libvirtd", "virsh", "qemu-system-x86_64")
START_TIMEOUT = 30.0


class LibvirtUnavailable(RuntimeError):
    """libvirt cannot run here; the message says why (a test skips with it)."""


class VirshError(RuntimeError):
    """A virsh command failed: argv, exit code and stderr."""

    def __init__(self, argv: list[str], rc: int, stderr: str):
        super().__init__(f"{shlex.join(argv)}: exit {rc}: {stderr.strip()}")
        self.argv, self.rc, self.stderr = argv, rc, stderr


def unavailable() -> str | None:
    """Why a private libvirtd cannot run in this process, or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (f"libvirt/QEMU not installed: {', '.join(missing)} not on PATH (Debian: libvirt-daemon "
                f"libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86, as .ci/run installs them)")
    maps = Path("/proc/self/uid_map").read_text().split()
    if os.environ.get("NETFW_IN_SANDBOX") != "1" or maps != ["0", "0", "65536"]:
        return ("needs `scripts/sandbox --all-ids` (real root: libvirt's QEMU probe calls setgroups, which the "
                "unprivileged sandbox denies)")
    if not os.path.ismount("/etc/libvirt") or not os.path.ismount("/run"):
        return "/etc/libvirt and /run are not private to this sandbox: refusing to start libvirtd"
    return None


def qemu_pids() -> list[int]:
    """PIDs of the QEMU processes libvirt started that are still alive (its pidfiles in the private /run)."""
    pids = []
    for path in QEMU_RUN.glob("*.pid"):
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, FileNotFoundError):
            continue
        if Path(f"/proc/{pid}/exe").resolve().name.startswith("qemu-system"):
            pids.append(pid)
    return pids


class Libvirt:
    """One private libvirtd: start(), virsh(), restart(), stop(); a context manager."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        #: set in libvirtd's environment from its next (re)start on; of it, libvirt passes only PATH (and HOME,
        #: USER, LOGNAME, TMPDIR, LD_*) on to its hooks
        self.env: dict[str, str] = {}

    def __enter__(self) -> Libvirt:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def install_hook(self, name: str, text: str) -> Path:
        """/etc/libvirt/hooks/qemu.d/NAME (the sandbox's copy), executable; in force from the next (re)start."""
        HOOKS.mkdir(parents=True, exist_ok=True)
        path = HOOKS / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def remove_hook(self, name: str) -> None:
        (HOOKS / name).unlink(missing_ok=True)

    def start(self) -> Libvirt:
        """Start libvirtd and wait until `virsh -c qemu:///system` answers (LibvirtUnavailable after 30 s)."""
        why = unavailable()
        if why:
            raise LibvirtUnavailable(why)
        self.starts += 1
        log = open(self.dir / "libvirtd.log", "a")
        log.write(f"--- start {self.starts}\n")
        log.flush()
        self.proc = subprocess.Popen(["libvirtd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env={**os.environ, **self.env}, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while self.virsh("version", check=False)[0]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited {self.proc.returncode}" if self.proc.poll() is not None else "no answer"
                self._kill()
                raise LibvirtUnavailable(f"libvirtd: {state} after {START_TIMEOUT:g} s:\n{self.log()}")
            time.sleep(0.1)
        return self

    def restart(self) -> None:
        """Stop libvirtd (its domains keep running) and start it again: it reconnects to them and re-reads hooks."""
        self._terminate()
        self.start()

    def stop(self) -> None:
        """Destroy every domain, stop libvirtd, and make sure no QEMU is left. Safe to repeat."""
        if self.proc is not None and self.proc.poll() is None:
            for name in self.domains():
                self.virsh("destroy", name, check=False)
        self._terminate()
        left = qemu_pids()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if left:
            raise RuntimeError(f"QEMU processes left after libvirtd stopped (killed): {left}")

    def domains(self) -> list[str]:
        """Names of the running domains."""
        return self.virsh("list", "--name").split()

    def virsh(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120):
        """`virsh -c qemu:///system ARGS`: its stdout, or with check=False (rc, stdout, stderr). VirshError says
        what failed."""
        argv = ["virsh", "-q", "-c", URI, *args]
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if not check:
            return res.returncode, res.stdout, res.stderr
        if res.returncode:
            raise VirshError(argv, res.returncode, res.stderr)
        return res.stdout

    def log(self, lines: int = 30) -> str:
        """libvirtd's last warnings and errors."""
        path = self.dir / "libvirtd.log"
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(text[-lines:])

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
