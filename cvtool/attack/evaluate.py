"""One picture through an attack, end to end, and the robust-accuracy tally over a run.

:class:`Attacker` takes a decoded picture, makes the network-sized clean picture, predicts it,
picks the true class (``--labels`` or the clean prediction), runs the attack, rounds the
result to 8 bits (:mod:`cvtool.attack.quantize`), scores the rounded picture on the attacked
model and, with ``--eval-model``, on a second model (transfer), saves the pictures, and
returns the record's fields. :class:`Tally` turns the records into clean accuracy, robust
accuracy and success rate.

Definitions (per run):

* clean accuracy: pictures whose clean prediction is the true class;
* robust accuracy: pictures whose *adversarial* prediction is still the true class;
* success rate: untargeted, the share of the correctly classified pictures whose adversarial
  prediction is wrong; targeted, the share of all pictures whose adversarial prediction is
  the target.

Both robust accuracy and success rate are given for the saved 8-bit pictures (the headline)
and for the attack's float pictures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cvtool.attack import MINIMAL_NORM
from cvtool.attack.base import Goal
from cvtool.attack.config import AttackConfig
from cvtool.attack.labels import LabelMap
from cvtool.attack.quantize import finalise, float_norms, norms
from cvtool.attack.victim import Victim


class PictureError(Exception):
    """This picture cannot be attacked (e.g. no label for it); the run goes on."""


def _attack_fn(method: str):
    if method in ("fgsm", "bim", "pgd", "mifgsm"):
        from cvtool.attack import gradient

        return getattr(gradient, method)
    from cvtool.attack import minimal

    return getattr(minimal, method)


RESOLUTIONS = ("auto", "photo", "network")


class Attacker:
    """``resolution``: where the perturbation lives. ``network``: the network-sized picture
    (what the model sees after resizing and cropping). ``photo``: the photo's own pixels (the
    region the network sees), attacked through a differentiable copy of the preprocessing
    (:mod:`cvtool.models.preprocess_torch`) and scored through the real one, so ``cvtool classify``
    on the saved photo sees what the record says. ``auto``: ``photo`` when that region is larger
    than the network input and the attack is a gradient one, else ``network``."""

    def __init__(self, victim: Victim, cfg: AttackConfig, target: int | None = None,
                 label_map: LabelMap | None = None, eval_victim: Victim | None = None, saver=None,
                 resolution: str = "network"):
        import torch

        if resolution not in RESOLUTIONS:
            raise ValueError(f"--resolution {resolution!r}: expected {', '.join(RESOLUTIONS)}")
        self.resolution = resolution
        self.victim, self.cfg, self.target = victim, cfg, target
        self.label_map, self.eval_victim, self.saver = label_map, eval_victim, saver
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = None
        if victim.grad is not None:
            self.gen = torch.Generator(device=victim.grad.device).manual_seed(cfg.seed)
        self.fn = None if cfg.method == "square" else _attack_fn(cfg.method)
        self.tally = Tally(cfg, victim.name, None if eval_victim is None else eval_victim.name,
                           target is not None, label_map is not None)

    def _label(self, victim: Victim, class_id: int, prob: float | None = None) -> dict:
        d = {"class_id": int(class_id), "label": victim.labels[class_id]}
        if prob is not None:
            d["score"] = round(float(prob), 6)
        return d

    def _photo_region(self, rgb: np.ndarray):
        """The region of ``rgb`` to attack at the photo's resolution, or None (network size)."""
        if self.resolution == "network" or self.cfg.method == "square" or self.victim.grad is None:
            if self.resolution == "photo" and (self.cfg.method == "square" or self.victim.grad is None):
                raise PictureError("--resolution photo needs a gradient attack on torch (square works on "
                                   "the network-sized picture)")
            return None
        from cvtool.models.preprocess_torch import Unsupported, region

        pre = self.victim.loaded.preprocess
        try:
            box = region(pre, rgb.shape[1], rgb.shape[0])
        except Unsupported as e:
            if self.resolution == "photo":
                raise PictureError(f"--resolution photo: {e}") from None
            return None
        left, top, right, bottom = box
        if self.resolution == "auto" and (right - left) * (bottom - top) <= pre.crop * pre.crop:
            return None  # not larger than the network input: nothing to gain
        return box

    def __call__(self, source: str, frame: int | None, rgb: np.ndarray) -> dict:
        cfg, v = self.cfg, self.victim
        x0u = v.loaded.preprocess(rgb)
        clean_id, clean_p = v.predict(x0u)
        box = self._photo_region(rgb)
        if self.label_map is not None:
            truth = self.label_map.lookup(source)
            if truth is None:
                raise PictureError(f"no label for this picture in {self.label_map.path}")
            truth_from = "labels"
        else:
            truth, truth_from = clean_id, "clean prediction"
        goal = Goal(truth, self.target)

        if cfg.method == "square":
            from cvtool.attack.square import square_linf

            res = square_linf(v.scores, x0u, goal, cfg, self.rng)
            u8, rounding, extra_q = res.u8, "on the grid", 0
            adv_id, adv_p = float_id, float_p = v.predict(u8)
            x0 = None
        elif box is not None:  # at the photo's resolution: the region the network sees
            from cvtool.models.preprocess_torch import AtPhotoResolution

            left, top, right, bottom = box
            r0u = np.ascontiguousarray(rgb[top:bottom, left:right])
            model = AtPhotoResolution(v.grad, v.loaded.preprocess)
            x0 = v.grad.to_tensor(r0u)
            res = self.fn(model, x0, goal, cfg, self.gen)
            float_id, _, float_p = model.top(res.x_adv)

            def paste(region_u8: np.ndarray) -> np.ndarray:
                photo = rgb.copy()
                photo[top:bottom, left:right] = region_u8
                return photo

            # scored as `cvtool classify` scores the saved photo: the real preprocessing on it
            r8, rounding, extra_q, (adv_id, adv_p) = finalise(
                res.x_adv, r0u, cfg.eps, cfg.norm, lambda ru: v.predict(v.loaded.preprocess(paste(ru))),
                goal.success, stretch=cfg.method in MINIMAL_NORM)
            u8 = paste(r8)
        else:
            x0 = v.grad.to_tensor(x0u)
            res = self.fn(v.grad, x0, goal, cfg, self.gen)
            float_id, _, float_p = v.grad.top(res.x_adv)
            u8, rounding, extra_q, (adv_id, adv_p) = finalise(
                res.x_adv, x0u, cfg.eps, cfg.norm, v.predict, goal.success, stretch=cfg.method in MINIMAL_NORM)
        clean_u8 = x0u if box is None else rgb  # what the adversarial picture is compared with
        fields: dict = {
            "attack": {**cfg.summary(), "targeted": goal.targeted},
            "input_size": v.input_size,
            "resolution": "network" if box is None else "photo",
            "attacked_size": ({"width": v.input_size, "height": v.input_size} if box is None else
                              {"width": box[2] - box[0], "height": box[3] - box[1]}),
            "truth": {**self._label(v, truth), "from": truth_from},
            "target": None if self.target is None else self._label(v, self.target),
            "clean": {**self._label(v, clean_id, clean_p), "correct": clean_id == truth},
            "adversarial": {**self._label(v, adv_id, adv_p), "correct": adv_id == truth},
            "adversarial_float": {**self._label(v, float_id, float_p), "correct": float_id == truth},
            "success": goal.success(float_id),
            "success_8bit": goal.success(adv_id),
            "norms": norms(u8, clean_u8),
            "norms_float": norms(u8, clean_u8) if x0 is None else float_norms(res.x_adv, x0),
            "rounding": rounding,
            "iterations": res.iterations,
            "queries": res.queries + extra_q,
        }
        if "linf_255" in fields["norms_float"]:
            fields["norms_float"] = {k: fields["norms_float"][k] for k in ("linf", "l2")}
        if cfg.method == "cw":
            fields["attack"]["c_found"] = res.extra.get("c")
        if self.eval_victim is not None:
            fields["transfer"] = self._transfer(clean_u8, u8, goal, photo=box is not None)
        if self.saver is not None:
            from cvtool.io.sinks import SinkError

            try:
                fields["saved"] = self.saver.save(source, frame, clean_u8, u8)
            except SinkError as e:
                raise PictureError(f"not saved: {e}") from None
        self.tally.add(fields)
        return fields

    def _transfer(self, x0u: np.ndarray, u8: np.ndarray, goal: Goal, photo: bool = False) -> dict:
        """The 8-bit adversarial picture (and the clean one), resized to the second model's
        input size if it differs (``photo``: through its own preprocessing), scored there.
        Without --labels the second model's own clean prediction is the class to move away from."""
        ev = self.eval_victim
        fit = ev.loaded.preprocess if photo else ev.fit
        c_id, c_p = ev.predict(fit(x0u))
        a_id, a_p = ev.predict(fit(u8))
        truth = goal.label if self.label_map is not None else c_id
        tgoal = Goal(truth, goal.target)
        return {"model": ev.name,
                "truth": {**self._label(ev, truth), "from": "labels" if self.label_map else "clean prediction"},
                "clean": {**self._label(ev, c_id, c_p), "correct": c_id == truth},
                "adversarial": {**self._label(ev, a_id, a_p), "correct": a_id == truth},
                "success": tgoal.success(a_id)}


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f}% ({k}/{n})" if n else "n/a"


