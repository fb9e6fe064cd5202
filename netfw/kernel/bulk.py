"""Many namespaces' reads through one process: a read-only pass over 1,000 VMs (`netfw status`, `netfw metrics`,
gc's first look) asks each VM namespace the same few questions (its links, its saves, its sysctls, its bridge's
FDB), and a process started for each answer costs netfw more than the answer (sh: ~5 ms of Python each).

prefetch(commands) runs the commands of many namespaces from one `sh` process per chunk of namespaces: for each
namespace one `nsenter --net=NS sh`, which runs the namespace's commands one after the other and reads a command's
sysctls with one `cat` (sysctl(8) is a heavier process). Each command's stdout, stderr and exit code come back
framed by a random marker, and are kept (cache.Reads.outputs) as the Result of the very argv the probe would have
run on its own
(`nsenter --net=/run/netns/NS TOOL ARGS`): the probes take them from there (cache.read) and read them exactly as
before, so the answers, the errors and their messages are the same, and a failure stays the namespace's own.

Nothing here decides anything: a command the plan does not name, or an answer that did not come back whole (the
chunk's process killed, a marker missing), is not kept, and the probe runs its command itself. The script is a
constant; what varies (namespace names, tools, bridge and port names, sysctl keys) reaches it as arguments, each
checked against a strict pattern first: a word that fails its check is never sent (its command runs on its own).
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Callable, Iterable

from loguru import logger

from netfw import runner
from netfw.model import names
from . import cache, probe
from .backend import BACKENDS, FAMILIES, tool

#: Namespaces per `sh` process, and such processes at a time: one more than the CPUs keeps every CPU busy while
#: netfw reads what a finished one printed (N = 1,000 on 2 CPUs: 20 and 3 took 10.5 s and 95 MiB, 40 and 4 took
#: 11.4 s and 101 MiB, 80 and 4 11.7 s and 125 MiB).
CHUNK = 20
WORKERS = min(8, (os.cpu_count() or 1) + 1)

#: The programs a plan may name for a save (`TOOL -c`): every family's, of every backend.
SAVE_TOOLS = frozenset(tool(f, "save", b) for f in FAMILIES for b in BACKENDS)

_IFNAME = re.compile(r"[A-Za-z0-9_.@+=-]{1,15}")  # names.check_ifname's charset: no ',' or ':' (the separators)
_SYSCTL = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+")

#: Inside one namespace (`nsenter --net=NS sh -c INNER netfw NONCE SPEC`): SPEC is the namespace's commands, comma
#: separated; each is run with its stdout passed through and its stderr and exit code after it, framed by NONCE.
#: Every sysctl file the commands name is read first by one `cat` (dash's `read` reads a byte at a time, and a
#: sysctl file answers only a read at offset 0), one line a file; each sysctl command is then printed from those
#: lines as sysctl prints it. When a file is missing (-n) or the lines do not come one a file, sysctl itself
#: answers (its exact output and errors).
INNER = r"""set -f
nonce=$1 spec=$2 i=0 nl='
'
run() {
    printf '\n%s out %s\n' "$nonce" "$i"
    { e=$("$@" 2>&1 >&3 3>&-); r=$?; } 3>&1
    printf '\n%s rc %s %s\n%s\n%s end\n' "$nonce" "$i" "$r" "$e" "$nonce"
}
sysctl_() {
    mode=$1; shift; out= bad=
    for k do
        f=${seen%"${seen#?}"}; seen=${seen#?}
        if [ "$f" != 1 ]; then [ "$mode" = -e ] || bad=1; continue; fi
        v=${vals%%"$nl"*}; vals=${vals#*"$nl"}
        if [ "$mode" = -e ]; then out="$out$k = $v$nl"; else out="$out$v$nl"; fi
    done
    if [ "$ok" = 1 ] && [ -z "$bad" ]; then
        printf '\n%s out %s\n%s\n%s rc %s 0\n\n%s end\n' "$nonce" "$i" "$out" "$nonce" "$i" "$nonce"
    else
        run sysctl "$mode" "$@"
    fi
}
IFS=,; set -- $spec; IFS=' '
files= n=0 seen=
for t do
    case $t in
    sysctl-e:*|sysctl-n:*)
        IFS=:; set -- ${t#*:}; IFS=' '
        for k do
            IFS=.; set -- $k; IFS=/; p="/proc/sys/$*"; IFS=' '
            if [ -e "$p" ]; then files="$files $p" n=$((n + 1)) seen="${seen}1"; else seen="${seen}0"; fi
        done ;;
    esac
done
vals= ok=0
if [ "$n" -gt 0 ] && vals=$(cat $files); then
    IFS=$nl; set -- $vals; IFS=' '
    [ "$#" -eq "$n" ] && ok=1
    vals="$vals$nl"
fi
IFS=,; set -- $spec; IFS=' '
for t do
    case $t in
    links) run ip -j -d link show ;;
    save:*) run "${t#save:}" -c ;;
    fdb:*) r=${t#fdb:}; run bridge -j fdb show br "${r%%:*}" brport "${r#*:}" ;;
    sysctl-e:*|sysctl-n:*) m=${t%%:*}; IFS=:; set -- ${t#*:}; IFS=' '; sysctl_ "-${m#sysctl-}" "$@" ;;
    esac
    i=$((i + 1))
done
"""

#: The chunk's loop: `sh -c OUTER netfw INNER NETNS_DIR NONCE NS SPEC NS SPEC ...`; nsenter's own failure (the
#: namespace gone) comes back as the namespace's exit code and stderr.
OUTER = r"""set -f
inner=$1 dir=$2 nonce=$3; shift 3
while [ $# -ge 2 ]; do
    ns=$1 spec=$2; shift 2
    printf '\n%s ns %s\n' "$nonce" "$ns"
    { e=$(nsenter --net="$dir/$ns" sh -c "$inner" netfw "$nonce" "$spec" 2>&1 >&3 3>&-); r=$?; } 3>&1
    printf '\n%s left %s\n%s\n%s done\n' "$nonce" "$r" "$e" "$nonce"
done
"""


def token(tail: tuple[str, ...]) -> str | None:
    """The word INNER runs as command `tail` (inside a namespace), None for a command it does not run."""
    if tail == ("ip", "-j", "-d", "link", "show"):
        return "links"
    if len(tail) == 2 and tail[0] in SAVE_TOOLS and tail[1] == "-c":
        return f"save:{tail[0]}"
    if (len(tail) == 8 and tail[:4] == ("bridge", "-j", "fdb", "show") and tail[4] == "br" and tail[6] == "brport"
            and _IFNAME.fullmatch(tail[5]) and _IFNAME.fullmatch(tail[7])):
        return f"fdb:{tail[5]}:{tail[7]}"
    if len(tail) >= 3 and tail[0] == "sysctl" and tail[1] in ("-e", "-n") and all(map(_SYSCTL.fullmatch, tail[2:])):
        if tail[1] == "-n" and len(tail) != 3:
            return None
        return f"sysctl{tail[1]}:" + ":".join(tail[2:])
    return None


def untoken(word: str) -> tuple[str, ...]:
    """The command INNER runs for word: token()'s inverse (for fakes of the command layer). Pure."""
    what, _, rest = word.partition(":")
    if word == "links":
        return ("ip", "-j", "-d", "link", "show")
    if what == "save":
        return (rest, "-c")
    if what == "fdb":
        bridge, _, port = rest.partition(":")
        return ("bridge", "-j", "fdb", "show", "br", bridge, "brport", port)
    return ("sysctl", what[len("sysctl"):], *rest.split(":"))


def prefetch(commands: Iterable[list[str]], chunk: int | None = None,
             then: Callable[[str], None] | None = None) -> int:
    """Run commands (each as the probe runs it: `nsenter --net=/run/netns/NS TOOL ARGS`) in bulk, a chunk of
    namespaces per process, and keep their results in the active cache.reads() for cache.read; how many were kept.
    A command of another form is left to its probe. Outside cache.reads() it does nothing.

    then(ns), when given, is called for each namespace of a chunk once the chunk's answers are kept (whether or not
    they came back), in the thread that read them, while other chunks are still read: work on a namespace starts as
    soon as it can, and its answers need not wait in memory for the others'."""
    reads = cache.active()
    if reads is None:
        return 0
    by_ns: dict[str, dict[tuple[str, ...], str]] = {}  # namespace -> {command: its word}
    for argv in commands:
        ns = cache.namespace_of(list(argv))
        word = token(tuple(argv[2:]))
        if ns and names.NETNS_RE.fullmatch(ns) and word and tuple(argv) not in reads.outputs.get(ns, {}):
            by_ns.setdefault(ns, {})[tuple(argv[2:])] = word
    jobs = list(by_ns.items())
    if sum(len(tails) for _, tails in jobs) < 2:  # one command gains nothing from a loop around it
        return 0

    def part(jobs: list[tuple[str, dict[tuple[str, ...], str]]]) -> int:
        kept = _run(jobs, reads)
        for ns, _ in jobs if then else ():
            then(ns)
        return kept

    size = chunk or CHUNK
    return sum(cache.each([jobs[i:i + size] for i in range(0, len(jobs), size)], part, WORKERS))


def _run(jobs: list[tuple[str, dict[tuple[str, ...], str]]], reads: cache.Reads) -> int:
    nonce = secrets.token_hex(16)
    argv = ["sh", "-c", OUTER, "netfw", INNER, cache.NETNS_DIR, nonce]
    for ns, words in jobs:
        argv += [ns, ",".join(words.values())]
    try:
        out = runner.read(argv).stdout
    except runner.CommandError as e:  # nothing kept: every probe runs its own command
        logger.warning("reading {} namespaces in bulk failed ({}); reading them one by one", len(jobs), e)
        return 0
    kept = 0
    for ns, _, results in parse(out, nonce, [(ns, list(words)) for ns, words in jobs]):
        reads.keep(ns, results)
        kept += len(results)
    return kept


def parse(text: str, nonce: str, jobs: list[tuple[str, list[tuple[str, ...]]]]):
    """(namespace, commands, {argv: Result}) for each namespace of jobs whose answers came back framed whole. Pure."""
    sections = _sections(text, nonce)
    for ns, tails in jobs:
        if ns not in sections:
            continue
        answers, (code, err) = sections[ns]
        prefix = tuple(probe.in_netns(ns))
        if code != 0 and not answers:  # nsenter itself failed: every command of the namespace fails alike
            yield ns, tails, {prefix + t: runner.Result(prefix + t, code, "", err) for t in tails}
            continue
        yield ns, tails, {prefix + t: runner.Result(prefix + t, *answers[i])
                          for i, t in enumerate(tails) if i in answers}


def _sections(text: str, nonce: str) -> dict[str, tuple[dict[int, tuple[int, str, str]], tuple[int, str]]]:
    """{namespace: ({command index: (code, stdout, stderr)}, (nsenter's code, its stderr))} from OUTER's output.
    A namespace whose part is not made of whole frames, ending with nsenter's, is left out."""
    mark = re.escape(nonce)
    command = re.compile(rf"\n{mark} out (\d+)\n(.*?)\n{mark} rc \1 (\d+)\n(.*?)\n{mark} end\n", re.S)
    left = re.compile(rf"\n{mark} left (\d+)\n(.*?)\n{mark} done\n", re.S)
    parts = re.split(rf"\n{mark} ns ([^\n]*)\n", text)
    found = {}
    for ns, body in zip(parts[1::2], parts[2::2]):
        answers, pos = {}, 0
        while (m := command.match(body, pos)) is not None:
            answers[int(m[1])] = (int(m[3]), m[2], m[4])
            pos = m.end()
        end = left.fullmatch(body, pos)
        if end is not None:
            found[ns] = (answers, (int(end[1]), end[2]))
    return found
