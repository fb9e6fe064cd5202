"""netfw's kernel objects, found by the alias netfw gives each link it makes (`netfw vm=<VM> nic=<NIC> role=...`),
in the hypervisor namespace and in every namespace `one-<VM>`: what health.survey compares the state records with.
Read-only."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from netfw import runner
from netfw.kernel import cache, probe
from netfw.model import names


@dataclass
class Objects:
    """netfw's kernel objects: links by (vm, nic), and the namespaces one-<VM> that hold none of them."""

    links: dict[tuple[int, int], list[str]] = field(default_factory=dict)  # (vm, nic) -> "where/name (role)"
    namespaces: dict[int, list[str]] = field(default_factory=dict)  # vm -> names of the links in one-<vm>
    bare: set[int] = field(default_factory=set)  # VMs whose namespace holds no netfw link
    unreadable: dict[int, str] = field(default_factory=dict)  # VMs whose namespace could not be read, and why


def namespaces() -> list[int]:
    """The VM ids of the usable namespaces named `one-<VM>` (ip netns add's bind mounts)."""
    try:
        entries = os.listdir(probe.NETNS_DIR)
    except FileNotFoundError:
        return []
    found = (names.NETNS_RE.fullmatch(e) for e in entries)
    return sorted(int(m[1]) for m in found if m and probe.netns_exists(m[0]))


def _tagged(links: dict[str, dict], where: str, out: Objects, vm: int | None) -> int:
    """Add the links that carry netfw's alias (of VM vm, or any) to out; how many there were."""
    count = 0
    for name, link in links.items():
        tag = names.parse_alias(link.get("ifalias"))
        if tag and (vm is None or tag[0] == vm):
            out.links.setdefault(tag[:2], []).append(f"{where}{name} ({tag[2]})")
            count += 1
    return count


def host_tags() -> list[tuple[str, tuple[int, int, str]]]:
    """(name, (vm, nic, role)) of the hypervisor's links that carry netfw's alias, in their order; computed once
    within cache.reads() (gc asks for one VM after another: once per VM was quadratic in the VM count)."""
    def read() -> list[tuple[str, tuple[int, int, str]]]:
        return [(name, tag) for name, link in probe.links(None).items()
                if (tag := names.parse_alias(link.get("ifalias")))]
    reads = cache.active()
    return read() if reads is None else reads.memo(reads.derived, "host tags", read)


def host_keys() -> set[tuple[int, int]]:
    """The (vm, nic) of host_tags(), computed once within cache.reads()."""
    read = lambda: {tag[:2] for _, tag in host_tags()}  # noqa: E731
    reads = cache.active()
    return read() if reads is None else reads.memo(reads.derived, "host keys", read)


def objects(vm: int | None = None, read: Callable[[int], dict[str, dict] | runner.CommandError] | None = None
            ) -> Objects:
    """netfw's links (of VM vm, or all) in the hypervisor namespace and in every namespace one-<VM> (read: how a
    VM's namespace's links are read, namespace_links). Read-only."""
    out = Objects()
    for name, tag in host_tags():
        if vm is None or tag[0] == vm:
            out.links.setdefault(tag[:2], []).append(f"{name} ({tag[2]})")
    if vm is None:
        found = namespaces()
    else:  # not every namespace's mount checked for one VM's
        found = [vm] if probe.netns_exists(names.netns(vm)) else []
    for vm_id, links in zip(found, cache.each(found, read or namespace_links)):
        ns = names.netns(vm_id)
        if isinstance(links, runner.CommandError):  # that VM's fault: survey reports it, the others are read
            out.unreadable[vm_id] = f"could not read namespace {ns}: {links}"
            continue
        out.namespaces[vm_id] = list(links)
        if not _tagged(links, f"{ns}/", out, None):
            out.bare.add(vm_id)
    return out


def namespace_links(vm: int) -> dict[str, dict] | runner.CommandError:
    """The links of namespace one-<vm>, or the error that reading them raised. Read-only."""
    try:
        return probe.links(names.netns(vm))
    except runner.CommandError as e:
        return e


def beside_host(work: Callable[[], object], read: Future[None] | None = None) -> None:
    """work() in a thread of its own while this thread reads the hypervisor namespace's links (host_tags, host_keys):
    two processes, on two CPUs, instead of one after the other (the status of one VM at 1,000 VMs: 75 ms for the
    hypervisor's 2,000 links, 50 ms for the VM's namespace). The links are parsed in this thread, whose memory the
    process already has (a thread of its own would hold them in a glibc arena of its own). read, when given, is
    resolved once they are read, or with the error reading them: work waits on it before it uses them. A failed read
    is kept (cache.Reads.memo) and raised again where its links are used; any other error is raised here."""
    cache.few_arenas()  # before the first thread
    read = read if read is not None else Future()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(work)
        try:
            host_keys()
        except BaseException as e:  # noqa: BLE001 (handed to work through read, and raised below)
            read.set_exception(e)
        else:
            read.set_result(None)
        running.result()
    with contextlib.suppress(runner.CommandError):
        read.result()
