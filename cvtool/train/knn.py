"""k nearest neighbours, the first rung of the ladder: no training, only the choice of k.

k is chosen by F-fold cross-validation on the training pictures (at most ``--cv-samples`` of
them, a stratified sample, so that the choice stays cheap on large sets): every fold in turn is
classified by its neighbours in the other folds, for every candidate k at once (one distance
matrix, the k nearest sorted once). The k with the best mean accuracy wins (the smaller k on a
tie). The model then keeps *all* training pictures as its references.
"""

from __future__ import annotations

import torch

from cvtool.models.zoo.small_nets import KNN, pairwise_distances, vote
from cvtool.train.data import ImageSet, stratified_subset


def features(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``(N, C, S, S)`` → normalised float ``(N, C·S·S)`` (the space the kNN measures in)."""
    c = x.shape[1]
    m = torch.tensor(mean[:c], dtype=torch.float32).view(1, c, 1, 1)
    s = torch.tensor(std[:c], dtype=torch.float32).view(1, c, 1, 1)
    return ((x.to(torch.float32) / 255.0 - m) / s).flatten(1)


def cross_validate(feats: torch.Tensor, y: torch.Tensor, ks: list[int], p: int, folds: int, num_classes: int,
                   seed: int = 0, chunk: int = 512, progress=None) -> list[dict]:
    """Mean and per-fold accuracy for every k in ``ks``."""
    n = len(y)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    parts = perm.chunk(folds)
    kmax = min(max(ks), n - max(len(f) for f in parts))
    correct = torch.zeros(folds, len(ks))
    for fi, held in enumerate(parts):
        mask = torch.ones(n, dtype=torch.bool)
        mask[held] = False
        ref, ref_y = feats[mask], y[mask]
        ref_sq = (ref * ref).sum(1)
        for q in held.split(chunk):
            d = pairwise_distances(feats[q], ref, p, ref_sq)
            nn_idx = d.topk(kmax, dim=1, largest=False).indices
            nn_y = ref_y[nn_idx]
            for ki, k in enumerate(ks):
                pred = vote(nn_y[:, :min(k, kmax)], num_classes).argmax(1)
                correct[fi, ki] += float((pred == y[q]).sum())
        if progress:
            progress(fi + 1, folds)
    sizes = torch.tensor([len(f) for f in parts], dtype=torch.float32).view(-1, 1)
    acc = correct / sizes
    return [{"k": k, "cv_acc": float(acc[:, i].mean()), "cv_std": float(acc[:, i].std()) if folds > 1 else 0.0,
             "folds": [round(float(a), 5) for a in acc[:, i]]} for i, k in enumerate(ks)]


def fit(train: ImageSet, num_classes: int, in_channels: int, size: int, mean, std, ks: list[int], p: int,
        folds: int, cv_samples: int, seed: int = 0, progress=None) -> tuple[KNN, list[dict], int]:
    """Choose k by cross-validation and return the kNN holding every training picture."""
    ks = sorted({int(k) for k in ks})
    sub = stratified_subset(train.y, cv_samples, seed) if len(train) > cv_samples else torch.arange(len(train))
    feats = features(train.x[sub], mean, std)
    folds = max(2, min(folds, len(sub)))
    table = cross_validate(feats, train.y[sub], ks, p, folds, num_classes, seed, progress=progress)
    best = max(table, key=lambda r: (round(r["cv_acc"], 9), -r["k"]))
    net = KNN(num_classes, in_channels, size, n_train=len(train), k=best["k"], p=p)
    with torch.no_grad():
        net.train_x.copy_(train.x)
        net.train_y.copy_(train.y)
        c = train.x.shape[1]
        net.mean.copy_(torch.tensor(mean[:c]))
        net.std.copy_(torch.tensor(std[:c]))
    return net, table, best["k"]
