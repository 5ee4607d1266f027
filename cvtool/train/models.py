"""Building the network to train: the small nets of the ladder, or any registry classifier
(from scratch, or ``--pretrained`` with a new head sized to the classes), or a previous
checkpoint to fine-tune further.

The result, :class:`Built`, carries what the checkpoint will record so that
``--model runs/NAME/best.pt`` rebuilds the same network with the same preprocessing:
``arch`` (registry name), ``arch_kwargs``, ``grey_input`` and the :class:`Preprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from cvtool.models.preprocess import Preprocess
from cvtool.train.config import SMALL_NETS, TrainConfig, TrainError

# resize / crop of ImageNet-style preprocessing: the picture's shorter side is cut to 7/8.
CROP_RATIO = 224 / 256


@dataclass
class Built:
    net: nn.Module  # the bare network (Normalized is put around it by the loop)
    arch: str
    arch_kwargs: dict
    grey_input: bool
    preprocess: Preprocess
    new_params: set = field(default_factory=set)  # names of parameters that start fresh (the head)
    frozen: int = 0  # number of frozen parameter tensors
    note: str = ""


def geometry(cfg: TrainConfig, kind: str, native: int | None) -> tuple[int, int]:
    """``(resize, crop)`` of the network input for a data kind ("builtin"/"folder"/"csv").

    Built-in sets are small whole pictures: the input is the picture (``resize == crop``) at its
    native size for the small nets, or at ``--imgsz`` (registry nets default to 32 there). Folders
    and CSV files hold photos: shorter side to ``resize``, centre crop ``crop`` (ratio 7/8),
    ``crop`` = ``--imgsz`` or the registry model's own size (small nets: 64).
    """
    small = cfg.model in SMALL_NETS
    if is_checkpoint(cfg.model):
        pre = _checkpoint(cfg.model).preprocess
        if cfg.imgsz:
            return (round(cfg.imgsz * pre.resize / pre.crop) if pre.resize else cfg.imgsz), cfg.imgsz
        return pre.resize or pre.crop, pre.crop
    spec = None if small else _spec(cfg.model)
    if kind == "builtin":
        crop = cfg.imgsz or (native if small else max(32, native or 32))
        return crop, crop
    if cfg.imgsz:
        crop = cfg.imgsz
        ratio = (spec.weights.preprocess.resize / spec.weights.preprocess.crop
                 if spec is not None and spec.weights.preprocess.resize else 1 / CROP_RATIO)
        return round(crop * ratio), crop
    if spec is not None:
        return spec.weights.preprocess.resize or spec.weights.preprocess.crop, spec.weights.preprocess.crop
    return round(64 / CROP_RATIO), 64


def _spec(name: str):
    from cvtool.models import registry

    try:
        spec = registry.get(name)
    except registry.UnknownModel as e:
        raise TrainError(f"--model: {e}") from None
    if spec.task != "classify":
        raise TrainError(f"--model {name}: a {spec.task} model; `cvtool train` trains classifiers")
    return spec


def build(cfg: TrainConfig, num_classes: int, grey: bool, resize: int, crop: int,
          mean: tuple, std: tuple, notify=lambda m: None) -> Built:
    """The network for ``cfg.model`` with ``num_classes`` outputs."""
    from cvtool.models.zoo import small_nets

    channels = 1 if grey else 3
    if cfg.model in SMALL_NETS:
        kwargs: dict = {"in_channels": channels, "size": crop}
        if cfg.model == "mlp":
            kwargs.update(hidden=list(cfg.hidden or (256,)), dropout=0.2 if cfg.dropout is None else cfg.dropout)
        elif cfg.model == "cnn":
            if crop >> len(cfg.widths) < 1:
                raise TrainError(f"--imgsz {crop} is too small for {len(cfg.widths)} pooling blocks (--widths)")
            kwargs.update(widths=[int(w) for w in cfg.widths], depth=int(cfg.depth),
                          hidden=int((cfg.hidden or (128,))[0]), dropout=0.3 if cfg.dropout is None else cfg.dropout)
        elif cfg.model == "knn":
            kwargs.update(n_train=0, k=1, p=1 if cfg.distance == "l1" else 2)
        net = getattr(small_nets, cfg.model)(num_classes=num_classes, **kwargs)
        return Built(net, cfg.model, kwargs, False, Preprocess(resize=resize, crop=crop, mean=mean, std=std),
                     {n for n, _ in net.named_parameters()})
    if is_checkpoint(cfg.model):
        return _from_checkpoint(cfg, num_classes, resize, crop, notify)
    spec = _spec(cfg.model)
    if spec.input_sizes == "fixed" and crop != spec.weights.preprocess.crop:
        raise TrainError(f"--model {spec.name} only takes {spec.weights.preprocess.crop}x"
                         f"{spec.weights.preprocess.crop} inputs; use --imgsz {spec.weights.preprocess.crop}")
    if cfg.dropout is not None:
        raise TrainError(f"--dropout applies to the small nets (mlp, cnn), not to {spec.name}")
    try:
        net = _build_spec(spec, num_classes)
    except TypeError as e:
        raise TrainError(f"--model {spec.name}: cannot build it with {num_classes} classes ({e})") from None
    pre = spec.weights.preprocess
    preprocess = replace(pre, resize=resize, crop=crop)  # the pretrained weights' own kind, filter, mean/std
    new = {n for n, _ in net.named_parameters()}
    frozen = 0
    note = f"{spec.name} from scratch"
    if cfg.pretrained:
        from cvtool.models.weights import WeightsError, load_state_dict, resolve

        try:
            rw = resolve(spec, weights_option=None)  # train takes no --weights
            state = load_state_dict(rw.path)
        except WeightsError as e:
            raise TrainError(f"--pretrained: {e}") from None
        loaded = load_matching(net, state)
        new = {n for n, _ in net.named_parameters()} - loaded
        note = (f"{spec.name} pretrained ({rw.origin} weights), new head "
                f"{', '.join(sorted(new)) or '(none)'} for {num_classes} classes")
        if cfg.freeze_backbone:
            for n, p in net.named_parameters():
                if n not in new:
                    p.requires_grad_(False)
                    frozen += 1
            note += f"; backbone frozen ({frozen} tensors)"
    if grey:
        small_nets.add_grey_input(net)
    return Built(net, spec.name, {}, grey, preprocess, new, frozen, note)


def _build_spec(spec, num_classes: int) -> nn.Module:
    from cvtool.models import registry

    return registry.ModelSpec(spec.name, spec.task, spec.builder, spec.weights,
                              builder_kwargs={**spec.builder_kwargs, "num_classes": num_classes}).build()


def load_matching(net: nn.Module, state: dict) -> set[str]:
    """Load the tensors of ``state`` whose name and shape match ``net``; returns the names of the
    parameters loaded (the rest, typically the classifier head, keeps its fresh initialisation)."""
    own = net.state_dict()
    take = {k: v for k, v in state.items() if k in own and hasattr(v, "shape") and tuple(v.shape) == tuple(own[k].shape)}
    net.load_state_dict(take, strict=False)
    return {n for n, _ in net.named_parameters() if n in take}


def is_checkpoint(model: str) -> bool:
    import os

    return os.path.isfile(model) and not model.lower().endswith(".onnx")


def _checkpoint(path: str):
    from cvtool.models.loader import ModelError, load

    try:
        m = load(path, task="classify")
    except ModelError as e:
        raise TrainError(str(e)) from None
    if m.kind != "checkpoint":
        raise TrainError(f"--model {path}: expected a registry name, a small net or a `cvtool train` checkpoint")
    return m


def _from_checkpoint(cfg: TrainConfig, num_classes: int, resize: int, crop: int, notify) -> Built:
    """Fine-tune from a `cvtool train` checkpoint: same architecture and normalisation; the head
    starts fresh when the number of classes differs."""
    from cvtool.models.weights import load_state_dict

    m = _checkpoint(cfg.model)
    kwargs = dict(m.arch_kwargs)
    if "size" in kwargs:
        kwargs["size"] = crop
    if m.spec.name == "knn":
        raise TrainError("--model: a kNN checkpoint cannot be fine-tuned; train knn from the data instead")
    net = _build_spec_kwargs(m.spec, num_classes, kwargs)
    loaded = load_matching(net, load_state_dict(m.weights_path))
    if m.grey_input:
        from cvtool.models.zoo.small_nets import add_grey_input

        add_grey_input(net)
    new = {n for n, _ in net.named_parameters()} - loaded
    pre = replace(m.preprocess, resize=resize, crop=crop)
    return Built(net, m.spec.name, kwargs, m.grey_input, pre, new, 0,
                 f"fine-tuning {cfg.model} ({m.spec.name}); fresh: {', '.join(sorted(new)) or 'nothing'}")


def _build_spec_kwargs(spec, num_classes: int, kwargs: dict) -> nn.Module:
    from cvtool.models import registry

    return registry.ModelSpec(spec.name, spec.task, spec.builder, spec.weights,
                              builder_kwargs={**spec.builder_kwargs, **kwargs, "num_classes": num_classes}).build()


def freeze_batchnorm(net: nn.Module) -> None:
    """Keep the running statistics of frozen batch-norm layers (call after ``net.train()``)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def count_params(net: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return total, trainable

