"""Training data: built-in sets, image folders and CSV files, splits, augmentation and batches.

Every source ends as :class:`ImageSet` tensors of the network's input, made the way
``cvtool classify`` makes it, so that what the model learns from is what it will see:

* image folders and CSV files: each picture is decoded by :func:`cvtool.io.decode.decode_image`
  (the one decode path, with the same JPEG draft scaling) and cut to the network input by the
  model's :class:`~cvtool.models.preprocess.Preprocess` (shorter side to ``resize``, centre crop
  ``crop``). Random-crop augmentation starts instead from the picture with its shorter side at
  ``resize`` (kept whole). Pictures that cannot be read are reported (one line each), counted
  and skipped;
* ``fashion-mnist`` (28×28 grey, 60,000 train + 10,000 test) from the Debian package
  ``dataset-fashion-mnist``, else torchvision's downloader when online;
* ``digits`` (8×8 grey, 1,797 pictures) bundled with scikit-learn; a fixed stratified fifth
  (seed 0) is its test set.

Tensors are uint8 ``(N, C, S, S)`` with ``C`` = 1 for grey sets and 3 otherwise. The network
always receives three channels (grey is repeated), which is what a photo gives at inference.
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cvtool.train.config import DataError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
BUILTINS = ("fashion-mnist", "digits")
SPLIT_SEED = 0  # validation and test splits do not move with --seed, so runs stay comparable


@dataclass
class ImageSet:
    """Pictures of one split. ``x``: uint8 ``(N, C, S, S)``, the network input as classify makes it;
    ``full``: for random crops, each picture ``(C, h, w)`` uint8 with its shorter side at the
    preprocessing's ``resize`` (None when ``x`` is the whole picture already)."""

    x: torch.Tensor
    y: torch.Tensor
    sources: list[str] | None = None
    full: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: torch.Tensor | Sequence[int]) -> "ImageSet":
        idx = torch.as_tensor(idx, dtype=torch.int64)
        return ImageSet(self.x[idx], self.y[idx],
                        [self.sources[i] for i in idx.tolist()] if self.sources is not None else None,
                        [self.full[i] for i in idx.tolist()] if self.full is not None else None)


@dataclass
class Dataset:
    name: str
    kind: str  # "builtin" | "folder" | "csv"
    classes: list[str]
    grey: bool
    train: ImageSet | None
    val: ImageSet | None
    test: ImageSet | None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    notes: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return 1 if self.grey else 3

    def counts(self) -> dict:
        return {k: len(getattr(self, k)) if getattr(self, k) is not None else 0 for k in ("train", "val", "test")}


# ---------------------------------------------------------------------------------------------
# splits


