"""A real guest of the lab: an OpenNebula-style libvirt domain booting guest_assets' kernel and initramfs (TCG).

The domain is what OpenNebula's KVM driver writes (src/vmm/LibVirtDriverKVM.cc): name `one-<VM>`, and per NIC
`<interface type='bridge'>` with `<virtualport type='openvswitch'/>` on an Open vSwitch network, `<source bridge>`,
`<mac>`, `<target dev='one-<VM>-<NIC>'/>`, `<model type='virtio'/>` and `<bandwidth>` from the NIC's
INBOUND_*/OUTBOUND_* values. `<features><acpi/></features>` lets NICs be hot-unplugged.

The guest's first serial port is its console (a file); the second is the test's channel (a unix socket, QEMU
listening): guest_init.sh runs each line it receives as a shell command and answers with its output and exit status.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .guest_assets import Assets
from .libvirt_lab import Libvirt

BOOT_TIMEOUT = 120.0  # TCG on two busy vCPUs: a boot takes seconds, more when the machine is loaded


@dataclass(frozen=True)
class Nic:
    """One NIC as OpenNebula describes it to libvirt."""

    vm: int
    nic_id: int
    mac: str
    bridge: str
    address: str | None  # the guest's IPv4 address/prefix length (None: the guest leaves the NIC down)
    ovs: bool = False
    bandwidth: dict[str, dict[str, int]] | None = None  # {"inbound": {"average": KB/s, ...}, "outbound": {...}}

    @property
    def target(self) -> str:
        return f"one-{self.vm}-{self.nic_id}"

    def xml(self) -> str:
        """The <interface> element, in the order OpenNebula writes it."""
        out = ["<interface type='bridge'>"]
        if self.ovs:
            out.append("<virtualport type='openvswitch'/>")
        out += [f"<source bridge={quoteattr(self.bridge)}/>", f"<mac address={quoteattr(self.mac)}/>",
                f"<target dev={quoteattr(self.target)}/>", "<model type='virtio'/>"]
        if self.bandwidth:
            out.append("<bandwidth>")
            for direction in ("inbound", "outbound"):
                values = self.bandwidth.get(direction)
                if values:
                    attrs = " ".join(f"{k}={quoteattr(str(v))}" for k, v in values.items())
                    out.append(f"<{direction} {attrs}/>")
            out.append("</bandwidth>")
        return "\n".join(out + ["</interface>"])


def domain_xml(vm: int, nics: list[Nic], assets: Assets, workdir: Path, memory_mib: int = 96) -> str:
    """The whole domain: TCG, the lab kernel with its NICs' addresses on the command line, console and channel."""
    cmdline = " ".join(["console=ttyS0", "panic=-1", "ipv6.disable=1", "quiet",
                        *(f"netfw.nic={n.mac},{n.address}" for n in nics if n.address)])
    interfaces = "\n".join(n.xml() for n in nics)
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
<name>one-{vm}</name>
<memory unit='MiB'>{memory_mib}</memory>
<vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{escape(str(assets.kernel))}</kernel>
<initrd>{escape(str(assets.initrd))}</initrd><cmdline>{escape(cmdline)}</cmdline></os>
<features><acpi/></features>
<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
<devices>
<emulator>/usr/bin/qemu-system-x86_64</emulator>
{interfaces}
<serial type='file'><source path={quoteattr(str(workdir / f'one-{vm}.console'))}/><target port='0'/></serial>
<serial type='unix'><source mode='bind' path={quoteattr(str(workdir / f'one-{vm}.chan'))}/><target port='1'/></serial>
<controller type='usb' model='none'/>
<memballoon model='none'/>
</devices>
</domain>
"""


class Guest:
    """A lab domain: create() boots it (`virsh create`), run() runs a command in it, destroy() ends it."""

    def __init__(self, libvirt: Libvirt, assets: Assets, workdir: Path, vm: int, nics: list[Nic]):
        self.libvirt, self.assets, self.dir, self.vm, self.nics = libvirt, assets, Path(workdir), vm, nics
        self.name = f"one-{vm}"
        self.sock: socket.socket | None = None
        self.seq = 0
        self.boot_seconds: float | None = None
        self.chan_path = self.dir / f"{self.name}.chan"  # the channel's socket (another after a migration)

    @property
    def console_path(self) -> Path:
        return self.dir / f"{self.name}.console"

    def xml(self) -> str:
        return domain_xml(self.vm, self.nics, self.assets, self.dir)

    def create(self, wait: bool = True) -> Guest:
        """`virsh create` the domain (VirshError if libvirt refuses); with wait, until the guest answers."""
        path = self.dir / f"{self.name}.xml"
        path.write_text(self.xml())
        self.console_path.unlink(missing_ok=True)
        self.close()
        start = time.monotonic()
        self.libvirt.virsh("create", str(path))
        if wait:
            self.wait_ready()
            self.boot_seconds = time.monotonic() - start
        return self

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until the guest's command loop answers (AssertionError with its console after timeout)."""
        deadline = time.monotonic() + timeout
        while "netfw-guest: ready" not in self.console():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready after {timeout:g} s; console:\n{self.console()[-2000:]}")
            time.sleep(0.2)
        while True:  # the console says ready once the channel is open; a probe lost all the same is sent again
            try:
                self.run("true", timeout=3.0)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def run(self, command: str, timeout: float = 15.0) -> tuple[int, str]:
        """Run a shell command in the guest: (exit status, output). One line; AssertionError after timeout."""
        if "\n" in command or "\r" in command:
            raise ValueError(f"one line only: {command!r}")
        self.seq += 1
        marker = f"@@netfw-end {self.seq} "
        sock = self._connect(timeout)
        sock.sendall(f"{self.seq} {command}\n".encode())
        data, deadline = b"", time.monotonic() + timeout
        while True:
            match = re.search(rf"{re.escape(marker)}(\d+)\r?\n", data.decode(errors="replace"))
            if match:
                text = data.decode(errors="replace")[:match.start()]
                earlier = text.rfind("@@netfw-end ")  # the tail of an earlier command that timed out
                if earlier >= 0:
                    text = text[text.index("\n", earlier) + 1:]
                return int(match.group(1)), text.replace("\r", "")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no answer to {command!r} within {timeout:g} s: {data[-500:]!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                self.close()
                raise AssertionError(f"{self.name}: channel closed during {command!r}")
            data += chunk

    def check(self, command: str, timeout: float = 15.0) -> str:
        """run(), asserting exit status 0; the output."""
        rc, out = self.run(command, timeout)
        assert rc == 0, f"{self.name}: {command!r}: exit {rc}: {out}"
        return out

    def ifname(self, mac: str) -> str:
        """The guest's name for the NIC with this MAC (eth0, eth1, ...)."""
        for line in self.check("ip -o link").splitlines():
            if f"link/ether {mac.lower()}" in line:
                return line.split(":")[1].strip().split("@")[0]
        raise AssertionError(f"{self.name}: no NIC with MAC {mac}")

    def counter(self, ifname: str, name: str = "rx_packets") -> int:
        """/sys/class/net/IFNAME/statistics/NAME in the guest."""
        return int(self.check(f"cat /sys/class/net/{ifname}/statistics/{name}").strip())

    def ping(self, address: str, count: int = 1, wait: int = 1) -> bool:
        return self.run(f"ping -c {count} -W {wait} {address}", timeout=count * wait + 10)[0] == 0

    def destroy(self) -> None:
        """`virsh destroy` the domain if it runs."""
        self.close()
        if self.name in self.libvirt.domains():
            self.libvirt.virsh("destroy", self.name)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self, timeout: float) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(self.chan_path))
            self.sock = sock
        return self.sock
