"""Naming, listing and hooking a network's layers (the names ``--layer`` takes).

Layer names are the module paths of the bare network (``GradClassifier.net``), as
``named_modules()`` gives them: ``layer4`` or ``layer4.1.conv2`` for a ResNet, ``_blocks.15`` or
``_act_head`` for EfficientNet-Lite.
"""

from __future__ import annotations

import contextlib
import difflib

import torch
from torch import nn


class LayerError(ValueError):
    """``--layer`` names no layer of the model (the message suggests close names)."""


def layer_table(net: nn.Module, input_size: int, device=None) -> list[dict]:
    """Every named module in the order its forward pass finishes, with its output shape for one
    ``input_size``² picture: ``[{"name", "type", "shape", "params"}]``."""
    seen: list[dict] = []
    handles = []
    for name, module in net.named_modules():
        if not name:
            continue

        def hook(mod, args, output, name=name):
            shape = list(output.shape) if torch.is_tensor(output) else None
            seen.append({"name": name, "type": type(mod).__name__, "shape": shape,
                         "params": sum(p.numel() for p in mod.parameters())})
        handles.append(module.register_forward_hook(hook))
    try:
        device = device or next(net.parameters()).device
        with torch.no_grad():
            net(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    out, done = [], set()
    for row in seen:  # a module called twice (shared activation) is listed once
        if row["name"] not in done:
            done.add(row["name"])
            out.append(row)
    return out


def find_layer(net: nn.Module, name: str) -> nn.Module:
    modules = dict(net.named_modules())
    modules.pop("", None)
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, list(modules), n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise LayerError(f"--layer {name!r}: no such layer in this model.{hint} "
                     "`cvtool visualize layers` lists them.")


def last_spatial_layer(net: nn.Module, input_size: int) -> str:
    """The last layer (in forward order) whose output is a feature map with H, W > 1: the usual
    Grad-CAM layer (ResNet ``layer4``, EfficientNet-Lite ``_act_head``)."""
    table = layer_table(net, input_size)
    for row in reversed(table):
        s = row["shape"]
        if s is not None and len(s) == 4 and s[2] > 1 and s[3] > 1:
            return row["name"]
    raise LayerError("this model has no layer with a spatial feature map; pass --layer")


def first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.weight.dim() == 4:
            return name, module
    raise LayerError("this model has no convolution layer")


@contextlib.contextmanager
def capture(net: nn.Module, name: str):
    """Within the block, ``store["out"]`` holds ``name``'s most recent output (graph kept, so
    gradients can flow to and through it)."""
    module = find_layer(net, name)
    store: dict = {}

    def hook(mod, args, output):
        store["out"] = output

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
