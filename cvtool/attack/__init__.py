"""Adversarial attacks on classifiers, and robust-accuracy evaluation.

Every attack perturbs the network-sized picture in pixel space: a float tensor ``(1, 3, S, S)``
in [0, 1] (what :meth:`cvtool.models.differentiable.GradClassifier.prepare` gives). The
normalisation stays inside the model wrapper, so ``eps`` means the same thing for every model.

White box (need gradients, so a registry model or a `cvtool train` checkpoint on torch):

* ``fgsm``     one step of size eps along the sign of the gradient (L2: along the gradient)
* ``bim``      FGSM repeated with a small step, projected back into the eps ball each time
* ``pgd``      BIM from a random start in the ball, with restarts (Madry et al.)
* ``mifgsm``   BIM with a momentum term on the L1-normalised gradient (Dong et al.)
* ``deepfool`` the smallest step to the nearest linearised class boundary, repeated
* ``cw``       Carlini-Wagner L2: optimises distance + c * margin, binary search on c

Black box (scores only, so it also runs on ONNX files): ``square`` (random square updates
on the 8-bit grid, kept when the margin loss drops; Andriushchenko et al.).

Saved pictures are 8-bit, so :mod:`cvtool.attack.quantize` rounds the result onto the 8-bit
grid, projects it back into the eps ball there, and the record says whether the rounded
picture still fools the model. :mod:`cvtool.attack.evaluate` runs one picture end to end and
keeps the robust-accuracy tally.
"""

from __future__ import annotations

WHITE_BOX = ("fgsm", "bim", "pgd", "mifgsm", "deepfool", "cw")
BLACK_BOX = ("square",)
METHODS = WHITE_BOX + BLACK_BOX
# Methods that look for the smallest perturbation; for them --eps is an optional bound.
MINIMAL_NORM = ("deepfool", "cw")
