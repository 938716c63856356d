"""The Inception weights on every rank (each evaluates its share): a node without internet access cannot
fetch them at the first evaluation."""
from __future__ import annotations

from pathlib import Path

import torch

from gandist.check.report import FAIL, INFO, PASS, WARN, Row, listed
from gandist.metrics.inception import check_weights
from gandist.training.disk import human


def cached_download() -> Path:
    """Where torch-fidelity's download of its InceptionV3 weights lands (torch.hub's checkpoint cache)."""
    # deferred, as gandist.metrics.inception defers it: torch-fidelity is heavy, and only this case needs it
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]


def look(cfg) -> dict:
    """This rank's weights file, or whether the download is cached ({} when nothing is evaluated)."""
    if not cfg.eval.metrics:
        return {}
    path = check_weights(cfg.eval.feature_weights)  # MetricError, naming the key, when the file is missing
    if path is not None:
        return {"file": str(path), "bytes": path.stat().st_size}
    cached = cached_download()
    return {"download": str(cached), "cached": cached.is_file()}


def row(found: list[dict], cfg) -> Row:
    if not cfg.eval.metrics:
        return Row("evaluation", "Inception weights", INFO, "eval.metrics is empty: no evaluation, nothing needed")
    needs = f"eval.metrics {', '.join(cfg.eval.metrics)}"
    bad = [f"{f['where']}: {f['error']}" for f in found if "error" in f]
    if bad:
        return Row("evaluation", "Inception weights", FAIL, listed(bad))
    v = found[0]["value"]
    if "file" in v:
        return Row("evaluation", "Inception weights", PASS, f"{needs}: {v['file']} ({human(v['bytes'])}) is on "
                   f"every rank")
    absent = [f["where"] for f in found if not f["value"]["cached"]]
    if absent:
        return Row("evaluation", "Inception weights", WARN, f"{needs}: torch-fidelity's weights are not in "
                   f"{v['download']} on {listed(absent)}; they are downloaded at the first evaluation, which fails "
                   f"without internet access: copy the file there or set eval.feature_weights=PATH")
    return Row("evaluation", "Inception weights", PASS, f"{needs}: torch-fidelity's weights are cached at "
               f"{v['download']} on every rank")
