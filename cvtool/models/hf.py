"""Loading Hugging Face ``transformers`` models from a local folder, quietly.

cvtool finds the folder itself (``cvtool.models.weights``: ``--weights``, an imported copy,
Hugging Face's cache, or a download with Hugging Face's own code), so loading here never touches
the network: ``local_files_only=True``. transformers is imported only when a model is built.
"""

from __future__ import annotations

import os
from pathlib import Path


def quiet_transformers() -> None:
    """No progress bars or advice from transformers/huggingface_hub on stderr (cvtool reports
    what matters itself)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


def from_pretrained(class_name: str, path: str | os.PathLike, **kwargs):
    """``transformers.<class_name>.from_pretrained(path)`` offline and quiet, in eval mode."""
    quiet_transformers()
    import transformers

    cls = getattr(transformers, class_name)
    model = cls.from_pretrained(str(Path(path)), local_files_only=True, **kwargs)
    return model.eval() if hasattr(model, "eval") else model
