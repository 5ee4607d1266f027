"""What runs on the Ray cluster: decoding (Ray Data map tasks) and inference (an actor pool).

:func:`decode_row` turns one input into network inputs through cvtool's one decode path
(:func:`~cvtool.io.decode.decode_image` for local files, :func:`~cvtool.io.decode.decode_bytes`
for bytes pyarrow read from a URI, :func:`~cvtool.io.decode.iter_video_frames` for video) and
the model's own preprocessing: one row per picture, or one error row. :class:`Infer` loads the
runner once per actor (the same :func:`~cvtool.tasks.base.make_runner` as the local engine, so
the same ONNX Runtime session), runs a batch, builds the same :class:`~cvtool.tasks.base.Record`
per picture as :func:`cvtool.tasks.base.run`, writes them as one shard and returns a one-row
summary to the driver.

Rows between the two stages use sentinels instead of nulls (``frame=-1``, ``error=""``,
``timestamp=NaN``) so that every block has the same Arrow types.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cvtool.io.decode import DecodeError, decode_bytes, decode_image, iter_video_frames
from cvtool.scale.inputs import is_uri

_FILESYSTEMS: dict[str, tuple] = {}


def _row(source: str, error: str = "", frame: int | None = None, timestamp: float | None = None,
         tensor: np.ndarray | None = None, size: tuple[int, int] = (0, 0), decode_ms: float = 0.0,
         preprocess_ms: float = 0.0) -> dict:
    return {"source": source, "frame": -1 if frame is None else int(frame),
            "timestamp": math.nan if timestamp is None else float(timestamp), "error": error,
            "tensor": b"" if tensor is None else np.ascontiguousarray(tensor).tobytes(),
            "shape": "" if tensor is None else ",".join(map(str, tensor.shape)),
            "dtype": "" if tensor is None else tensor.dtype.str,
            "width": int(size[0]), "height": int(size[1]),
            "decode_ms": float(decode_ms), "preprocess_ms": float(preprocess_ms)}


def read_uri(uri: str) -> bytes:
    """The bytes of ``uri`` through pyarrow's filesystems (S3, GCS, HDFS, local …)."""
    from pyarrow.fs import FileSystem, FileType

    from cvtool.scale.inputs import _root

    scheme, rest = uri.split("://", 1)
    head = f"{scheme}://{rest.split('/', 1)[0]}"  # one filesystem object per bucket/host
    try:
        if head not in _FILESYSTEMS:
            fs, path = FileSystem.from_uri(uri)
            _FILESYSTEMS[head] = (fs, len(_root(uri, path)))
        fs, cut = _FILESYSTEMS[head]
        path = uri[cut:]
        info = fs.get_file_info(path)
        if info.type == FileType.NotFound:
            raise DecodeError("no such file")
        if info.type == FileType.Directory:
            raise DecodeError("is a directory, not an image file")
        with fs.open_input_stream(path) as fh:
            return fh.read()
    except DecodeError:
        raise
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as e:
        raise DecodeError(f"cannot read: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}") from None


def decode_row(row: dict, *, preprocess, max_pixels: int | None, vid_stride: int) -> list[dict]:
    """One planned input → rows for the inference stage (a Ray Data ``flat_map``)."""
    import cv2

    cv2.setNumThreads(1)  # one decode task per reserved CPU
    source, path, kind = row["source"], row["path"], row["kind"]
    if kind == "error":
        return [_row(source, row["error"] or "cannot be read")]
    if kind == "video":
        return list(_video_rows(source, path, preprocess, max_pixels, vid_stride, set(row["skip"] or ())))
    try:
        t0 = time.perf_counter()
        draft = preprocess.draft_size
        dec = decode_bytes(read_uri(path), max_pixels, draft) if is_uri(path) else \
            decode_image(path, max_pixels, draft)
        t1 = time.perf_counter()
        tensor = preprocess(dec.rgb)
        t2 = time.perf_counter()
    except DecodeError as e:
        return [_row(source, str(e))]
    except MemoryError:
        return [_row(source, "out of memory while decoding")]
    except Exception as e:  # a decoder bug on one odd file must not end the run
        return [_row(source, f"internal error while decoding: {type(e).__name__}: {e}")]
    return [_row(source, tensor=tensor, size=dec.orig_size, decode_ms=(t1 - t0) * 1e3,
                 preprocess_ms=(t2 - t1) * 1e3)]


def _video_rows(source, path, preprocess, max_pixels, vid_stride, skip):
    tmp = None
    try:
        if is_uri(path):  # OpenCV reads files: bring the video over once
            fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1], prefix="cvtool-video-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(read_uri(path))
            path = tmp
        for index, ts, rgb, _fps in iter_video_frames(path, vid_stride, max_pixels):
            if index in skip:
                continue
            t0 = time.perf_counter()
            try:
                tensor = preprocess(rgb)
            except Exception as e:
                yield _row(source, f"internal error: {type(e).__name__}: {e}", frame=index)
                continue
            yield _row(source, frame=index, timestamp=ts, tensor=tensor, size=(rgb.shape[1], rgb.shape[0]),
                       preprocess_ms=(time.perf_counter() - t0) * 1e3)
    except DecodeError as e:
        yield _row(source, str(e))
    except Exception as e:
        yield _row(source, f"internal error while decoding: {type(e).__name__}: {e}")
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def summary_schema():
    import pyarrow as pa

    return pa.schema([("shard", pa.string()), ("records", pa.int64()), ("failed", pa.int64()),
                      ("sources", pa.list_(pa.string())), ("errors", pa.list_(pa.string()))])


