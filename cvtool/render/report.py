"""The HTML report of a run: one self-contained page (``cvtool report``, ``--report FILE``).

Records of any subcommand (JSON Lines or CSV files, stdin, the shard folders of ``--engine ray``)
and training-run folders (``runs/NAME``) go in; one HTML file comes out. The page holds its own
script, style and pictures (small JPEG/PNG thumbnails as ``data:`` URIs) and refuses every network
request through a Content-Security-Policy. Full pictures are linked by relative path when they exist.

Everything from the records reaches the page as JSON inside a ``<script type="application/json">``
block (with ``<``, ``>``, ``&`` escaped as ``\\u003c`` …, so no string can close the block) and is put
into the page by the script with ``textContent`` and DOM properties only: a file named
``<img src=x onerror=alert(1)>.jpg`` shows as text.

Size bound (docs/report.md): about 30 KB of script and style, plus the records in compact form
(roughly 0.3 KB per record and 40 bytes per box), plus thumbnails: at most ``thumb_px`` pixels on
the long side (320, or 160 above 2,000 pictures), JPEG quality 70, one per distinct picture, and
never more than ``thumb_budget`` bytes in all (default 48 MiB). Once the budget is spent, the
remaining cards show the picture's link instead of a thumbnail.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Iterable
from urllib.parse import quote

import numpy as np

THUMB_PX = 320
THUMB_PX_MANY = 160  # above MANY_PICTURES distinct pictures
MANY_PICTURES = 2000
THUMB_BUDGET = 48 * 1024 * 1024
JPEG_QUALITY = 70


class ReportError(Exception):
    """A records input cannot be used at all (missing file, unknown folder); the message names it."""


@dataclass
class Loaded:
    records: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # training runs
    problems: list[str] = field(default_factory=list)  # one line per skipped line/file
    seconds: float | None = None  # wall time of the run, when known
    bases: dict[int, str] = field(default_factory=dict)  # record index → folder of its records file


# ------------------------------------------------------------------------------------------ reading

_STRING_KEYS = {"source", "error", "label", "caption", "model", "task", "backend", "provider", "device",
                "kind", "mode", "method", "saved", "depth16", "npy", "mask_png", "yolo_txt", "layer", "rounding"}
_NUM = re.compile(r"^-?\d+(\.\d*)?([eE][-+]?\d+)?$")


def _csv_value(key: str, v: str):
    if v == "":
        return None
    if key.rsplit(".", 1)[-1] in _STRING_KEYS:
        return v
    if v in ("true", "false"):
        return v == "true"
    if v[0] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    if _NUM.match(v):
        f = float(v)
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    return v


def _unflatten(row: dict) -> dict:
    out: dict = {}
    for key, v in row.items():
        if key is None:
            continue
        parts = key.split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {}) if isinstance(d.get(p, {}), dict) else {}
        d[parts[-1]] = _csv_value(key, v)
    return _collapse(out)


def _collapse(d: dict):
    """An object whose every column was empty (an error record's ``image_size``) was null."""
    for k, v in d.items():
        if isinstance(v, dict):
            d[k] = _collapse(v) if any(x is not None for x in v.values()) else None
    return d


def _parse_text(text: str, name: str, loaded: Loaded, base: str | None) -> None:
    """Records from the text of a JSONL or CSV file (told apart by the first character)."""
    start = len(loaded.records)
    stripped = text.lstrip()
    if stripped.startswith("{") or not stripped:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                loaded.problems.append(f"{name}:{n}: not a JSON record, skipped")
                continue
            if not isinstance(rec, dict) or "source" not in rec:
                loaded.problems.append(f"{name}:{n}: not a cvtool record (no 'source'), skipped")
                continue
            loaded.records.append(rec)
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "source" not in reader.fieldnames:
            raise ReportError(f"{name}: neither JSON Lines nor a CSV file of cvtool records (no 'source' column)")
        for row in reader:
            loaded.records.append(_unflatten(row))
    if base is not None:
        for i in range(start, len(loaded.records)):
            loaded.bases[i] = base


def _read_shards(folder: Path, loaded: Loaded) -> None:
    from cvtool.scale.store import SHARD_PREFIX, SUMMARY

    names = sorted(os.listdir(folder))
    start = len(loaded.records)
    for n in names:
        if not n.startswith(SHARD_PREFIX):
            continue
        p = folder / n
        if n.endswith(".jsonl"):
            _parse_text(p.read_text(encoding="utf-8", errors="replace"), str(p), loaded, None)
        elif n.endswith(".parquet"):
            try:
                import pyarrow.parquet as pq
            except ImportError:
                loaded.problems.append(f"{p}: Parquet shard skipped (pyarrow is not installed)")
                continue
            for rec in pq.read_table(p).to_pylist():
                loaded.records.append({k: v for k, v in rec.items() if v is not None or k in ("error", "frame")})
    part = loaded.records[start:]
    part.sort(key=lambda r: (str(r.get("source")), r.get("frame") if r.get("frame") is not None else -1))
    loaded.records[start:] = part
    summary = folder / SUMMARY
    if summary.exists():
        try:
            s = json.loads(summary.read_text())
            secs = s.get("seconds") or s.get("wall_s") or s.get("elapsed_s")
            if isinstance(secs, (int, float)):
                loaded.seconds = (loaded.seconds or 0) + float(secs)
        except ValueError:
            loaded.problems.append(f"{summary}: unreadable, ignored")


def _read_train_run(folder: Path, loaded: Loaded) -> None:
    run: dict = {"name": folder.name, "path": str(folder)}
    try:
        cfg = json.loads((folder / "config.json").read_text())
        run["config"] = {k: cfg.get(k) for k in ("data", "model", "epochs", "batch", "lr", "optimizer") if k in cfg}
    except (OSError, ValueError):
        run["config"] = {}
    metrics = []
    mpath = folder / "metrics.jsonl"
    if mpath.exists():
        for line in mpath.read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:
                loaded.problems.append(f"{mpath}: a line that is not JSON, skipped")
    run["metrics"] = metrics
    try:
        ev = json.loads((folder / "eval.json").read_text())
    except (OSError, ValueError):
        ev = {}
    run["best_epoch"] = ev.get("best_epoch")
    run["evals"] = {k: ev[k] for k in ("test", "val") if isinstance(ev.get(k), dict)}
    loaded.runs.append(run)


def load_inputs(inputs: Iterable[str], stdin: IO[str] | None = None) -> Loaded:
    """Read every input: JSONL/CSV files, ``-`` (stdin), Ray shard folders, training-run folders."""
    loaded = Loaded()
    for arg in inputs:
        if arg == "-":
            _parse_text((stdin or sys.stdin).read(), "<stdin>", loaded, None)
            continue
        p = Path(arg)
        if p.is_dir():
            names = set(os.listdir(p))
            if "metrics.jsonl" in names or "eval.json" in names or "config.json" in names and "best.pt" in names:
                _read_train_run(p, loaded)
            elif any(n.startswith("part-") for n in names) or "_cvtool_run.json" in names:
                _read_shards(p, loaded)
            else:
                raise ReportError(f"{arg}: a folder that is neither a training run (metrics.jsonl) "
                                  "nor an --engine ray output folder (part-*.jsonl)")
            continue
        if not p.exists():
            raise ReportError(f"{arg}: no such file")
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise ReportError(f"{arg}: cannot read it ({e.strerror})") from None
        _parse_text(text, arg, loaded, str(p.resolve().parent))
    return loaded


# ------------------------------------------------------------------------------------- pictures

class Pictures:
    """Thumbnails and overlays as data URIs, one per distinct file, within a byte budget."""

    def __init__(self, px: int, budget: int):
        self.px, self.budget, self.used = px, budget, 0
        self.uris: list[str] = []
        self.index: dict[tuple, int] = {}
        self.skipped = 0

    def _add(self, key: tuple, make) -> int | None:
        if key in self.index:
            return self.index[key]
        if self.used >= self.budget:
            self.skipped += 1
            return None
        try:
            uri = make()
        except Exception:  # an unreadable picture just has no thumbnail; the card still shows
            uri = None
        if uri is None:
            self.index[key] = None
            return None
        self.used += len(uri)
        self.index[key] = len(self.uris)
        self.uris.append(uri)
        return self.index[key]

    def _small(self, rgb: np.ndarray, interp=None) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        s = self.px / max(h, w)
        if s < 1:
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                             interpolation=cv2.INTER_AREA if interp is None else interp)
        return rgb

    @staticmethod
    def _jpeg(rgb: np.ndarray) -> str:
        import cv2

        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")

    @staticmethod
    def _png_rgba(rgba: np.ndarray) -> str:
        import cv2

        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]))
        return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")

    def photo(self, path: str) -> int | None:
        from cvtool.io.decode import decode_image

        def make():
            px = self.px
            d = decode_image(path, draft=lambda w, h: (min(w, px), min(h, px)))
            return self._jpeg(self._small(d.rgb))

        return self._add(("photo", path), make)

    def video_frames(self, path: str, frames: set[int]) -> dict[int, int | None]:
        """Thumbnails of the given frames of a video, reading it once."""
        from cvtool.io.decode import iter_video_frames

        got: dict[int, int | None] = {}
        todo = sorted(f for f in frames if ("frame", path, f) not in self.index)
        for f in frames:
            if ("frame", path, f) in self.index:
                got[f] = self.index[("frame", path, f)]
        if todo:
            want = set(todo)
            try:
                for idx, _ts, rgb, _fps in iter_video_frames(path):
                    if idx in want:
                        small = self._small(rgb)
                        got[idx] = self._add(("frame", path, idx), lambda s=small: self._jpeg(s))
                        want.discard(idx)
                        if not want or self.used >= self.budget:
                            break
            except Exception:
                pass
        return got

    def saved(self, path: str) -> int | None:
        """A picture cvtool wrote (depth colour map, heat map, attack images) as a JPEG thumbnail."""
        from cvtool.io.decode import decode_image

        return self._add(("photo", path), lambda: self._jpeg(self._small(decode_image(path).rgb)))

    def semantic_overlay(self, mask_png: str) -> int | None:
        import cv2

        from cvtool.io.masks import read_index_png, voc_palette

        def make():
            idx = read_index_png(mask_png)
            idx = self._small(idx.astype(np.uint8), interp=cv2.INTER_NEAREST)
            rgba = np.zeros(idx.shape + (4,), np.uint8)
            rgba[..., :3] = voc_palette()[idx]
            rgba[..., 3] = np.where((idx == 0) | (idx == 255), 0, 255)
            return self._png_rgba(rgba)

        return self._add(("mask", mask_png), make)

    def instance_overlay(self, key: str, instances: list[dict]) -> int | None:
        import cv2

        from cvtool.io.masks import rle_decode
        from cvtool.render.draw import _color

        def make():
            rgba = None
            for k, inst in enumerate(instances):
                m = rle_decode(inst["rle"]).astype(np.uint8)
                m = self._small(m, interp=cv2.INTER_NEAREST).astype(bool)
                if rgba is None:
                    rgba = np.zeros(m.shape + (4,), np.uint8)
                rgba[m, :3] = _color(int(inst.get("class_id", k)))
                rgba[m, 3] = 255
            return None if rgba is None else self._png_rgba(rgba)

        return self._add(("rle", key), make)


