"""``--save DIR``: the network-sized clean picture, the adversarial picture and the amplified
perturbation, as PNG (lossless, so the saved file is exactly the picture that was scored).

Names: ``<stem>_clean.png``, ``<stem>_adv.png``, ``<stem>_perturbation.png``; video frames
add ``_f<frame>``; a second input with the same stem gets ``_1``, ``_2``…
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cvtool.io.sinks import SinkError, _unique_stem, write_bytes_atomic


def amplify(adv: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """The perturbation as a picture: mid-grey is no change; the largest change (in any
    channel) reaches black or white. Returns ``(picture, gain)``: the 8-bit change × gain + 128."""
    d = adv.astype(np.float64) - clean.astype(np.float64)
    m = float(np.abs(d).max()) if d.size else 0.0
    gain = 127.0 / m if m > 0 else 0.0
    return np.clip(np.rint(128 + d * gain), 0, 255).astype(np.uint8), gain


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SinkError("could not encode PNG")
    return buf.tobytes()


class AttackSaver:
    def __init__(self, folder: str | os.PathLike, overwrite: bool = False):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"--save {folder}: exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"--save {folder}: cannot create it ({e.strerror})") from None
        self.overwrite = overwrite
        self._names: dict[str, str] = {}

    def save(self, source: str, frame: int | None, clean: np.ndarray, adv: np.ndarray) -> dict:
        stem = _unique_stem({"source": source, "frame": frame}, self._names)
        pert, gain = amplify(adv, clean)
        items = [(self.folder / f"{stem}_{kind}.png", kind, rgb)
                 for kind, rgb in (("adv", adv), ("perturbation", pert), ("clean", clean))]
        if not self.overwrite:  # all three or none
            for path, _, _ in items:
                if path.exists():
                    raise SinkError(f"{path} already exists (pass --overwrite to replace it)")
        out = {}
        for path, kind, rgb in items:
            write_bytes_atomic(path, encode_png(rgb), self.overwrite)
            out[kind] = str(path)
        out["perturbation_gain"] = round(gain, 3)
        return out
