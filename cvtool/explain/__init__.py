"""Looking inside a classifier: attributions, layers, feature maps, and images synthesised by
gradient ascent. Everything works on a :class:`cvtool.models.differentiable.GradClassifier`
(float pixels ``(B, 3, H, W)`` in [0, 1], normalisation inside the wrapper)."""
