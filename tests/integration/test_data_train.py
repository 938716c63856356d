"""A real training process reading shards: it starts, reports the data it found, trains and checkpoints
the reader's position (resuming from that position is tested in test_stream.py)."""
from __future__ import annotations

import json

from gandist.data.prepare import prepare
from tests.conftest import metrics, run_train


def test_training_reads_shards(tmp_path):
    prepare("synthetic", None, tmp_path / "shards", size=40, shard_size=16, progress=False, workers=1)
    p = run_train(tmp_path / "run", "data.source=shards", f"data.urls={tmp_path}/shards/train-{{000000..000002}}.tar",
                  "data.workers=1", "data.shuffle_buffer=8", "checkpoint.every=2", "train.steps=3")
    assert "synthetic: 40 images in 3 shard(s), 32 px, 3 channel(s); an epoch is 5 batches of 8" in " ".join(p.stdout.split())
    assert [m["step"] for m in metrics(tmp_path / "run")] == [1, 2, 3]
    saved = {json.loads(f.read_text())["step"]: json.loads(f.read_text())["data"]
             for f in (tmp_path / "run" / "checkpoints").glob("*/trainer.json")}
    assert saved[2]["next_batch"] == 2 and saved[3]["next_batch"] == 3 and saved[3]["skipped"] == 0
