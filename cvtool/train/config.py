"""Every knob of a training run, in one dataclass that is saved as the run's ``config.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional


class TrainError(Exception):
    """A usage or set-up problem (bad option, unusable data or model); the message says what to do."""


class DataError(TrainError):
    """The data cannot be used (missing set, no images, unknown format)."""


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle", "plateau")
LOSSES = ("softmax", "svm")
SMALL_NETS = ("knn", "linear", "mlp", "cnn")

# The learning rate each optimiser starts from when --lr is not given.
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.01, "rmsprop": 1e-3,
              "adam": 1e-3, "adamw": 2e-3}


@dataclass
class TrainConfig:
    data: str = ""
    model: str = "cnn"
    pretrained: bool = False
    freeze_backbone: bool = False
    # optimisation
    epochs: int = 10
    batch: int = 128
    optimizer: str = "adamw"
    lr: Optional[float] = None
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 0  # step schedule: epochs between decays (0: a third of the epochs)
    gamma: float = 0.1
    plateau_patience: int = 2
    loss: str = "softmax"
    label_smoothing: float = 0.0
    amp: str = "auto"  # auto (on with CUDA), on, off
    # architecture (small nets)
    widths: tuple = (32, 64)
    depth: int = 1
    hidden: tuple = ()  # mlp: (256,); cnn: (128,)
    dropout: Optional[float] = None
    # kNN
    k: tuple = (1, 3, 5, 7, 9, 11, 15, 21)
    distance: str = "l2"
    folds: int = 5
    cv_samples: int = 10000
    # data
    imgsz: Optional[int] = None
    grey: bool = False
    val_split: Optional[float] = None
    max_train: Optional[int] = None
    max_eval: Optional[int] = None
    max_pixels: Optional[int] = None
    workers: Optional[int] = None
    # augmentation
    flip: bool = False
    crop: float = 0.0  # random resized crop: smallest area share kept (0: off)
    jitter: float = 0.0
    erase: float = 0.0
    mixup: float = 0.0
    # run
    seed: int = 0
    patience: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    name: Optional[str] = None
    runs_dir: str = "runs"
    save_checkpoints: bool = True
    # filled in when the run starts (what the defaults resolved to)
    resolved: dict = field(default_factory=dict)

    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for k, v in d.items():
            if k not in names:
                continue  # a newer cvtool's field: ignored
            if isinstance(v, list) and k != "resolved":
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)

    def check(self) -> None:
        """Reject impossible combinations with a message that names the options."""
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise TrainError(f"--schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.loss not in LOSSES:
            raise TrainError(f"--loss {self.loss!r}: expected softmax or svm")
        if self.distance not in ("l1", "l2"):
            raise TrainError(f"--distance {self.distance!r}: expected l1 or l2")
        if self.amp not in ("auto", "on", "off"):
            raise TrainError(f"--amp {self.amp!r}: expected auto, on or off")
        if self.epochs < 1:
            raise TrainError("--epochs must be at least 1")
        if self.batch < 1:
            raise TrainError("--batch must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise TrainError("--lr must be positive")
        if self.weight_decay < 0:
            raise TrainError("--weight-decay must be 0 or more")
        if not 0 <= self.label_smoothing < 1:
            raise TrainError("--label-smoothing must be in [0, 1)")
        if self.loss == "svm" and (self.label_smoothing or self.mixup):
            raise TrainError("--loss svm takes hard labels: drop --label-smoothing and --mixup")
        if self.val_split is not None and not 0 <= self.val_split < 1:
            raise TrainError("--val-split must be in [0, 1)")
        if not 0 <= self.crop <= 1:
            raise TrainError("--crop is the smallest share of the picture a random crop keeps, in (0, 1]; 0 turns it off")
        if not 0 <= self.erase <= 1:
            raise TrainError("--erase is a probability in [0, 1]")
        if self.jitter < 0 or self.mixup < 0:
            raise TrainError("--jitter and --mixup must be 0 or more")
        if self.freeze_backbone and not self.pretrained:
            raise TrainError("--freeze-backbone needs --pretrained (a frozen random backbone learns nothing)")
        if self.pretrained and self.model in SMALL_NETS:
            raise TrainError(f"--pretrained: {self.model} has no pretrained weights; use a registry "
                             "classifier such as efficientnet_lite0")
        if self.imgsz is not None and self.imgsz < 4:
            raise TrainError("--imgsz must be at least 4")
        if self.model == "knn":
            if not self.k or any(int(k) < 1 for k in self.k):
                raise TrainError("--k takes positive integers, e.g. 1,3,5,7")
            if self.folds < 2:
                raise TrainError("--folds must be at least 2")
