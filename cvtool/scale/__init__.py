"""Running inference tasks on a Ray cluster (``--engine ray``); see docs/scale.md.

* :mod:`cvtool.scale.inputs`: what the user typed → the list of inputs (folders, globs, lists
  of paths/URIs, Parquet/CSV manifests; local paths or URIs pyarrow can open);
* :mod:`cvtool.scale.store`: the output folder (sharded JSONL/Parquet records, resume);
* :mod:`cvtool.scale.workers`: what runs on the cluster (decode tasks, inference actors);
* :mod:`cvtool.scale.ray_engine`: the driver.

Nothing here imports Ray at module level; Ray and pyarrow are an optional extra
(``pip install 'cvtool[ray]'``).
"""