def _existing(path, bases: list[str]) -> str | None:
    if not isinstance(path, str) or not path or "://" in path:
        return None
    if os.path.isabs(path):
        return path if os.path.isfile(path) else None
    for b in bases:
        p = os.path.join(b, path)
        if os.path.isfile(p):
            return os.path.abspath(p)
    return None


def _href(path: str, out_dir: str) -> str:
    """A relative link from the page's folder, every unusual character percent-encoded (so a
    path can never become ``javascript:`` or break out of the attribute)."""
    rel = os.path.relpath(path, out_dir)
    return quote(rel.replace(os.sep, "/"), safe="/")


# ------------------------------------------------------------------------------------- the view

def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _r(x, nd=6):
    x = _num(x)
    return None if x is None else round(float(x), nd)


def _view(rec: dict, task: str, pics: Pictures, find) -> tuple[dict, float | None, list[str], list[float]]:
    """The task's part of a card: (view, score used for sorting/filtering, labels, scores for the histogram)."""
    v: dict = {}
    labels: list[str] = []
    scores: list[float] = []
    score = None
    if task == "classify" or (rec.get("topk") is not None and task not in ("attack", "visualize")):
        top = rec.get("topk") or ([{"label": rec.get("label"), "score": rec.get("score")}] if rec.get("label") else [])
        v["topk"] = [[str(t.get("label")), _r(t.get("score"))] for t in top if isinstance(t, dict)]
        score = _r(rec.get("score"))
        if rec.get("label") is not None:
            labels.append(str(rec["label"]))
        if score is not None:
            scores.append(score)
    if isinstance(rec.get("detections"), list):
        dets = [d for d in rec["detections"] if isinstance(d, dict)]
        v["boxes"] = [[*[_r(c, 2) for c in (d.get("box") or [0, 0, 0, 0])[:4]], _r(d.get("score")), str(d.get("label"))]
                      for d in dets]
        labels += [str(d.get("label")) for d in dets]
        scores += [s for s in (_r(d.get("score")) for d in dets) if s is not None]
        score = max((b[4] for b in v["boxes"] if b[4] is not None), default=None)
    if task == "segment":
        size = rec.get("mask_size") or rec.get("image_size") or {}
        area = (size.get("width") or 0) * (size.get("height") or 0)
        if isinstance(rec.get("classes"), list):
            v["shares"] = [[str(c.get("label")), _r(c.get("fraction"))] for c in rec["classes"]]
            labels += [str(c.get("label")) for c in rec["classes"] if c.get("class_id") not in (0, 255)]
            mp = find(rec.get("mask_png"))
            if mp:
                v["overlay"] = pics.semantic_overlay(mp)
        elif isinstance(rec.get("instances"), list):
            inst = [i for i in rec["instances"] if isinstance(i, dict)]
            v["boxes"] = [[*[_r(c, 2) for c in (i.get("box") or [0, 0, 0, 0])[:4]], _r(i.get("score")), str(i.get("label"))]
                          for i in inst]
            shares: dict[str, float] = {}
            for i in inst:
                shares[str(i.get("label"))] = shares.get(str(i.get("label")), 0) + (i.get("area") or 0) / max(area, 1)
            v["shares"] = [[k, round(s, 6)] for k, s in sorted(shares.items(), key=lambda kv: -kv[1])]
            labels += [str(i.get("label")) for i in inst]
            scores += [s for s in (_r(i.get("score")) for i in inst) if s is not None]
            score = max((b[4] for b in v["boxes"] if b[4] is not None), default=None)
            if inst and all(isinstance(i.get("rle"), dict) for i in inst):
                v["overlay"] = pics.instance_overlay(f"{rec.get('source')}#{rec.get('frame')}", inst)
    elif task == "depth":
        d = rec.get("depth") or {}
        v["depth"] = {k: _r(d.get(k), 6) for k in ("min", "max", "median", "mean")}
        sp = find(rec.get("saved"))
        if sp and rec.get("frame") is None:
            v["side"] = [["depth", pics.saved(sp)]]
    elif task == "caption":
        v["caption"] = str(rec.get("caption") or "")
        v["kind"] = str(rec.get("kind") or "")
        fl = rec.get("from_labels") or {}
        labels += [str(o.get("label")) for o in fl.get("objects") or [] if isinstance(o, dict)]
        clf = fl.get("classifier") or {}
        if clf.get("used") and clf.get("label") is not None:
            labels.append(str(clf["label"]))
        dets = [d for d in (fl.get("detector") or {}).get("detections") or [] if isinstance(d, dict)]
        if dets:  # the boxes the sentence was built from
            v["boxes"] = [[*[_r(c, 2) for c in (d.get("box") or [0, 0, 0, 0])[:4]], _r(d.get("score")),
                           str(d.get("label"))] for d in dets]
    elif task == "visualize":
        pred = rec.get("prediction") or {}
        tgt = rec.get("target") or {}
        v["method"] = str(rec.get("method") or "")
        v["pred"] = [str(pred.get("label")), _r(pred.get("score"))] if pred else None
        v["target"] = [str(tgt.get("label")), _r(tgt.get("score"))] if tgt else None
        score = _r(pred.get("score"))
        if pred.get("label") is not None:
            labels.append(str(pred["label"]))
        saved = rec.get("saved") or {}
        sp = find(saved.get("picture") if isinstance(saved, dict) else saved)
        if sp:
            v["heat"] = pics.saved(sp)
    elif task == "attack":
        clean, adv = rec.get("clean") or {}, rec.get("adversarial") or {}
        v["clean"] = [str(clean.get("label")), _r(clean.get("score"))]
        v["adv"] = [str(adv.get("label")), _r(adv.get("score"))]
        v["success"] = bool(rec.get("success"))
        a = rec.get("attack") or {}
        v["method"] = f"{a.get('method', '')} {a.get('norm', '')} eps {a.get('eps_255', '')}/255".strip()
        score = _r(adv.get("score"))
        labels += [x for x in {str(clean.get("label")), str(adv.get("label"))} if x != "None"]
        saved = rec.get("saved") or {}
        if isinstance(saved, dict):
            side = []
            for k in ("clean", "adv", "perturbation"):
                p = find(saved.get(k))
                if p:
                    side.append([k, pics.saved(p)])
            v["side"] = side
    return v, score, labels, scores


