"""``--save DIR``: the network-sized clean picture, the adversarial picture and the amplified
perturbation, as PNG (lossless, so the saved file is exactly the picture that was scored).

Names: ``<stem>_clean.png``, ``<stem>_adv.png``, ``<stem>_perturbation.png``; video frames
add ``_f<frame>``; a second input with the same stem gets ``_1``, ``_2``…
"""

from __future__ import annotations

import os

import numpy as np

from cvtool.io.sinks import ArtifactSaver


def amplify(adv: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """The perturbation as a picture: mid-grey is no change; the largest change (in any
    channel) reaches black or white. Returns ``(picture, gain)``: the 8-bit change × gain + 128."""
    d = adv.astype(np.float64) - clean.astype(np.float64)
    m = float(np.abs(d).max()) if d.size else 0.0
    gain = 127.0 / m if m > 0 else 0.0
    return np.clip(np.rint(128 + d * gain), 0, 255).astype(np.uint8), gain


class AttackSaver:
    def __init__(self, folder: str | os.PathLike, overwrite: bool = False):
        self.files = ArtifactSaver(folder, overwrite)

    def save(self, source: str, frame: int | None, clean: np.ndarray, adv: np.ndarray) -> dict:
        stem = self.files.stem({"source": source, "frame": frame})
        pert, gain = amplify(adv, clean)
        items = [(f"{stem}_{kind}", kind, rgb) for kind, rgb in (("adv", adv), ("perturbation", pert),
                                                                  ("clean", clean))]
        for name, _, _ in items:  # all three or none
            self.files.check(name, (".png",))
        out = {kind: str(self.files.png(name, rgb)) for name, kind, rgb in items}
        out["perturbation_gain"] = round(gain, 3)
        return out
