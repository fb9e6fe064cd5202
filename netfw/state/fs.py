"""Files in a directory that only netfw's user controls, reached through directory descriptors and never through a
symbolic link.

netfw runs as root on a state directory its caller names (`sudo netfw one --state-dir DIR`). So a directory is
opened with O_DIRECTORY|O_NOFOLLOW and refused unless it belongs to the effective user and no one else may write
to it; every file in it is opened relative to that descriptor (openat), with O_NOFOLLOW, and checked once open. A
symlink, or a path swapped after the check, cannot redirect a read, a lock or a write of root's, and whatever such a
directory holds was put there by root.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from contextlib import contextmanager, suppress

from netfw.errors import InputError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not hang netfw (it is refused right after, as not a regular file).
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LOCK = READ_FLAGS | os.O_CREAT  # flock needs no write access; never O_TRUNC: a lock file is never written
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class StateError(InputError):
    """A state directory or a file in it that netfw refuses or cannot use: exit 2, nothing touched."""


def _refusal(shown: str, error: OSError | ValueError, name: str, dir_fd: int | None) -> StateError:
    """The StateError for a failed open of name; ELOOP or ENOTDIR on a symlink says so."""
    if isinstance(error, OSError) and error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode):
            return StateError(f"{shown} is a symbolic link: refused")
        if error.errno == errno.EISDIR:
            return StateError(f"{shown} is not a regular file: refused")
    reason = error.strerror if isinstance(error, OSError) else str(error)
    return StateError(f"{shown}: {reason}")


def _checked(fd: int, shown: str, directory: bool) -> os.stat_result:
    """fstat of an open fd, or StateError unless it is of the right kind, ours, and writable by us only."""
    st = os.fstat(fd)
    problem = None
    if directory and not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif not directory and not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by uid {os.geteuid()} that netfw runs as"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        raise StateError(f"{shown} {problem}: refused")
    return st


def _open(name: str, flags: int, shown: str, dir_fd: int | None, mode: int = 0o600) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise _refusal(shown, e, name, dir_fd) from None


def open_dir(name: str, shown: str, dir_fd: int | None = None, create: bool = False) -> int | None:
    """A checked descriptor of directory name (relative to dir_fd); when missing, created 0700 if create, else None.

    Safe to repeat. Only the last component is created: a missing parent is an error, not something to make.
    """
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            return None
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass  # a concurrent call made it: it is checked below like any other
        except (OSError, ValueError) as e:
            raise StateError(f"{shown}: cannot create it: {getattr(e, 'strerror', None) or e}") from None
        fd = _open(name, DIR_FLAGS, shown, dir_fd)
    except (OSError, ValueError) as e:
        raise _refusal(shown, e, name, dir_fd) from None
    try:
        _checked(fd, shown, directory=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(dir_fd: int, name: str, shown: str, limit: int) -> bytes | None:
    """The content of regular file name (ours, not writable by others, at most limit bytes), None when missing."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise _refusal(shown, e, name, dir_fd) from None
    try:
        size = _checked(fd, shown, directory=False).st_size
        too_big, chunks, got = size > limit, [], 0
        # bounded even if the file grows; asked for what fstat said (+1), never the whole limit: os.read allocates
        # what it is asked for, 16 MiB per record read (issue 22: status read a thousand of them, several at once)
        while not too_big and (chunk := os.read(fd, min(limit + 1 - got, max(size + 1, 64 * 1024)))):
            chunks.append(chunk)
            got += len(chunk)
            too_big = got > limit
        data = b"".join(chunks)
        if too_big:
            raise StateError(f"{shown} is larger than {limit} bytes: refused")
        return data
    except OSError as e:
        raise StateError(f"{shown}: {e.strerror}") from None
    finally:
        os.close(fd)


@contextmanager
def locked(dir_fd: int, name: str, shown: str):
    """Hold an exclusive flock on file name (created 0600, never truncated) for the with block.

    The kernel releases an flock when its holder dies, even by SIGKILL: a killed netfw leaves no stale lock.
    """
    fd = _open(name, _LOCK, shown, dir_fd)
    try:
        _checked(fd, shown, directory=False)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            raise StateError(f"{shown}: cannot lock it: {e.strerror}") from None
        yield
    finally:
        os.close(fd)


def write_file(dir_fd: int, name: str, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Make file name in the directory hold data, atomically: a new hidden temporary file (O_EXCL|O_NOFOLLOW, 0600),
    its owner and mode set, fsync, rename over name. OSError as it comes, the temporary file removed; the caller
    syncs the directory. Shared by the state records (replace) and `netfw one install`."""
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, _NEW, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with suppress(OSError):  # the original error is the one to report
            _unlink(dir_fd, tmp)
        raise


def replace(dir_fd: int, name: str, data: bytes, shown: str) -> None:
    """Make file name hold data, atomically (write_file, 0600), then fsync the directory. A reader sees the old
    content or the new, never a part; a crash leaves at most a hidden .tmp file."""
    try:
        write_file(dir_fd, name, data)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise StateError(f"cannot write {shown}: {getattr(e, 'strerror', None) or e}") from None
    _sync(dir_fd, shown)


def remove(dir_fd: int, name: str, shown: str) -> None:
    """Remove file name (a symlink itself, never its target); safe to repeat."""
    try:
        if not _unlink(dir_fd, name):
            return
    except OSError as e:
        raise StateError(f"cannot remove {shown}: {e.strerror}") from None
    _sync(dir_fd, shown)


def names(dir_fd: int) -> list[str]:
    """The names in the directory."""
    return os.listdir(dir_fd)


def _unlink(dir_fd: int, name: str) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _sync(dir_fd: int, shown: str) -> None:
    """fsync the directory, so that a rename or unlink in it survives a crash."""
    try:
        os.fsync(dir_fd)
    except OSError as e:
        raise StateError(f"cannot sync the directory of {shown}: {e.strerror}") from None
