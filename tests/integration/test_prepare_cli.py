"""gandist-prepare as a command: exit status and errors on bad input, the patterns it prints; and its
writer processes (--workers N), which tests/unit/data/test_prepare.py leaves out (it writes in-process)."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import torch

from gandist.data.errors import PrepareError
from gandist.data.prepare import prepare
from gandist.data.shards.eval import eval_batches
from tests.conftest import BIN, PY, REPO, env
from tests.data_fixtures import make_celeba


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
    assert "encoding png (lossless PNG images)" in p.stdout  # the default, said
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert index["total"] == 12 and [s["count"] for s in index["splits"]["train"]["shards"]] == [5, 5, 2]
    assert torch.is_tensor(next(iter(eval_batches(str(tmp_path / "o" / "train-{000000..000002}.tar"), 0, 1, 4, 0)))[0])


def test_writer_processes_write_the_same_bytes_and_stop_on_bad_input(tmp_path):
    kw = dict(size=30, shard_size=8, progress=False)
    prepare("synthetic", None, tmp_path / "pool", workers=2, **kw)
    prepare("synthetic", None, tmp_path / "here", workers=0, **kw)
    assert {p.name: p.read_bytes() for p in (tmp_path / "pool").glob("*.tar")} == \
        {p.name: p.read_bytes() for p in (tmp_path / "here").glob("*.tar")}

    root = tmp_path / "celeba"
    make_celeba(root, n=6, partition=False)
    (root / "img_align_celeba" / "000004.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(PrepareError, match="000004.jpg: cannot decode"):
        prepare("celeba", root, tmp_path / "out", crop=24, resolution=24, progress=False, workers=2)
    assert not list((tmp_path / "out").glob("*.tar*"))  # no half-written shard is left in place
    index = prepare("celeba", root, tmp_path / "out", crop=24, resolution=24, progress=False, workers=2,
                    skip_bad=True)
    assert index["splits"]["train"]["total"] == 5 and index["skipped"] == 1


def test_encoding_raw_on_the_command_line(tmp_path):
    out = tmp_path / "raw"
    p = subprocess.run([str(BIN / "gandist-prepare"), "synthetic", "--out", str(out), "--size", "12", "--shard-size",
                        "5", "--workers", "2", "--encoding", "raw", "--no-progress"], capture_output=True, text=True,
                       env=env(), timeout=300)
    assert p.returncode == 0, p.stderr
    assert "train: 12 samples in 3 shard(s) train-{000000..000002}.tar, raw" in p.stdout
    assert f"gandist-prepare: 12 samples in {out}, encoding raw (uint8 (C, H, W) arrays as .npy" in p.stdout
    assert json.loads((out / "index.json").read_text())["encoding"] == "raw"
    # the writer processes write what one process writes, and the reader gives the PNG shards' pixels
    prepare("synthetic", None, tmp_path / "here", size=12, shard_size=5, workers=0, progress=False, encoding="raw")
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == \
        {p.name: p.read_bytes() for p in (tmp_path / "here").glob("*.tar")}
    prepare("synthetic", None, tmp_path / "png", size=12, shard_size=5, workers=2, progress=False)
    pattern = "train-{000000..000002}.tar"
    raw_x, png_x = (next(iter(eval_batches(str(d / pattern), 0, 1, 12, 0)))[0] for d in (out, tmp_path / "png"))
    assert torch.equal(raw_x, png_x)

    p = subprocess.run([str(BIN / "gandist-prepare"), "--help"], capture_output=True, text=True, env=env(), timeout=120)
    assert p.returncode == 0 and "--encoding {png,raw}" in p.stdout and "png (default" in " ".join(p.stdout.split())
    p = subprocess.run([str(BIN / "gandist-prepare"), "synthetic", "--out", str(tmp_path / "x"), "--encoding", "jpeg"],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert p.returncode == 2 and "invalid choice: 'jpeg'" in p.stderr and not (tmp_path / "x").exists()


def test_writer_processes_end_in_a_process_whose_sigterm_is_handled_in_python(tmp_path):
    # CI hung 15 min in pool.terminate(): the suite's process had trained in-process before, so its SIGTERM ran
    # the loop's stop flag, which the forked writers inherited and which let them live through terminate().  One
    # write in about twenty hung so, hence the loop; the process group is killed (SIGKILL: it would outlive SIGTERM).
    code = ("import signal, sys\n"
            "from gandist.data.prepare import prepare\n"
            "signal.signal(signal.SIGTERM, lambda signum, frame: None)\n"
            "for i in range(60):\n"
            f"    prepare('synthetic', None, r'{tmp_path}' + f'/o{{i}}', size=12, shard_size=5, workers=2,\n"
            "            progress=False, log=lambda *a: None)\n"
            "print('done', flush=True)\n")
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                         cwd=REPO, start_new_session=True)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # its writers too, which hold the pipes open
        p.communicate()
        pytest.fail(f"prepare(workers=2) hung; {len(list(tmp_path.iterdir()))} of 60 writes started")
    assert p.returncode == 0 and out.strip() == "done", err