def _summary(records: list[dict], seconds: float | None) -> dict:
    def counts(key):
        c: dict[str, int] = {}
        for r in records:
            if r.get("ok") and r.get(key) is not None:
                c[str(r[key])] = c.get(str(r[key]), 0) + 1
        return sorted(c.items(), key=lambda kv: -kv[1])

    ok = sum(1 for r in records if r.get("ok"))
    s = {k: counts(k) for k in ("task", "model", "backend", "provider", "device")}
    s.update(records=len(records), ok=ok, failed=len(records) - ok,
             videos=len({r.get("source") for r in records if r.get("frame") is not None}))
    if seconds:
        s["throughput"] = f"{len(records) / seconds:.1f} records/s over {seconds:.2f} s (wall time of the run)"
    else:
        inf = [r["time_ms"].get("inference", r["time_ms"].get("total")) for r in records
               if r.get("ok") and isinstance(r.get("time_ms"), dict)]
        inf = [x for x in inf if _num(x) is not None]
        if inf:
            s["throughput"] = (f"{1000 * len(inf) / max(sum(inf), 1e-9):.1f} pictures/s of model time "
                               f"(mean {sum(inf) / len(inf):.1f} ms per picture; the run's wall time is not in the records)")
    return s


def build_page(loaded: Loaded, out_path: str | os.PathLike, *, title: str | None = None,
               thumb_budget: int = THUMB_BUDGET, embed: bool = True) -> str:
    """The HTML text of the report for ``loaded``, with links relative to ``out_path``'s folder."""
    out_dir = os.path.dirname(os.path.abspath(out_path))
    records = loaded.records
    distinct = len({(r.get("source"), r.get("frame")) for r in records})
    pics = Pictures(THUMB_PX if distinct <= MANY_PICTURES else THUMB_PX_MANY, thumb_budget if embed else 0)
    cwd = os.getcwd()

    # Video frames first, one pass per video.
    vid_frames: dict[str, set[int]] = {}
    for i, r in enumerate(records):
        if r.get("ok") and isinstance(r.get("frame"), int):
            p = _existing(r.get("source"), [cwd] + ([loaded.bases[i]] if i in loaded.bases else []))
            if p:
                vid_frames.setdefault(p, set()).add(r["frame"])
    frame_thumbs = {p: pics.video_frames(p, fs) for p, fs in vid_frames.items()} if embed else {}

    out_recs = []
    label_hist: dict[str, int] = {}
    score_hist = [0] * 10
    for i, r in enumerate(records):
        bases = [cwd] + ([loaded.bases[i]] if i in loaded.bases else [])
        find = (lambda p, b=bases: _existing(p, b))
        task = str(r.get("task") or "")
        ok = bool(r.get("ok"))
        src = r.get("source")
        src_file = find(src)
        frame = r.get("frame") if isinstance(r.get("frame"), int) else None
        size = r.get("image_size") if isinstance(r.get("image_size"), dict) else {}
        c = {"i": i, "src": str(src), "task": task, "ok": ok}
        if frame is not None:
            c["frame"] = frame
            if _num(r.get("timestamp")) is not None:
                c["ts"] = r["timestamp"]
        if not ok:
            c["err"] = str(r.get("error") or "failed (no reason given)")
        if size.get("width") and size.get("height"):
            c["w"], c["h"] = size["width"], size["height"]
        if src_file:
            c["href"] = _href(src_file, out_dir)
            if embed and frame is None and task != "attack":
                t = pics.photo(src_file)
                if t is not None:
                    c["t"] = t
            elif frame is not None:
                t = frame_thumbs.get(src_file, {}).get(frame)
                if t is not None:
                    c["t"] = t
        if ok or any(k in r for k in ("detections", "topk", "classes", "instances")):
            view, score, labels, scores = _view(r, task, pics, find)
            view = {k: val for k, val in view.items() if val is not None}
            if view:
                c["v"] = view
            if score is not None:
                c["score"] = score
            if labels:
                c["labels"] = sorted(set(labels))
            for lab in labels:
                label_hist[lab] = label_hist.get(lab, 0) + 1
            for s in scores:
                score_hist[min(9, max(0, int(s * 10)))] += 1
        out_recs.append(c)

    data = {
        "title": title or "cvtool report",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "summary": _summary(records, loaded.seconds),
        "labelHist": sorted(label_hist.items(), key=lambda kv: (-kv[1], kv[0])),
        "scoreHist": score_hist,
        "thumbs": pics.uris,
        "thumbsSkipped": pics.skipped,
        "thumbPx": pics.px,
        "records": out_recs,
        "runs": loaded.runs,
        "problems": loaded.problems,
    }
    return render_html(data)


