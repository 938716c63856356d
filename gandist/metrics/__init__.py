"""Evaluation metrics (FID, IS, KID and the judge's), computed with torch-fidelity: a registry of metrics by
name, feature extractors (Inception, the judge), the real and generated sets, and the Evaluator over them.

This file only re-exports for users.  All but the registry load on first use: gandist.config imports the
registry while it loads, and an eager Evaluator import here would import gandist.config half loaded.
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
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