def stratified_split(y: torch.Tensor, frac: float, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(keep, held_out)``: ``frac`` of every class held out (at least one picture of
    each class that has two or more), chosen at random with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = int(round(len(idx) * frac))
        if frac > 0 and n == 0 and len(idx) >= 2:
            n = 1
        held.append(idx[:n])
        keep.append(idx[n:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values


def stratified_subset(y: torch.Tensor, n: int, seed: int = SPLIT_SEED) -> torch.Tensor:
    """About ``n`` indices with the class proportions of ``y``."""
    if n >= len(y):
        return torch.arange(len(y))
    _, held = stratified_split(y, n / len(y), seed)
    return held


# ---------------------------------------------------------------------------------------------
# built-in sets


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An MNIST-style IDX file (gzip) → numpy array, checking its header."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    if len(data) < 8 or struct.unpack(">I", data[:4])[0] != magic:
        raise DataError(f"{path}: not an IDX file of the expected kind (bad magic number)")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated ({body.size} bytes of data for shape {dims})")
    return body.reshape(dims)


def _fashion_mnist_dir(notify: Callable[[str], None]) -> Path:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    extra = os.environ.get("CVTOOL_FASHION_MNIST")
    for d in ((extra,) if extra else ()) + FASHION_MNIST_DIRS:
        if all((Path(d) / n).is_file() for n in names):
            return Path(d)
    from cvtool.models.weights import cache_home, offline

    root = cache_home() / "datasets"
    raw = root / "FashionMNIST" / "raw"
    if all((raw / n).is_file() for n in names):
        return raw
    if offline():
        raise DataError("fashion-mnist: not installed and offline (CVTOOL_OFFLINE is set). Install the "
                        "Debian package `dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist/), "
                        "or set CVTOOL_FASHION_MNIST to a folder with the four *-ubyte.gz files")
    notify(f"fashion-mnist: not installed; downloading it with torchvision into {root}")
    try:
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"fashion-mnist: not installed, and the download failed "
                        f"({(str(e).splitlines() or [type(e).__name__])[0][:200]}). Install the Debian "
                        "package `dataset-fashion-mnist` or set CVTOOL_FASHION_MNIST") from None
    return raw


def load_fashion_mnist(notify: Callable[[str], None]) -> Dataset:
    d = _fashion_mnist_dir(notify)
    sets = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(d / f"{prefix}-images-idx3-ubyte.gz", 2051)
        y = _read_idx(d / f"{prefix}-labels-idx1-ubyte.gz", 2049)
        if len(x) != len(y):
            raise DataError(f"fashion-mnist in {d}: {len(x)} {split} images but {len(y)} labels")
        sets[split] = ImageSet(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    return Dataset("fashion-mnist", "builtin", list(FASHION_MNIST_CLASSES), True, sets["train"], None,
                   sets["test"], notes=[f"fashion-mnist from {d}"])


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: ``(1797, 8, 8)`` values 0-16 and their labels. Read straight
    from the CSV file scikit-learn ships (importing ``sklearn.datasets`` costs over a second);
    through its loader when the file is not where it used to be."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.origin:
        raise DataError("digits: the 8x8 digits ship with scikit-learn, which is not installed "
                        "(pip install scikit-learn)")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        a = np.loadtxt(path, delimiter=",", dtype=np.float64)
        if a.ndim == 2 and a.shape[1] == 65:
            return a[:, :64].reshape(-1, 8, 8), a[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return bunch.images, bunch.target.astype(np.int64)


def load_digits() -> Dataset:
    images, target = _digits_arrays()
    x = torch.from_numpy(np.round(images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(target)
    train_idx, test_idx = stratified_split(y, 0.2)
    full = ImageSet(x, y)
    return Dataset("digits", "builtin", [str(i) for i in range(10)], True, full.subset(train_idx), None,
                   full.subset(test_idx), notes=["digits: scikit-learn's 8x8 digits, test = a fixed stratified 20%"])


def resize_set(s: ImageSet | None, size: int) -> ImageSet | None:
    """Built-in sets at another size (``--imgsz``): area averaging down, bilinear up."""
    if s is None or s.x.shape[-1] == size:
        return s
    import torch.nn.functional as F

    x = s.x.float()
    x = F.interpolate(x, size=(size, size), mode="area") if size < x.shape[-1] else \
        F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ImageSet(x.round().clamp(0, 255).to(torch.uint8), s.y, s.sources, None)


# ---------------------------------------------------------------------------------------------
# folders and CSV files


def _is_image(name: str) -> bool:
    from cvtool.io.decode import IMAGE_EXTENSIONS

    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_folder(root: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """``root/CLASS/**/*.jpg`` → (classes, paths, labels, ignored non-image files)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels, ignored = [], [], []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(root / c):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                p = os.path.join(dirpath, f)
                if _is_image(f):
                    paths.append(p)
                    labels.append(c)
                else:
                    ignored.append(p)
    return classes, paths, labels, ignored


def scan_folder(data: Path) -> dict[str, tuple[list[str], list[str]]]:
    """The splits of an image folder: ``DATA/{train,val,test}/CLASS/…`` or ``DATA/CLASS/…``.
    Returns split → (paths, class names), plus the classes (train's) under ``"classes"``."""
    splits: dict = {}
    has_train = (data / "train").is_dir()
    roots = {s: data / s for s in ("train", "val", "test") if (data / s).is_dir()} if has_train else {"train": data}
    ignored: list[tuple[str, str]] = []
    classes = None
    for split, root in roots.items():
        cls, paths, labels, ign = _class_folder(root)
        ignored += [(split, p) for p in ign]
        if split == "train":
            classes = cls
        splits[split] = (paths, labels)
    if not classes:
        raise DataError(f"{data}: no class folders found (expected {data}/CLASS/*.jpg or "
                        f"{data}/train/CLASS/*.jpg, one folder per class)")
    splits["classes"] = classes
    splits["ignored"] = ignored
    return splits


def scan_csv(path: Path) -> dict:
    """A CSV of ``path,label`` rows (optional header; an optional third ``split`` column says
    train, val or test). Relative paths are relative to the CSV file's folder."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read this CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: empty CSV file (expected rows of path,label)")
    header = [c.strip().lower() for c in rows[0]]
    col_path, col_label, col_split = 0, 1, 2 if len(rows[0]) > 2 else None
    if "label" in header or "path" in header:
        rows = rows[1:]
        if "path" not in header or "label" not in header:
            raise DataError(f"{path}: the header must name a 'path' and a 'label' column")
        col_path, col_label = header.index("path"), header.index("label")
        col_split = header.index("split") if "split" in header else None
    splits: dict = {"train": ([], []), "val": ([], []), "test": ([], [])}
    base = path.parent
    for n, r in enumerate(rows, start=2 if header and "label" in header else 1):
        if len(r) <= max(col_path, col_label):
            raise DataError(f"{path}, line {n}: expected path,label")
        p, label = r[col_path].strip(), r[col_label].strip()
        split = r[col_split].strip().lower() if col_split is not None and len(r) > col_split else "train"
        if split not in splits:
            raise DataError(f"{path}, line {n}: split {split!r} is not train, val or test")
        if not label:
            raise DataError(f"{path}, line {n}: empty label")
        splits[split][0].append(str(base / p) if not os.path.isabs(p) else p)
        splits[split][1].append(label)
    splits = {k: v for k, v in splits.items() if v[0]}
    if "train" not in splits:
        raise DataError(f"{path}: no training rows")
    splits["classes"] = sorted(set(splits["train"][1]))
    splits["ignored"] = []
    return splits


def _decode_all(paths: list[str], preprocess, keep_full: bool, workers: int | None, max_pixels: int | None,
                report: Callable[[str, str], None], progress: Callable[[int, int], None] | None):
    """Decode and preprocess every picture (threads); returns per-path results, None for failures."""
    from cvtool.io.decode import DecodeError, decode_image

    def one(path: str):
        try:
            dec = decode_image(path, max_pixels, None if keep_full else preprocess.draft_size)
            rgb = dec.rgb
            fixed = preprocess(rgb)
            full = _shorter_side(rgb, preprocess.resize or preprocess.crop) if keep_full else None
            return fixed, full, None
        except DecodeError as e:
            return None, None, str(e)
        except Exception as e:  # a codec bug must not end the whole run: report and skip the picture
            return None, None, f"cannot decode image: {(str(e).splitlines() or [type(e).__name__])[0][:200]}"

    out = [None] * len(paths)
    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for i, (fixed, full, err) in enumerate(pool.map(one, paths)):
            if err is not None:
                report(paths[i], err)
            else:
                out[i] = (fixed, full)
            if progress is not None:
                progress(i + 1, len(paths))
    return out


def _shorter_side(rgb: np.ndarray, target: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = target / min(h, w)
    if abs(s - 1) < 1e-6:
        return rgb
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def load_files(name: str, kind: str, splits: dict, preprocess, *, keep_full: bool, workers: int | None,
               max_pixels: int | None, report: Callable[[str, str], None],
               progress: Callable[[str, int, int], None] | None = None, for_eval: bool = False) -> Dataset:
    """Decode the pictures listed by :func:`scan_folder` / :func:`scan_csv` (``for_eval``: only
    the ``train`` entry is read, and it need not hold every class)."""
    classes: list[str] = splits["classes"]
    index = {c: i for i, c in enumerate(classes)}
    skipped: list[tuple[str, str]] = []

    def rep(src: str, why: str) -> None:
        skipped.append((src, why))
        report(src, why)

    for _, p in splits.get("ignored", []):
        rep(p, "not an image file (by its extension)")
    sets: dict[str, ImageSet | None] = {"train": None, "val": None, "test": None}
    for split in ("train", "val", "test"):
        if split not in splits:
            continue
        paths, labels = splits[split]
        keep_paths, keep_labels = [], []
        for p, lab in zip(paths, labels):
            if lab not in index:
                rep(p, f"class {lab!r} is not among the training classes")
            else:
                keep_paths.append(p)
                keep_labels.append(index[lab])
        results = _decode_all(keep_paths, preprocess, keep_full and split == "train", workers, max_pixels, rep,
                              (lambda i, n, s=split: progress(s, i, n)) if progress else None)
        xs, ys, srcs, fulls = [], [], [], []
        for p, lab, r in zip(keep_paths, keep_labels, results):
            if r is None:
                continue
            xs.append(torch.from_numpy(np.ascontiguousarray(r[0].transpose(2, 0, 1))))
            if r[1] is not None:
                fulls.append(torch.from_numpy(np.ascontiguousarray(r[1].transpose(2, 0, 1))))
            ys.append(lab)
            srcs.append(p)
        if xs:
            sets[split] = ImageSet(torch.stack(xs), torch.tensor(ys, dtype=torch.int64), srcs,
                                   fulls if fulls else None)
    if sets["train"] is None:
        raise DataError(f"{name}: no readable {'' if for_eval else 'training '}pictures"
                        + (f" ({len(skipped)} skipped)" if skipped else ""))
    if for_eval:
        return Dataset(name, kind, classes, False, sets["train"], None, None, skipped)
    present = set(sets["train"].y.tolist())
    missing = [c for i, c in enumerate(classes) if i not in present]
    if missing:
        raise DataError(f"{name}: class {missing[0]!r} has no readable training pictures"
                        + (f" (and {len(missing) - 1} more classes)" if len(missing) > 1 else ""))
    if len(classes) < 2:
        raise DataError(f"{name}: only one class ({classes[0]!r}); a classifier needs at least two")
    return Dataset(name, kind, classes, False, sets["train"], sets["val"], sets["test"], skipped)


def resolve_source(data: str) -> str:
    """``"builtin"``, ``"folder"`` or ``"csv"`` for a DATA argument, or a DataError."""
    if data in BUILTINS:
        return "builtin"
    p = Path(data)
    if p.is_dir():
        return "folder"
    if p.is_file() and p.suffix.lower() == ".csv":
        return "csv"
    if p.exists():
        raise DataError(f"{data}: expected a folder of class folders, a .csv of path,label, or one of "
                        f"{', '.join(BUILTINS)}")
    raise DataError(f"{data}: no such folder or file (or built-in set: {', '.join(BUILTINS)})")


# ---------------------------------------------------------------------------------------------
# augmentation and batches


class Augment:
    """Per-picture random transforms (torchvision transforms v2) on uint8 ``(C, H, W)`` tensors,
    and batch mixup. Every random draw comes from torch's global generator, whose state the
    checkpoints carry, so a resumed run draws what the uninterrupted one would have."""

    def __init__(self, size: int, channels: int, num_classes: int, *, flip: bool = False, crop: float = 0.0,
                 jitter: float = 0.0, erase: float = 0.0, mixup: float = 0.0):
        self.size = size
        self.crop = None
        self.per_picture = self.erase = self.mixup = None
        self.active = bool(flip or crop or jitter or erase or mixup)
        if not self.active:
            return
        from torchvision.transforms import v2  # imported only when needed (it takes seconds)

        steps = []
        if crop:
            self.crop = v2.RandomResizedCrop(size, scale=(float(crop), 1.0), antialias=True)
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if jitter:
            j = float(jitter)
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j if channels == 3 else 0))
        self.per_picture = v2.Compose(steps) if steps else None
        self.erase = v2.RandomErasing(p=float(erase), value=0) if erase else None
        self.mixup = v2.MixUp(alpha=float(mixup), num_classes=num_classes) if mixup else None
        self.active = bool(self.crop or self.per_picture or self.erase or self.mixup)

    def describe(self) -> str:
        parts = []
        if self.crop:
            parts.append(f"random resized crop (scale {self.crop.scale[0]:g}-1)")
        if self.per_picture is not None:
            parts += [type(t).__name__ for t in self.per_picture.transforms]
        if self.erase:
            parts.append(f"random erasing (p={self.erase.p:g})")
        if self.mixup:
            parts.append(f"mixup (alpha={self.mixup.alpha:g})")
        return ", ".join(parts) or "none"

    def pictures(self, s: ImageSet, idx: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, S, S)`` for the indices, each picture randomly transformed."""
        if not (self.crop or self.per_picture or self.erase):
            return s.x[idx]
        out = []
        for i in idx.tolist():
            img = s.full[i] if (self.crop is not None and s.full is not None) else s.x[i]
            if self.crop is not None:
                img = self.crop(img)
            if self.per_picture is not None:
                img = self.per_picture(img)
            if self.erase is not None:
                img = self.erase(img)
            out.append(img)
        return torch.stack(out)


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float ``(B, 3, H, W)`` in [0, 1] (grey repeated), what
    :class:`~cvtool.models.wrap.Normalized` takes."""
    x = x.to(torch.float32).mul_(1.0 / 255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def channel_stats(x: torch.Tensor, grey: bool) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Mean and std of uint8 ``(N, C, H, W)`` pictures on the [0, 1] scale, as 3-tuples (grey:
    one value repeated, so a grey net normalises its luma like the training pictures)."""
    n = x.shape[0]
    step = max(1, n // 20000)  # a sample is plenty for two numbers per channel
    v = x[::step].to(torch.float64) / 255.0
    if grey or v.shape[1] == 1:
        m, s = float(v.mean()), float(v.std())
        return (m, m, m), (max(s, 1e-3),) * 3
    m = v.mean(dim=(0, 2, 3)).tolist()
    s = v.std(dim=(0, 2, 3)).tolist()
    return tuple(m), tuple(max(t, 1e-3) for t in s)


def to_grey(s: ImageSet | None) -> ImageSet | None:
    """RGB pictures → one luma channel (BT.601), what a grey network computes from a photo."""
    if s is None or s.x.shape[1] == 1:
        return s

    def luma(t: torch.Tensor) -> torch.Tensor:
        w = torch.tensor((0.299, 0.587, 0.114)).view(3, 1, 1)
        return (t.to(torch.float32) * w).sum(-3, keepdim=True).round().clamp(0, 255).to(torch.uint8)

    return ImageSet(luma(s.x), s.y, s.sources, [luma(f) for f in s.full] if s.full is not None else None)
