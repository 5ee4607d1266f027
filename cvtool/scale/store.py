"""The output folder of a Ray run: records in shards, written once, read back for ``--resume``.

Layout of ``--output-dir DIR`` (a local folder, or a URI pyarrow can write: ``s3://…``)::

    DIR/part-<key>.jsonl      one shard per inference batch (or .parquet with --output-format parquet)
    DIR/_cvtool_run.json      written at the end of a run that accounted for every input

A shard's ``<key>`` is a digest of the inputs (source, frame) it holds, so a batch that Ray
runs twice (a worker died after writing it) rewrites the same file instead of adding a second
copy. Local shards are written to a temporary name and renamed; object stores (S3, GCS)
make a PUT visible all at once, so a shard is never seen half-written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Iterable, Iterator

from cvtool.scale.inputs import is_uri

SHARD_PREFIX = "part-"
FORMATS = {"jsonl": ".jsonl", "parquet": ".parquet"}
SUMMARY = "_cvtool_run.json"
# Fields every record has (docs/records.md); the rest are the task's own.
COMMON_FIELDS = ("source", "frame", "timestamp", "task", "model", "backend", "provider", "device", "ok",
                 "error", "image_size", "time_ms", "batch_size")


class StoreError(Exception):
    pass


def shard_key(keys: Iterable[tuple[str, int | None]]) -> str:
    h = hashlib.sha256()
    for source, frame in keys:
        h.update(f"{source}\0{'' if frame is None else frame}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:24]


class OutputDir:
    """A folder of record shards. Picklable (it is sent to the inference actors)."""

    def __init__(self, location: str):
        self.location = location.rstrip("/") if is_uri(location) else os.path.abspath(location)
        self.remote = is_uri(location)
        self._fs = None

    def __getstate__(self):
        return {"location": self.location, "remote": self.remote, "_fs": None}

    # -- filesystem access -------------------------------------------------------------------
    @property
    def fs(self):
        if self._fs is None:
            from pyarrow.fs import FileSystem

            self._fs, self._root = FileSystem.from_uri(self.location)
        return self._fs

    def _path(self, name: str) -> str:
        if not self.remote:
            return os.path.join(self.location, name)
        self.fs  # noqa: B018  (sets _root)
        return f"{self._root}/{name}"

    def create(self) -> None:
        try:
            if self.remote:
                self.fs.create_dir(self._root, recursive=True)
            else:
                if os.path.exists(self.location) and not os.path.isdir(self.location):
                    raise StoreError(f"--output-dir {self.location}: exists and is not a folder")
                os.makedirs(self.location, exist_ok=True)
                if not os.access(self.location, os.W_OK):
                    raise StoreError(f"--output-dir {self.location}: permission denied")
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"--output-dir {self.location}: cannot create it ({_first_line(e)})") from None

    def names(self) -> list[str]:
        """File names directly in the folder."""
        if not self.remote:
            return sorted(os.listdir(self.location)) if os.path.isdir(self.location) else []
        from pyarrow.fs import FileSelector

        infos = self.fs.get_file_info(FileSelector(self._root, allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def shards(self) -> list[str]:
        return [n for n in self.names() if n.startswith(SHARD_PREFIX) and n.endswith(tuple(FORMATS.values()))]

    def write(self, name: str, data: bytes) -> None:
        """Write ``name`` all at once (replacing a previous copy of the same shard)."""
        if self.remote:
            with self.fs.open_output_stream(self._path(name)) as fh:
                fh.write(data)
            return
        from cvtool.io.atomic import write_bytes_atomic

        write_bytes_atomic(self._path(name), data, overwrite=True)

    def read(self, name: str) -> bytes:
        if not self.remote:
            with open(self._path(name), "rb") as fh:
                return fh.read()
        with self.fs.open_input_stream(self._path(name)) as fh:
            return fh.read()

    def remove(self, name: str) -> None:
        if self.remote:
            self.fs.delete_file(self._path(name))
        else:
            os.unlink(self._path(name))

    def clear(self) -> int:
        """Remove the shards and run summary of earlier runs (``--overwrite``); returns how many."""
        gone = self.shards() + [n for n in self.names() if n == SUMMARY]
        for n in gone:
            self.remove(n)
        return len(gone)

    def remove_stale_temporaries(self) -> None:
        if not self.remote:
            for n in self.names():
                if n.startswith("." + SHARD_PREFIX) and n.endswith(".tmp"):
                    try:
                        self.remove(n)
                    except OSError:
                        pass

    # -- records -----------------------------------------------------------------------------
    def write_shard(self, records: list[dict], fmt: str) -> str:
        """Write ``records`` as one shard named after the inputs they hold; returns its name."""
        name = SHARD_PREFIX + shard_key((r["source"], r["frame"]) for r in records) + FORMATS[fmt]
        self.write(name, encode(records, fmt))
        return name

    def records(self, columns: tuple[str, ...] | None = None) -> Iterator[dict]:
        """Every record in the folder, shard by shard (``columns``: only these keys, a cheap read
        for Parquet)."""
        for name in self.shards():
            yield from decode(self.read(name), name, columns)

    def done(self) -> dict[str, set]:
        """source → the frames that have a record (``None`` for a still image or an input that
        failed as a whole)."""
        out: dict[str, set] = {}
        for r in self.records(columns=("source", "frame")):
            out.setdefault(r["source"], set()).add(r.get("frame"))
        return out


def encode(records: list[dict], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(COMMON_FIELDS)
    for r in records:  # the task's fields, in the order a result has them
        names += [k for k in r if k not in names]
    table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in records])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def decode(data: bytes, name: str, columns: tuple[str, ...] | None = None) -> Iterator[dict]:
    if name.endswith(".jsonl"):
        for line in data.decode("utf-8").splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            yield {k: r.get(k) for k in columns} if columns else r
        return
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data), columns=list(columns) if columns else None)
    for r in table.to_pylist():
        if not columns and not r.get("ok", True):
            # Parquet has a column for every field; an error record has none of the task's.
            r = {k: v for k, v in r.items() if k in COMMON_FIELDS or v is not None}
        yield r


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:200]
