"""The one place cvtool writes a file: to a temporary name beside it, then into place.

- A crash, Ctrl-C, SIGTERM or SIGHUP never leaves a half-written file or a stray temporary one
  (the temporaries of a run are removed on the way out, see :func:`cleanup_temporaries`).
- An existing file is never replaced unless ``overwrite``: without it the final name is created
  exclusively (a hard link from the temporary, which fails if the name appeared meanwhile, e.g.
  written by a second run), so two runs writing the same file cannot silently replace each other.
- Special files are written through, never replaced: character devices (``/dev/null``), FIFOs,
  sockets and ``/dev/stdout``-style names are opened and written directly. A symbolic link is
  followed: its target is written (atomically), the link stays.

Only the standard library here: this module is imported by ``cvtool --help``'s dependencies.
"""

from __future__ import annotations

import atexit
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable

_LIVE: set[str] = set()  # temporaries not yet moved into place or removed


class SinkError(Exception):
    """An output cannot be written (exists, not a folder, not writable, …); one-line message."""


# A full disk, an exhausted quota, a read-only file system: the user's environment, not a bug in
# cvtool; cli/app.py's main() reports them in one line (exit 2), naming the file.
ENVIRONMENT_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, n))


def is_environment_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS


def name_the_file(e: BaseException | None, path: str | os.PathLike) -> None:
    """Give a full disk's (quota's, read-only file system's) :class:`OSError`, raised while writing
    ``path`` by a stream that does not know its name, that name, so that its one-line report can
    say which file was not written."""
    if is_environment_error(e) and e.filename is None:
        e.filename = os.fspath(path)


def cleanup_temporaries() -> None:
    """Remove every temporary this process created and has not committed (at exit, on signals)."""
    for tmp in list(_LIVE):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _LIVE.discard(tmp)


atexit.register(cleanup_temporaries)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_STREAM_NAMES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def is_special(path: str | os.PathLike) -> bool:
    """True for names that must be written through rather than replaced: character and block
    devices, FIFOs, sockets (after following links) and the ``/dev/std*``, ``/dev/fd/N`` names."""
    s = os.fspath(path)
    if s.startswith(_STREAM_NAMES) or s == "/dev/stdin":
        return True
    try:
        mode = os.stat(s).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_folder_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise :class:`SinkError` unless a file can be created in ``folder`` (which must exist).
    Tries it for real (a temporary file, removed at once): permission bits say nothing for root,
    and read-only mounts (``/sys``, ``/proc``, a read-only disk) only show when writing."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".cvtool-probe-", suffix=".tmp")
    except OSError as e:
        raise SinkError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def make_folder(folder: str | os.PathLike, flag: str) -> Path:
    """Create an output folder (``--save DIR`` …) and check that files can be written in it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SinkError(f"{flag} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SinkError(f"{flag} {folder}: cannot create it ({e.strerror or e})") from None
    check_folder_writable(folder, f"{flag} {folder}")
    return folder


class AtomicFile:
    """``with AtomicFile(path) as fh:`` writes ``path`` all at once, or not at all.

    The checks (exists, is a folder, folder missing or not writable) run in ``__init__``, so a
    command can make its writers before any work and fail with one line. ``mode`` "w" gives a
    UTF-8 text stream, "wb" a binary one."""

    def __init__(self, path: str | os.PathLike, mode: str = "w", overwrite: bool = False,
                 probe: bool = True):
        self.path = Path(path)  # the name the user gave (messages)
        self.mode, self.overwrite = mode, overwrite
        self._fh: IO | None = None
        self._tmp: str | None = None
        self.special = is_special(self.path)
        if self.special:
            self.target = self.path
            return
        # a symbolic link is followed: its target is the file written (the link is kept)
        self.target = Path(os.path.realpath(self.path)) if self.path.is_symlink() else self.path
        if self.target.is_dir():
            raise SinkError(f"{self.path} is a directory")
        if self.target.exists() and not overwrite:
            raise SinkError(f"{self.path} already exists (pass --overwrite to replace it)")
        parent = self.target.parent
        if not parent.is_dir():
            raise SinkError(f"{parent}: folder does not exist")
        if probe:
            check_folder_writable(parent, str(self.path))

    def _text_kwargs(self) -> dict:
        return {} if "b" in self.mode else {"encoding": "utf-8", "newline": ""}

    def __enter__(self) -> IO:
        if self.special:
            try:
                self._fh = open(self.path, self.mode, **self._text_kwargs())
            except OSError as e:
                raise SinkError(f"cannot write {self.path} ({e.strerror or e})") from None
            return self._fh
        try:
            fd, self._tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".tmp")
        except OSError as e:
            raise SinkError(f"cannot write {self.path} ({e.strerror or e})") from None
        _LIVE.add(self._tmp)
        self._fh = os.fdopen(fd, self.mode, **self._text_kwargs())
        return self._fh

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._fh is not None
        name_the_file(exc, self.path)
        try:
            try:
                self._fh.close()  # the last buffered bytes are written here (a full disk shows here too)
            except BrokenPipeError:
                pass
            if self.special:
                return
            if exc_type is None:
                commit(self._tmp, self.target, self.overwrite, shown=self.path)
        except OSError as e:
            if is_environment_error(e):
                e.filename = os.fspath(self.path)  # the user's name, not the temporary's
            raise
        finally:
            if not self.special:
                discard(self._tmp)  # nothing partial is left behind (a no-op once committed)


def new_temporary(final: str | os.PathLike, suffix: str | None = None) -> str:
    """A fresh, empty temporary file beside ``final`` for writers that need a file name (OpenCV's
    video writer, ONNX export, ``torch.save``); tracked for clean-up until :func:`commit` or
    :func:`discard`."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.",
                               suffix=final.suffix if suffix is None else suffix)
    os.close(fd)
    _LIVE.add(tmp)
    return tmp


def discard(tmp: str | None) -> None:
    if tmp is None:
        return
    _LIVE.discard(tmp)
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def commit(tmp: str, final: str | os.PathLike, overwrite: bool, shown: str | os.PathLike | None = None,
           mode: int | None = None) -> None:
    """Move the finished temporary ``tmp`` to ``final``. Without ``overwrite`` the final name is
    created exclusively: if it exists now (another run wrote it meanwhile), ``tmp`` is removed and
    :class:`SinkError` raised. ``mode``: the file's permissions (default 0o666 minus the umask)."""
    final = os.fspath(final)
    try:
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        if overwrite:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)  # fails with EEXIST: never replaces
            except FileExistsError:
                raise SinkError(f"{shown or final} already exists (written by another run meanwhile; "
                                "pass --overwrite to replace it)") from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                    raise
                # a file system without hard links: claim the name exclusively, then rename over it
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                os.replace(tmp, final)
            else:
                os.unlink(tmp)
    finally:
        discard(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> None:
    with AtomicFile(path, "wb", overwrite, probe=False) as fh:
        fh.write(data)


def write_with(final: str | os.PathLike, write: Callable[[str], object], overwrite: bool = True,
               suffix: str | None = None, mode: int | None = None) -> Path:
    """Atomically produce ``final`` with a writer that wants a file name: ``write(tmp_path)``
    fills a temporary beside it, which is then moved into place (or removed on any error)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(final, suffix)
    try:
        write(tmp)
    except BaseException:
        discard(tmp)
        raise
    commit(tmp, final, overwrite, mode=mode)
    return final