@dataclass
class Tally:
    cfg: AttackConfig
    model: str
    eval_model: str | None
    targeted: bool
    labelled: bool
    n: int = 0
    counts: dict = field(default_factory=lambda: dict.fromkeys(
        ("clean", "robust", "robust_float", "eligible", "success", "success_float", "t_clean", "t_robust",
         "t_eligible", "t_success"), 0))
    sums: dict = field(default_factory=lambda: dict.fromkeys(("linf_255", "l2", "iterations", "queries"), 0.0))

    def add(self, f: dict) -> None:
        c = self.counts
        self.n += 1
        c["clean"] += f["clean"]["correct"]
        c["robust"] += f["adversarial"]["correct"]
        c["robust_float"] += f["adversarial_float"]["correct"]
        eligible = self.targeted or f["clean"]["correct"]
        c["eligible"] += eligible
        c["success"] += eligible and f["success_8bit"]
        c["success_float"] += eligible and f["success"]
        for k in ("linf_255", "l2"):
            self.sums[k] += f["norms"][k]
        self.sums["iterations"] += f["iterations"]
        self.sums["queries"] += f["queries"]
        t = f.get("transfer")
        if t is not None:
            c["t_clean"] += t["clean"]["correct"]
            c["t_robust"] += t["adversarial"]["correct"]
            te = self.targeted or t["clean"]["correct"]
            c["t_eligible"] += te
            c["t_success"] += te and t["success"]

    def line(self) -> str:
        c, n = self.counts, self.n
        truth = "labels from --labels" if self.labelled else "true class = clean prediction"
        s = (f"cvtool: {self.cfg.describe()} on {self.model}, {n} picture{'s' if n != 1 else ''} ({truth}): "
             f"clean accuracy {_pct(c['clean'], n)}, robust accuracy {_pct(c['robust'], n)}, "
             f"success rate {_pct(c['success'], c['eligible'])} (saved 8-bit pictures)")
        if self.eval_model:
            s += (f"; transfer to {self.eval_model}: robust accuracy {_pct(c['t_robust'], n)}, "
                  f"success rate {_pct(c['t_success'], c['t_eligible'])}")
        return s

    def rows(self) -> tuple[list[str], list[list[str]]]:
        c, n, s = self.counts, self.n, self.sums
        cols = ["", f"{self.model} (attacked)"] + ([f"{self.eval_model} (transfer)"] if self.eval_model else [])
        rows = [
            ["pictures", str(n)],
            ["clean accuracy", _pct(c["clean"], n)],
            ["robust accuracy (8-bit)", _pct(c["robust"], n)],
            ["robust accuracy (float)", _pct(c["robust_float"], n)],
            ["success rate (8-bit)", _pct(c["success"], c["eligible"])],
            ["success rate (float)", _pct(c["success_float"], c["eligible"])],
            ["mean L∞ (8-bit levels)", f"{s['linf_255'] / n:.2f}" if n else "n/a"],
            ["mean L2", f"{s['l2'] / n:.4f}" if n else "n/a"],
            ["mean iterations / queries", f"{s['iterations'] / n:.1f} / {s['queries'] / n:.1f}" if n else "n/a"],
        ]
        if self.eval_model:
            extra = {"pictures": str(n), "clean accuracy": _pct(c["t_clean"], n),
                     "robust accuracy (8-bit)": _pct(c["t_robust"], n),
                     "success rate (8-bit)": _pct(c["t_success"], c["t_eligible"])}
            rows = [r + [extra.get(r[0], "")] for r in rows]
        return cols, rows

