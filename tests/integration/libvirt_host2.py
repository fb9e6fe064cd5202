"""A second hypervisor inside the `--all-ids` sandbox, for migration: a process in its own mount, network and UTS
namespaces (hostname `dst`), with its own tmpfs on /run, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and
/etc/libvirt (a copy of the sandbox's: netfw's hook included, another host_uuid), its own libvirtd, and a veth
(10.99.0.1 here, 10.99.0.2 there) that the migration stream crosses. Everything goes with stop()."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from .libvirt_lab import URI, LibvirtUnavailable
from .ovs import _die_with_parent

SETUP = """set -e
etc=$(mktemp -d); cp -a /etc/libvirt/. "$etc/"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/libvirt /run/lock
for d in /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /etc/libvirt; do mount -t tmpfs -o mode=755 tmpfs "$d"; done
cp -a "$etc/." /etc/libvirt/ && rm -rf "$etc"
echo 'host_uuid = "{uuid}"' >> /etc/libvirt/libvirtd.conf
hostname dst
ip link set lo up
echo ready
exec sleep 2147483647
"""


class Host2:
    """The destination hypervisor: enter (a command prefix), virsh(), uri (for `virsh migrate` from here)."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["unshare", "--mount", "--net", "--uts", "--fork", "--kill-child", "sh", "-c",
                                      SETUP.format(uuid=uuid.uuid4())], stdout=subprocess.PIPE, text=True,
                                     preexec_fn=_die_with_parent)
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise LibvirtUnavailable("the destination's namespaces could not be set up")
        self.pid = self._inner_pid()
        self.enter = ["nsenter", "-t", str(self.pid), "-m", "-n", "-u"]
        subprocess.run(["ip", "link", "add", "mig0", "type", "veth", "peer", "name", "mig1", "netns",
                        f"/proc/{self.pid}/ns/net"], check=True)
        subprocess.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "mig0"], check=True)
        subprocess.run(["ip", "link", "set", "mig0", "up"], check=True)
        self.sh("ip", "addr", "add", "10.99.0.2/24", "dev", "mig1")
        self.sh("ip", "link", "set", "mig1", "up")
        self.libvirtd = subprocess.Popen([*self.enter, "libvirtd"], stdin=subprocess.DEVNULL,
                                         stdout=open(self.dir / "libvirtd.log", "a"), stderr=subprocess.STDOUT,
                                         env={**os.environ, **env}, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while self.virsh("version", check=False).returncode:
            if self.libvirtd.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LibvirtUnavailable(f"the destination's libvirtd did not answer: {self.log()}")
            time.sleep(0.1)

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket=/proc/{self.pid}/root/run/libvirt/libvirt-sock"

    def sh(self, *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*self.enter, *argv], input=stdin, capture_output=True, text=True, check=check)

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        res = self.sh("virsh", "-q", "-c", URI, *args, check=False)
        if check and res.returncode:
            raise AssertionError(f"dst virsh {' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
        return res

    def log(self) -> str:
        path = self.dir / "libvirtd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-20:]) if path.exists() else ""

    def stop(self) -> None:
        """Destroy its domains, stop its libvirtd, end its namespaces (with its links and QEMU)."""
        if getattr(self, "libvirtd", None) is not None and self.libvirtd.poll() is None:
            for name in self.virsh("list", "--name", check=False).stdout.split():
                self.virsh("destroy", name, check=False)
            self.libvirtd.terminate()
            try:
                self.libvirtd.wait(15)
            except subprocess.TimeoutExpired:
                self.libvirtd.kill()
                self.libvirtd.wait()
        subprocess.run(["ip", "link", "del", "mig0"], capture_output=True)
        self.proc.kill()
        self.proc.wait()

    def _inner_pid(self) -> int:
        """The PID of the `sleep` in the namespaces (unshare's child)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0])


def qemu_in(host2: Host2) -> list[int]:
    """QEMU processes of the destination (its pidfiles, in its /run)."""
    pids = []
    for path in Path(f"/proc/{host2.pid}/root/run/libvirt/qemu").glob("*.pid"):
        pids.append(int(path.read_text().strip()))
    return pids
