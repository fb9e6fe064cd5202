"""One look at the kernel for a read-only pass over many VMs (`netfw status`, `netfw metrics`, gc's first look).

Within `reads()`, probe.links answers from one `ip -j -d link show` per namespace (the hypervisor's included), and
probe.save and counters.read from one `*tables-save -c` per namespace and tool, each taken at its first use and
kept: verify's checks of a NIC (bridge, veth, tap, rules) and its counters then cost one process per namespace and
table family instead of one per check. A failed read is kept as its error and raised to every later use of it,
so it stays the fault of the NIC (the VM) that needed it, never "absent", never another VM's: each namespace has
its own entry. `each()` spreads such reads, one VM a task, over a bounded pool of threads: the commands they start
run on every CPU. Changes nothing; outside `reads()` every probe runs as it always did.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, TypeVar

from loguru import logger

from netfw import runner

T = TypeVar("T")
R = TypeVar("R")

#: Threads of each() (the commands they start do the work, in their own processes, on every CPU).
WORKERS = min(8, 2 * (os.cpu_count() or 1))

#: `[packets:bytes] ` in front of a rule line: what `-c` adds to a save (chain lines carry counters either way).
_COUNTED = re.compile(r"^\[\d+:\d+\] (?=-A )", re.M)


class Reads:
    """What was read of each namespace: links by namespace (None: the hypervisor's), saves by (namespace, tool)."""

    def __init__(self) -> None:
        self.links: dict[str | None, dict[str, dict] | runner.CommandError] = {}
        self.saves: dict[tuple[str, str], str | runner.CommandError] = {}
        self.derived: dict[str, object] = {}  # what is computed once from the reads above (health's host tags)
        self.outputs: dict[str, dict[tuple[str, ...], runner.Result]] = {}  # bulk.prefetch's answers, by namespace

    def keep(self, ns: str, results: dict[tuple[str, ...], runner.Result]) -> None:
        """Keep commands' results read ahead (bulk.prefetch) for read(), each for one use."""
        self.outputs.setdefault(ns, {}).update(results)

    @staticmethod
    def memo(table: dict, key, read: Callable[[], T]) -> T:
        """table[key], read at its first use; a read that failed raises its error again at every use."""
        if key not in table:
            try:
                table[key] = read()
            except runner.CommandError as e:
                table[key] = e
        found = table[key]
        if isinstance(found, runner.CommandError):
            raise found
        return found


    def forget(self, ns: str, saves: bool = False) -> None:
        """Let go of namespace ns's links (and saves): a VM done with keeps no memory (1,000 VMs' reads held to the
        end made a metrics run's RSS grow past 100 MiB). A later use reads again."""
        self.links.pop(ns, None)
        if saves:  # done with the VM: what was read ahead and not taken goes too
            self.outputs.pop(ns, None)
            # list(): a copy taken at once (other threads add their namespaces' saves meanwhile)
            for key in [k for k in list(self.saves) if k[0] == ns]:
                self.saves.pop(key, None)


_active: Reads | None = None


@contextmanager
def reads():
    """Within the block, the probes above answer from one read per namespace (a block inside another shares the
    outer one's reads)."""
    global _active
    outer = _active
    _active = outer or Reads()
    try:
        yield _active
    finally:
        _active = outer


def active() -> Reads | None:
    return _active


def read(argv: list[str]) -> runner.Result:
    """runner.read(argv), or its result read ahead within reads() (bulk.prefetch), taken once: the same Result,
    and the same CommandError for an exit code other than 0."""
    ns = namespace_of(argv)
    kept = _active.outputs.get(ns) if _active is not None and ns else None
    found = kept.pop(tuple(argv), None) if kept else None
    if found is None:
        return runner.read(argv)
    logger.debug("read (read ahead): {}", shlex.join(argv))
    if found.code != 0:
        raise runner.CommandError(found)
    return found


def namespace_of(argv: list[str]) -> str | None:
    """NS of `nsenter --net=/run/netns/NS ...` (how netfw runs a tool in a namespace), else None."""
    if len(argv) > 2 and argv[0] == "nsenter" and argv[1].startswith(_NET):
        return argv[1][len(_NET):]
    return None


#: Where `ip netns add` binds VM namespaces (probe.NETNS_DIR), and how netfw enters one (probe.in_netns).
NETNS_DIR = "/run/netns"
_NET = f"--net={NETNS_DIR}/"


def uncounted(text: str) -> str:
    """A `*tables-save -c` text as the same save without -c prints it: the rule lines' counters taken off. Pure."""
    return _COUNTED.sub("", text)


def each(items: Iterable[T], work: Callable[[T], R], workers: int | None = None) -> list[R]:
    """[work(item) for item in items], spread over a pool of at most `workers` threads (WORKERS); in order. work
    should catch what is the item's own fault: an exception it raises propagates."""
    items = list(items)
    workers = min(workers or WORKERS, len(items))
    if workers <= 1:
        return [work(item) for item in items]
    few_arenas()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(work, items))


#: glibc's M_ARENA_MAX (malloc.h).
_M_ARENA_MAX = -8


@functools.cache
def few_arenas() -> None:
    """At most two malloc arenas in this process, before its first threads: glibc gives each new thread an arena of
    its own (up to 8 per CPU), which keeps what the thread freed (the outputs it read, 1,000 VMs' worth for metrics):
    6 to 8 MiB more RSS for status, metrics and gc at 1,000 VMs (measured with MALLOC_ARENA_MAX=2, which only a
    process's environment can set before it starts). Python's own small objects are not malloc's. Nothing is done
    where the C library has no mallopt (not glibc)."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass
