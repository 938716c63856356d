"""gandist-prepare as a command: exit status and errors on bad input, the patterns it prints."""
from __future__ import annotations

import json
import subprocess

import torch

from tests.conftest import BIN, PY, REPO, env
from gandist.data.stream import eval_batches


def test_command_line(tmp_path):
    # the console script, on bad input: a clear error and exit status 2
    p = subprocess.run([str(BIN / "gandist-prepare"), "celeba", "--src", str(tmp_path / "missing"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env(), timeout=120)
    assert p.returncode == 2 and f"folder {tmp_path / 'missing'} does not exist" in p.stderr, p.stderr
    p = subprocess.run([PY, "-m", "gandist.data.prepare", "synthetic", "--out", str(tmp_path / "o"), "--size", "12",
                        "--shard-size", "5", "--workers", "2"], capture_output=True, text=True, env=env(),
                       timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "12 samples" in p.stdout and f"{tmp_path / 'o'}/train-{{000000..000002}}.tar" in p.stdout
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert index["total"] == 12 and [s["count"] for s in index["splits"]["train"]["shards"]] == [5, 5, 2]
    assert torch.is_tensor(next(iter(eval_batches(str(tmp_path / "o" / "train-{000000..000002}.tar"), 0, 1, 4, 0)))[0])
