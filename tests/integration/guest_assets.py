"""The lab guest's kernel and initramfs, built from Debian packages: the cloud kernel and busybox-static.

`apt-get download` fetches the real kernel package behind `linux-image-cloud-amd64` and `busybox-static` (outside
the sandbox: it has no network; `make guest-assets` runs `python -m tests.integration.guest_assets`). They are
unpacked with `dpkg-deb -x`, and the initramfs is a newc cpio of busybox, the virtio modules and guest_init.sh as
`/init`. Everything is cached under build/guest/, keyed by the packages' versions and a digest of what goes into the
initramfs, so a second run only reads the cache.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "guest"
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = "busybox-static"
#: In load order (LIBVIRT.md): what virtio_net needs, from the kernel package's lib/modules.
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover",
           "net_failover", "virtio_net")
INIT = Path(__file__).with_name("guest_init.sh")


class AssetsUnavailable(RuntimeError):
    """The guest cannot be built here; the message says why (a test skips with it)."""


@dataclass(frozen=True)
class Assets:
    kernel: Path
    initrd: Path
    kernel_version: str  # the kernel package's version, e.g. 6.1.192-3
    busybox_version: str


def _out(*argv: str) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetsUnavailable(f"{' '.join(argv)}: {exc}") from None
    if res.returncode:
        raise AssetsUnavailable(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()[-300:]}")
    return res.stdout


def packages() -> dict[str, str]:
    """{package: candidate version} for the real kernel package and busybox-static, from apt's local lists."""
    depends = _out("apt-cache", "depends", KERNEL_META)
    kernels = [line.split(":", 1)[1].strip() for line in depends.splitlines()
               if line.strip().startswith("Depends:") and "linux-image-" in line]
    if not kernels:
        raise AssetsUnavailable(f"apt-cache depends {KERNEL_META}: names no kernel package")
    found, name = {}, None
    for line in _out("apt-cache", "policy", kernels[0], BUSYBOX).splitlines():  # one call: each reads the lists
        if not line.startswith(" "):
            name = line.rstrip(":")
        elif line.strip().startswith("Candidate:") and name:
            found[name] = line.split(":", 1)[1].strip()
    for name in (kernels[0], BUSYBOX):
        if found.get(name, "(none)") == "(none)":
            raise AssetsUnavailable(f"apt-cache policy {name}: no candidate version (apt-get update?)")
    return found


def _deb(debs: Path, name: str, version: str) -> Path | None:
    for path in sorted(debs.glob(f"{name}_*.deb")):
        if _out("dpkg-deb", "-f", str(path), "Version").strip() == version:
            return path
    return None


def download(debs: Path = BUILD / "debs") -> dict[str, Path]:
    """The two .deb files of the candidate versions, downloaded unless already there. Needs the network."""
    debs.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, version in packages().items():
        path = _deb(debs, name, version)
        if path is None:
            _out("sh", "-c", 'cd "$1" && apt-get download -q "$2=$3"', "-", str(debs), name, version)
            path = _deb(debs, name, version)
        if path is None:
            raise AssetsUnavailable(f"apt-get download {name}={version}: no .deb in {debs}")
        found[name] = path
    return found


def _key(versions: dict[str, str]) -> str:
    digest = hashlib.sha256(INIT.read_bytes() + " ".join(MODULES).encode())
    for name, version in sorted(versions.items()):
        digest.update(f"{name}={version};".encode())
    return digest.hexdigest()[:16]


def ensure(build: Path = BUILD) -> Assets:
    """The cached guest for the candidate versions, built (and downloaded) if missing; AssetsUnavailable says why
    not. Safe to repeat and to run concurrently (the build goes to a temporary directory, renamed in place)."""
    versions = packages()
    kernel_pkg = next(name for name in versions if name != BUSYBOX)
    out = build / _key(versions)
    assets = Assets(out / "vmlinuz", out / "initrd.img", versions[kernel_pkg], versions[BUSYBOX])
    if assets.kernel.is_file() and assets.initrd.is_file():
        return assets
    try:
        debs = download(build / "debs")
    except AssetsUnavailable as exc:
        raise AssetsUnavailable(f"the guest's Debian packages are not cached and cannot be downloaded here "
                                f"(run `make guest-assets` outside the sandbox): {exc}") from None
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=build))
    tmp.chmod(0o755)  # readable by an ordinary user running the tests from the same tree
    try:
        _build(debs[kernel_pkg], debs[BUSYBOX], tmp)
        try:
            tmp.rename(out)
        except OSError:  # built meanwhile by another run
            if not out.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return assets


def _build(kernel_deb: Path, busybox_deb: Path, tmp: Path) -> None:
    for deb, dest in ((kernel_deb, tmp / "kernel"), (busybox_deb, tmp / "busybox")):
        _out("dpkg-deb", "-x", str(deb), str(dest))
    (vmlinuz,) = (tmp / "kernel" / "boot").glob("vmlinuz-*")
    shutil.copyfile(vmlinuz, tmp / "vmlinuz")
    files = {"init": (INIT.read_bytes(), 0o755),
             "bin/busybox": ((tmp / "busybox" / "bin" / "busybox").read_bytes(), 0o755)}
    for module in MODULES:
        (path,) = (tmp / "kernel" / "lib" / "modules").glob(f"*/kernel/**/{module}.ko")
        files[f"lib/modules/{module}.ko"] = (path.read_bytes(), 0o644)
    dirs = ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp", "run")
    (tmp / "initrd.img").write_bytes(cpio(dirs, files))
    shutil.rmtree(tmp / "kernel")
    shutil.rmtree(tmp / "busybox")


def cpio(dirs: tuple[str, ...], files: dict[str, tuple[bytes, int]]) -> bytes:
    """A newc ("070701") cpio archive of these directories and files, owned by root, mtime 0."""
    out = bytearray()
    entries = [(name, b"", 0o040755) for name in dirs]
    entries += [(name, data, 0o100000 | mode) for name, (data, mode) in sorted(files.items())]
    for ino, (name, data, mode) in enumerate([*entries, ("TRAILER!!!", b"", 0)], start=1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out += b"070701" + b"".join(b"%08x" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def main() -> int:
    """`python -m tests.integration.guest_assets`: download and build (a second run reads the cache)."""
    start = time.monotonic()
    try:
        assets = ensure()
    except AssetsUnavailable as exc:
        print(f"guest assets: {exc}", file=sys.stderr)
        return 1
    print(f"guest assets: kernel {assets.kernel_version}, busybox {assets.busybox_version}: {assets.kernel.parent} "
          f"({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