def local_onnx(model, onnx: dict):
    """The model as an ONNX file on this node: the driver's file where this node sees it
    (same size and digest), else the bytes the driver shipped, written once to the cache."""
    import dataclasses
    import hashlib

    from cvtool.models.weights import cache_home

    def digest(p: Path) -> str:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    path = Path(onnx["path"])
    if not (path.is_file() and path.stat().st_size == onnx["size"] and digest(path) == onnx["sha256"]):
        import ray

        data = onnx["data"]
        data = ray.get(data) if isinstance(data, ray.ObjectRef) else data
        path = cache_home() / "onnx" / f"ray-{onnx['sha256'][:16]}-{path.name}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ray-", suffix=".onnx")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
    return dataclasses.replace(model, kind="onnx", onnx_file=path)


class Infer:
    """The inference actor: loads the model once, then turns batches of decoded rows into
    records, one shard per batch (a Ray Data ``map_batches`` callable class)."""

    def __init__(self, *, task: str, model, postprocess, onnx: dict | None, backend: str, device: str,
                 threads: int | None, allow_cpu_fallback: bool, output_dir, output_format: str,
                 crash_marker: str | None = None, crash_on: str | None = None):
        from cvtool.tasks.base import make_runner

        if onnx is not None:
            model = local_onnx(model, onnx)
        self.task, self.model, self.postprocess = task, model, postprocess
        self.runner = make_runner(model, backend, device, threads, notify=lambda _m: None,
                                  allow_cpu_fallback=allow_cpu_fallback)
        self.out, self.fmt = output_dir, output_format
        self.crash_marker, self.crash_on = crash_marker, crash_on

    def __call__(self, batch):
        import pyarrow as pa

        from cvtool.io.sources import Frame
        from cvtool.tasks.base import Record

        rows = batch.to_pylist()
        if self.crash_on and any(self.crash_on in r["source"] for r in rows):
            os._exit(18)  # tests only: a "poison" input that kills its worker every time
        base = dict(task=self.task, model=self.model.name)
        ready = [r for r in rows if not r["error"]]
        results: list[dict] = []
        infer_ms, failure = 0.0, None
        frames = [Frame(r["source"], None, (r["width"], r["height"]), None if r["frame"] < 0 else r["frame"],
                        None if math.isnan(r["timestamp"]) else r["timestamp"]) for r in ready]
        if ready:
            try:
                from cvtool.tasks.base import Prepared, _infer_by_shape

                prepared = [Prepared(f, np.frombuffer(r["tensor"], np.dtype(r["dtype"])).reshape(
                    tuple(int(x) for x in r["shape"].split(","))), 0.0, 0.0) for r, f in zip(ready, frames)]
                t0 = time.perf_counter()
                # one runner call per input shape (segmenters take each picture at its own size)
                results = _infer_by_shape(self.runner, self.postprocess, prepared)
                infer_ms = (time.perf_counter() - t0) * 1e3 / len(ready)
            except Exception as e:  # one bad batch becomes error records, not a failed job
                failure = f"inference failed: {type(e).__name__}: {str(e)[:300]}"
        records = []
        it, fit = iter(results), iter(frames)
        for r in rows:
            frame = None if r["frame"] < 0 else r["frame"]
            if r["error"]:
                records.append(Record(source=r["source"], frame=frame, error=r["error"], **base).to_dict())
                continue
            f = next(fit)
            if failure is not None:
                records.append(Record(source=f.source, frame=f.frame, timestamp=f.timestamp,
                                      error=failure, **base).to_dict())
                continue
            records.append(Record(
                source=f.source, frame=f.frame, timestamp=f.timestamp, backend=self.runner.backend,
                provider=self.runner.provider, device=self.runner.device, image_size=f.orig_size,
                time_ms={"decode": round(r["decode_ms"], 3), "preprocess": round(r["preprocess_ms"], 3),
                         "inference": round(infer_ms, 3)},
                batch_size=len(ready), fields=next(it), **base).to_dict())
        name = self.out.write_shard(records, self.fmt)
        self._maybe_crash()
        failed = [r for r in records if not r["ok"]]
        return pa.Table.from_pylist([{
            "shard": name, "records": len(records), "failed": len(failed),
            "sources": sorted({r["source"] for r in records}),
            "errors": [r["source"] + (f" (frame {r['frame']})" if r["frame"] is not None else "")
                       + f": {r['error']}" for r in failed]}], schema=summary_schema())

    def _maybe_crash(self) -> None:
        """Tests only: the first actor to get here dies abruptly, once per marker file, after
        writing its shard (the worst moment: Ray re-runs the batch, the shard is rewritten)."""
        if not self.crash_marker:
            return
        try:
            fd = os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(17)
