"""The only module that starts processes. Every command is an argument list, never a shell string."""

from __future__ import annotations

import shlex
from contextlib import contextmanager
from dataclasses import dataclass

from loguru import logger

# `sh` is imported by the first command that starts a process (_execute), not here: it costs ~20 ms (it reads its own
# package metadata and imports asyncio), and a call that stops at bad input (exit 2) never starts a process.

@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


class CommandError(Exception):
    """A command exited with a code the caller did not accept."""

    def __init__(self, result: Result, stdin: str | None = None):
        self.result = result
        self.stdin = stdin
        super().__init__(self._message())

    @property
    def argv(self) -> tuple[str, ...]:
        return self.result.argv

    @property
    def code(self) -> int:
        return self.result.code

    @property
    def stderr(self) -> str:
        return self.result.stderr

    def _message(self) -> str:
        err = self.result.stderr.strip().replace("\n", " | ") or "(no stderr)"
        msg = f"`{shlex.join(self.result.argv)}` exited {self.result.code}: {err}"
        line = failing_input_line(self.result.stderr, self.stdin)
        return f"{msg}\n{line}" if line else msg


def refused(step: str, message: str) -> CommandError:
    """An error of netfw's own (a step that refuses to act), shaped like a failed command so callers treat both
    alike."""
    return CommandError(Result(("netfw", step), 1, "", message))


def failing_input_line(stderr: str, stdin: str | None, context: int = 5) -> str:
    """For a *-restore error ('... line N failed'), the failing input line with `context` lines around it."""
    if not stdin:
        return ""
    import re

    m = re.search(r"line:? (\d+)", stderr)
    if not m:
        return ""
    lines = stdin.splitlines()
    n = int(m.group(1))
    lo, hi = max(1, n - context), min(len(lines), n + context)
    return "\n".join(f"{'>' if i == n else ' '}{i:5d}: {lines[i - 1]}" for i in range(lo, hi + 1))


_commands: dict[str, object] = {}  # sh.Command per program, made once
_BLOCK = 64 * 1024


def _execute(argv: list[str], stdin: str | None, timeout: float | None) -> Result:
    """Run one process through sh and return its result whatever its exit code (the mock point of unit tests)."""
    # No `_timeout` unless asked: sh implements it by polling, which costs ~100 ms per command.
    import sh

    extra = {"_timeout": timeout} if timeout else {}
    cmd = _commands.get(argv[0])
    if cmd is None:
        cmd = _commands[argv[0]] = sh.Command(argv[0])
    proc = cmd(
        *argv[1:],
        _in=stdin,
        _tty_out=False,
        _ok_code=list(range(256)),
        **extra,
        _return_cmd=True,
        _decode_errors="replace",
        # read in blocks: sh's default (by line) costs ~3 ms of netfw's CPU per 1,000 lines a command prints
        _out_bufsize=_BLOCK,
        _err_bufsize=_BLOCK,
    )
    return Result(tuple(argv), proc.exit_code, str(proc), proc.stderr.decode(errors="replace"))


class _Recording:
    """A dry run: the mutating commands are recorded here instead of being run (reads still run)."""

    def __init__(self) -> None:
        self.commands: list[tuple[tuple[str, ...], str | None]] = []


_recording: _Recording | None = None


@contextmanager
def recording():
    """Within the block, run() records its command and answers success without starting it; read() still runs.

    This is what makes `--dry-run` exact: the very code of a real run decides what would run, from the same facts,
    and only the commands that would change something are held back.
    """
    global _recording
    outer, _recording = _recording, _Recording()
    try:
        yield _recording
    finally:
        _recording = outer


def dry() -> bool:
    """True inside recording(): steps must not write state files either."""
    return _recording is not None


def _start(argv: list[str], stdin: str | None, ok: tuple[int, ...], timeout: float | None) -> Result:
    import sh  # here, not at the top: `netfw --help` and bad input start no process and need not pay for it

    try:
        result = _execute(list(argv), stdin, timeout)
    except sh.CommandNotFound:
        raise CommandError(Result(tuple(argv), 127, "", f"{argv[0]}: command not found")) from None
    except sh.TimeoutException:
        raise CommandError(Result(tuple(argv), -1, "", f"timed out after {timeout}s"), stdin) from None
    except sh.SignalException as e:  # killed by a signal (e.g. ovs-vsctl's own --timeout: SIGALRM)
        code = -abs(getattr(e, "exit_code", 1))
        err = (getattr(e, "stderr", b"") or b"").decode(errors="replace")
        raise CommandError(Result(tuple(argv), code, "", f"{err}killed by signal {-code}"), stdin) from None
    if result.code not in ok:
        raise CommandError(result, stdin)
    return result


def run(
    argv: list[str], stdin: str | None = None, ok: tuple[int, ...] = (0,), timeout: float | None = None
) -> Result:
    """Run a command that changes something; raise CommandError unless its exit code is in `ok`.

    In a dry run (recording()) the command is only recorded and reported as successful.
    """
    if _recording is not None:
        logger.debug("dry run: {}{}", shlex.join(argv), " <<stdin" if stdin else "")
        _recording.commands.append((tuple(argv), stdin))
        return Result(tuple(argv), 0, "", "")
    logger.debug("run: {}{}", shlex.join(argv), " <<stdin" if stdin else "")
    return _start(argv, stdin, ok, timeout)


def read(argv: list[str], stdin: str | None = None, ok: tuple[int, ...] = (0,),
         timeout: float | None = None) -> Result:
    """Run a command that only reads (a probe): it runs in dry runs too. CommandError unless its code is in ok."""
    logger.debug("read: {}{}", shlex.join(argv), " <<stdin" if stdin else "")
    return _start(argv, stdin, ok, timeout)
