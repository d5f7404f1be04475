"""One writer per run folder: an OS-level lock that a command holds while it writes there.

`senet train` (and resume), `senet demo`, `senet ablate` and `senet analyze excitation` lock their output
folder before they write anything: `fcntl.flock` on the file LOCK_FILE in it, held until the command ends.
The kernel drops the lock when the process exits in any way (Ctrl-C, a crash, SIGKILL, a lost node), so
there is never a stale lock to clean up by hand. The holder writes its pid, host, command and start time
into the file, and a second writer is refused with one line naming them.

The file is removed when the lock is released (a file left by a killed process is simply locked again).
Removing a lock file is safe because a process that locked it checks that the name still leads to the
file it locked, and starts over if not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from senet.errors import SenetError, file_system_error

LOCK_FILE = ".senet.lock"
# Folders this process has locked -> [FolderLocks holding it (the lock nests), descriptor, folder made by the lock].
_HELD: dict[Path, list] = {}


class FolderInUse(SenetError):
    """Another process holds the lock of the folder this command would write into."""


def command_line() -> str:
    """This process's command as the user typed it (`senet train ...`, also for `python -m senet`)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "senet"):
        program = "senet"
    return shlex.join([program, *sys.argv[1:]])


class FolderLock:
    """The lock of one folder, held from `acquire` until `release` (or the end of the process); a context manager."""

    def __init__(self, folder: str | Path, *, fix: str = "wait for it to finish, or choose another --output",
                 wait: float = 0.0) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fix = fix  # what the refusal tells the user to do
        self.wait = wait  # seconds to wait for the holder to finish before refusing (0: refuse at once)
        self._held = False

    def acquire(self) -> FolderLock:
        """Take the lock (creating the folder), or raise FolderInUse naming the process that has it.

        A folder where nothing can be written (read-only) is not locked: there is nothing to protect, and
        the command's first write reports the file system's refusal. Within one process the lock nests
        (`senet demo` holds its folder while the excitation study it runs writes there)."""
        if self._held:
            return self
        key = self.folder.resolve()
        if key in _HELD:
            _HELD[key][0] += 1
            self._held = True
            return self
        created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise (file_system_error(error, self.folder, what="create folder") or error) from None
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as error:
                if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                    return self  # nothing can be written here, so nothing to protect (see above)
                raise (file_system_error(error, self.path) or error) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                busy = error.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
                holder = self.holder() if busy and time.monotonic() >= deadline else None
                os.close(fd)
                if not busy:
                    raise
                if holder is not None:
                    raise FolderInUse(f"{self.folder} is in use by {holder}; {self.fix}") from None
                time.sleep(0.05)
                continue
            if self._still_named(fd):
                break
            os.close(fd)  # the holder released it and removed the file meanwhile: lock the file there now
        self._held = True
        _HELD[key] = [1, fd, created]
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
                  "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        with contextlib.suppress(OSError):  # (a full disk: the lock holds all the same, its holder unnamed)
            os.ftruncate(fd, 0)  # (a record left by a killed holder)
            os.write(fd, (json.dumps(record) + "\n").encode())
        return self

    def _still_named(self, fd: int) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def holder(self) -> str:
        """Who holds the lock, as its file says: `process 123 on host (senet train ...), running since ...`."""
        for _ in range(20):  # the holder writes its record just after it takes the lock
            try:
                record = json.loads(self.path.read_text())
                return (f"process {record['pid']} on {record['host']} ({record['command']}), running since "
                        f"{record['since']}")
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.05)
        return "another process"

    def release(self) -> None:
        """Drop the lock and remove its file (and the folder, if the lock made it and nothing else is in it)."""
        if not self._held:
            return
        self._held = False
        key = self.folder.resolve()
        _HELD[key][0] -= 1
        if _HELD[key][0] > 0:
            return
        _, fd, created = _HELD.pop(key)
        with contextlib.suppress(OSError):
            self.path.unlink()  # (before the lock goes: see the module's docstring)
            if created:
                self.folder.rmdir()  # only if empty: a refused command leaves no folder behind
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
