"""The inputs of a Ray run: what the user typed, expanded on the driver into one :class:`Item`
per input.

An argument may be anything the local engine takes (a file, a folder, a glob, ``-`` for paths
on stdin), a text file of paths/URIs (``.txt``, ``.lst``, ``.list``: one per line), a Parquet
or CSV manifest with a path column (``.parquet``, ``.pq``, ``.csv``), or a URI that pyarrow
opens (``s3://``, ``gs://``, ``hdfs://``, ``file://``): a file, a prefix (listed recursively
for image files, like a folder) or a glob. List and manifest entries are expanded the same
way. Local paths are made absolute (the workers open them, from their own working folder:
on a multi-node cluster they must be on storage every node sees). Inputs that cannot exist
become ``kind="error"`` items, so they still get one error record.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, TextIO

from cvtool.io.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

LIST_EXTENSIONS = (".txt", ".lst", ".list")
MANIFEST_EXTENSIONS = (".parquet", ".pq", ".csv")
# Manifest columns tried in this order when none is named.
PATH_COLUMNS = ("path", "uri", "url", "image", "image_path", "file", "filename", "source")


class InputError(Exception):
    """A list or manifest cannot be used as a whole (a usage error, not one bad input)."""


@dataclass(frozen=True)
class Item:
    source: str  # the input as records name it
    path: str  # what a worker opens: an absolute local path or a URI
    kind: str  # "image" | "video" | "error"
    error: str | None = None


def is_uri(text: str) -> bool:
    head, sep, _ = text.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").replace("-", "").isalnum()


def _kind(path: str) -> str:
    return "video" if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS else "image"


def _ext(text: str) -> str:
    return os.path.splitext(text.split("?", 1)[0])[1].lower()


def plan(inputs: Iterable[str], stdin: TextIO | None = None, null: bool = False) -> list[Item]:
    """Expand the command-line inputs, in order (folders and prefixes sorted). ``-`` reads paths
    from ``stdin``, one per line or NUL-separated (``null``), as the local engine does."""
    from cvtool.io.sources import stdin_paths

    items: list[Item] = []
    for arg in inputs:
        if arg == "-":
            for path in stdin_paths(stdin, null):
                items.extend(_entry(path))
        elif _ext(arg) in LIST_EXTENSIONS and _exists(arg):
            for line in _read_bytes(arg).decode("utf-8", errors="replace").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    items.extend(_entry(line.strip()))
        elif _ext(arg) in MANIFEST_EXTENSIONS and _exists(arg):
            for n, value in enumerate(read_manifest(arg)):
                if value:
                    items.extend(_entry(value))
                else:
                    items.append(Item(f"{arg}#{n}", "", "error", "empty path in manifest row"))
        else:
            items.extend(_entry(arg))
    return items


def _entry(text: str) -> Iterator[Item]:
    if is_uri(text):
        yield from _expand_uri(text)
        return
    from cvtool.io.sources import expand

    for src in expand([text]):
        yield Item(src.path, os.path.abspath(src.path), src.kind, src.error)


def _exists(arg: str) -> bool:
    if not is_uri(arg):
        return os.path.isfile(arg)
    try:
        fs, path = _filesystem(arg)
        from pyarrow.fs import FileType

        return fs.get_file_info(path).type == FileType.File
    except Exception:
        return False


def _filesystem(uri: str):
    from pyarrow.fs import FileSystem

    return FileSystem.from_uri(uri)


def _read_bytes(arg: str) -> bytes:
    if not is_uri(arg):
        with open(arg, "rb") as fh:
            return fh.read()
    fs, path = _filesystem(arg)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def read_manifest(arg: str, column: str | None = None) -> list[str | None]:
    """The path column of a Parquet or CSV manifest, as strings (None for empty cells)."""
    try:
        data = _read_bytes(arg)
        if _ext(arg) == ".csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(io.BytesIO(data))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
    except Exception as e:
        raise InputError(f"{arg}: cannot read this manifest ({str(e).strip().splitlines()[0][:200]})") from None
    names = table.column_names
    if column is None:
        lowered = {n.lower(): n for n in names}
        column = next((lowered[c] for c in PATH_COLUMNS if c in lowered), None)
    if column is None or column not in names:
        raise InputError(f"{arg}: no path column (expected one of {', '.join(PATH_COLUMNS)}; "
                         f"it has {', '.join(names) or 'none'})")
    return [None if v is None or str(v).strip() == "" else str(v).strip()
            for v in table.column(column).to_pylist()]


def _root(uri: str, path: str) -> str:
    """``s3://bucket/a`` with pyarrow path ``bucket/a`` → ``s3://``: what to prefix a listed
    path with to get its URI back."""
    u, p = uri.rstrip("/"), path.rstrip("/")
    if p and u.endswith(p):
        return u[: len(u) - len(p)]
    return uri.split("://", 1)[0] + "://"


def _expand_uri(uri: str) -> Iterator[Item]:
    try:
        fs, path = _filesystem(uri)
        from pyarrow.fs import FileSelector, FileType

        info = fs.get_file_info(path)
        if info.type == FileType.File:
            yield Item(uri, uri, _kind(path))
            return
        root = _root(uri, path)
        if info.type == FileType.Directory:
            found = sorted(f.path for f in fs.get_file_info(FileSelector(path, recursive=True))
                           if f.type == FileType.File and _ext(f.path) in IMAGE_EXTENSIONS)
            if not found:
                yield Item(uri, uri, "error", "folder contains no image files")
            for p in found:
                yield Item(root + p, root + p, _kind(p))
            return
        if glob.has_magic(path):
            parts = path.split("/")
            first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
            base = "/".join(parts[:first])
            base_info = fs.get_file_info(base) if base else None
            matches = []
            if base_info is not None and base_info.type == FileType.Directory:
                matches = sorted(f.path for f in fs.get_file_info(FileSelector(base, recursive=True))
                                 if f.type == FileType.File and fnmatch.fnmatchcase(f.path, path))
            if not matches:
                yield Item(uri, uri, "error", "pattern matched no files")
            for p in matches:
                yield Item(root + p, root + p, _kind(p))
            return
        yield Item(uri, uri, "error", "no such file or directory")
    except Exception as e:  # unknown scheme, no credentials, no network …
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        yield Item(uri, uri, "error", f"cannot open: {first[:200]}")