def _json_for_script(data) -> str:
    """JSON that cannot end the surrounding <script> element or open a comment in it."""
    s = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _asset(name: str) -> str:
    return resources.files("cvtool.render").joinpath("report_assets", name).read_text(encoding="utf-8")


def render_html(data: dict) -> str:
    nonce = secrets.token_urlsafe(18)
    csp = (f"default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
           "base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
        "<meta name=\"referrer\" content=\"no-referrer\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{html.escape(str(data.get('title', 'cvtool report')))}</title>\n"
        f"<style nonce=\"{nonce}\">\n{_asset('report.css')}</style>\n</head>\n<body>\n"
        "<noscript>This report needs JavaScript to show the records.</noscript>\n"
        f"<script type=\"application/json\" id=\"cv-data\">{_json_for_script(data)}</script>\n"
        f"<script nonce=\"{nonce}\">\n{_asset('report.js')}</script>\n</body>\n</html>\n")


def write_report(loaded: Loaded, out_path: str | os.PathLike, *, overwrite: bool = False,
                 title: str | None = None, thumb_budget: int = THUMB_BUDGET) -> int:
    """Build the page and write it atomically; returns its size in bytes."""
    from cvtool.io.sinks import write_bytes_atomic

    page = build_page(loaded, out_path, title=title, thumb_budget=thumb_budget).encode("utf-8")
    write_bytes_atomic(out_path, page, overwrite=overwrite)
    return len(page)


def report_from_records(records: list[dict], out_path: str | os.PathLike, *, seconds: float | None = None,
                        overwrite: bool = False, runs: list[str] | None = None) -> int:
    """``--report FILE`` at the end of a run: the records it emitted (and a training run folder)."""
    loaded = Loaded(records=list(records), seconds=seconds)
    for folder in runs or []:
        _read_train_run(Path(folder), loaded)
    return write_report(loaded, out_path, overwrite=overwrite)
