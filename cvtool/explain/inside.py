"""Inside the network: first-layer filters, a layer's feature maps, the list of layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cvtool.explain.layers import LayerError, capture, find_layer, first_conv, layer_table


@dataclass
class View:
    image: np.ndarray  # (H, W, 3) uint8, the picture to save
    array: np.ndarray  # the raw numbers behind it (the .npy)
    info: dict = field(default_factory=dict)


def filters(clf, layer: str | None = None, tile: int = 48) -> View:
    """The weights of the first convolution (or of ``layer``, a Conv2d) as a grid of small
    pictures. With 3 input channels each filter is shown in colour, every filter scaled on its
    own to the full range (as in the course's AlexNet figure); otherwise each filter is the mean
    over its input channels, in grey."""
    from cvtool.render.heatmap import grid

    if layer is None:
        layer, conv = first_conv(clf.net)
    else:
        conv = find_layer(clf.net, layer)
        if not isinstance(conv, nn.Conv2d):
            raise LayerError(f"--layer {layer}: `filters` shows convolution weights; this layer is a "
                             f"{type(conv).__name__}")
    w = conv.weight.detach().float().cpu().numpy()  # (out, in/groups, kh, kw)
    tiles = []
    for f in w:
        if f.shape[0] == 3:
            t = f.transpose(1, 2, 0)
        else:
            t = f.mean(axis=0)
        lo, hi = t.min(), t.max()
        t = (t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)
        tiles.append((t * 255).astype(np.uint8) if t.ndim == 3 else t)
    image = grid(tiles, tile=tile)
    return View(image, w, {"layer": layer, "filters": int(w.shape[0]), "kernel": list(w.shape[2:]),
                           "in_channels": int(w.shape[1])})


def activations(clf, x: torch.Tensor, layer: str, top: int = 16, tile: int = 96) -> View:
    """``layer``'s feature maps for one picture: the ``top`` channels with the largest mean
    activation, as a grid (each channel scaled to its own range); the .npy holds every channel
    ``(C, H, W)``."""
    from cvtool.render.heatmap import grid

    with capture(clf.net, layer) as store, torch.no_grad():
        clf(x)
    a = store.get("out")
    if not torch.is_tensor(a) or a.dim() != 4:
        shape = list(a.shape) if torch.is_tensor(a) else type(a).__name__
        raise LayerError(f"--layer {layer}: `activations` shows feature maps (B, C, H, W); this layer gives {shape}")
    maps = a[0].float().cpu().numpy()
    means = maps.mean(axis=(1, 2))
    order = np.argsort(-means, kind="stable")[:max(1, top)]
    tiles = []
    for c in order:
        m = maps[c]
        lo, hi = m.min(), m.max()
        tiles.append((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))
    image = grid(tiles, tile=tile, captions=[f"#{c}" for c in order])
    return View(image, maps, {"layer": layer, "channels": int(maps.shape[0]),
                              "map_size": list(maps.shape[1:]),
                              "top_channels": [{"channel": int(c), "mean": round(float(means[c]), 5)}
                                               for c in order]})


def layers(clf) -> list[dict]:
    return layer_table(clf.net, clf.input_size)
