"""Training classifiers: data, the model ladder, the loop, schedules, checkpoints, sweeps, DDP.

``cvtool train`` (cvtool/cli/train.py) is a thin layer over this package:

* :mod:`.config`: :class:`TrainConfig`, every knob of a run, saved as ``config.json``;
* :mod:`.data`: built-in sets (fashion-mnist, digits), image folders and CSV files, splits,
  augmentation (torchvision transforms v2), batches;
* :mod:`.models`: building a network of the ladder (knn, linear, mlp, cnn, any registry
  classifier from scratch or pretrained) with the preprocessing its checkpoint will carry;
* :mod:`.optim`: optimisers, learning-rate schedules with warm-up, losses (softmax, SVM);
* :mod:`.loop`: the epoch loop (AMP, early stopping, exact resume, Ctrl-C), evaluation;
* :mod:`.checkpoints`: run directories and checkpoint files (``weights_only=True`` loadable);
* :mod:`.knn`: k nearest neighbours with k chosen by cross-validation;
* :mod:`.sweep`: random hyperparameter search;
* :mod:`.ddp`: DistributedDataParallel under ``torchrun``;
* :mod:`.plots`: training curves, confusion matrices and sweep plots drawn with OpenCV.

Nothing here imports typer or rich: progress reaches the CLI through an ``events`` object.
"""
