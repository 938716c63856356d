"""Evaluation metrics: FID, IS and KID of a generator, and the judge's (judge FD, accuracy, precision / recall /
density / coverage), computed with torch-fidelity.

    from gandist.metrics import Evaluator
    scores = Evaluator(cfg, device, rank, world)(G_ema)   # {"fid": ..., "kid": ..., "kid_std": ...}

The rooms: registry.py (the metrics by name and their maths, light to import), inception.py (images into
Inception features, the weights file), judge.py (the judge: a small classifier of the run's own data, its
file, registered as a torch-fidelity feature extractor), judge_train.py (gandist-judge, which trains it),
sets.py (where the real and generated images come from, each rank's share), evaluator.py (the Evaluator that
ties them together across ranks).

This file only re-exports names for users; gandist's own modules import from the submodules.  The
registry's names are imported at once; the others when first asked for, because gandist.config imports
gandist.metrics.registry while it loads (to check eval.metrics) and Python runs this file first: an eager
import of the Evaluator here would import gandist.distributed, hence gandist.config, half loaded.
"""
from __future__ import annotations

import importlib

from gandist.metrics.registry import (FEATURE_LAYERS, LOGITS, MetricError, Options, check_metrics, compute,
                                      layers_for, list_metrics, register_metric)

_LAZY = {
    "Evaluator": "gandist.metrics.evaluator",
    "feature_extractor": "gandist.metrics.inception",
    "extract": "gandist.metrics.inception",
    "check_weights": "gandist.metrics.inception",
    "quantise": "gandist.metrics.inception",
    "to_uint8_rgb": "gandist.metrics.inception",
    "real_batches": "gandist.metrics.sets",
    "eval_noise": "gandist.metrics.sets",
    "eval_conditions": "gandist.metrics.sets",
}

__all__ = ["FEATURE_LAYERS", "LOGITS", "MetricError", "Options", "check_metrics", "compute", "layers_for",
           "list_metrics", "register_metric", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        # deferred: cycle (see above)
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
