"""The shard reader with real DataLoader worker processes and pipe: urls (tests/unit/data/test_stream.py
reads everything in one process): every sample once across ranks x workers, training batches that
resume exactly with two workers, a worker's error reaching the training process, pipe: commands."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gandist.data.errors import DataError
from gandist.data.prepare import prepare
from gandist.data.shards.eval import eval_batches
from gandist.data.shards.feed import ShardFeed
from gandist.data.shards.io import expand_urls
from tests.unit.data.test_stream import N, SHARD, URLS, make_cfg, read_each_sample_once

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    prepare("synthetic", None, out, size=N, shard_size=SHARD, progress=False, workers=0)
    return out


def test_eval_mode_yields_each_sample_once_over_2_ranks_x_2_workers(shards):
    read_each_sample_once(shards, workers=2)


def test_training_with_two_workers_resumes_exactly(shards):
    cfg = make_cfg(str(shards / URLS), data__workers=2)
    a = ShardFeed(cfg, 1, 2, "cpu")
    first, states = [], {}
    for j in range(10):
        first.append(a.batch(j)[0])
        states[j + 1] = a.state_dict()
    resumed = ShardFeed(cfg, 1, 2, "cpu")  # mid-epoch 1, batch 7 comes from the other worker than batch 6
    resumed.load_state_dict(states[7])
    assert all(torch.equal(resumed.batch(j)[0], first[j]) for j in range(7, 10))
    assert torch.equal(ShardFeed(cfg, 1, 2, "cpu").batch(8)[0], first[8])
    # the worker count is part of the order: one worker reads other batches
    assert not torch.equal(ShardFeed(make_cfg(str(shards / URLS)), 1, 2, "cpu").batch(1)[0], first[1])


def test_a_workers_error_reaches_the_training_process(shards, tmp_path):
    d = tmp_path / "garbage"
    shutil.copytree(shards, d)
    for p in d.glob("*.tar"):
        p.write_bytes(b"\0" * 1024 + b"this is no tar")
    feed = ShardFeed(make_cfg(str(d / URLS), data__workers=2), 0, 1, "cpu")
    with pytest.raises(DataError, match=r"rank 0 on .*worker \d: opened 80 shards in a row without one good sample"):
        feed.batch(0)


def test_pipe_urls(shards):
    urls = ";".join(f"pipe:cat {u}" for u in expand_urls(str(shards / URLS)))
    keys = sorted(k for rank in (0, 1) for _, _, ks in eval_batches(urls, rank, 2, 8, 2, with_keys=True) for k in ks)
    assert keys == [f"{i:07d}" for i in range(N)]
    feed = ShardFeed(make_cfg(urls, data__workers=2), 0, 1, "cpu")  # no index.json: the first shard counted
    assert feed.total == 7 * SHARD and feed.batch(0)[0].shape == (8, 3, 32, 32)


EXITS_WITH_READERS_OPEN = """
import sys
from gandist.data.shards.eval import eval_batches
from gandist.data.shards.feed import ShardFeed
from tests.unit.data.test_stream import URLS, make_cfg
feed = ShardFeed(make_cfg(sys.argv[1] + "/" + URLS, data__workers=2), 0, 1, "cpu")
feed.batch(0)  # a training feed is never read to its end
partial = iter(eval_batches(sys.argv[1] + "/" + URLS, 0, 1, 8, 2))
next(partial)  # nor is the real set of an evaluation that needs fewer images than it holds
print("read", flush=True)
"""


def test_a_process_with_loader_workers_still_open_exits(shards):
    """Loader workers ignore SIGTERM (the training process decides when to stop), and at interpreter exit torch
    leaves open workers to multiprocessing, which SIGTERMs and joins them: a run whose feed or evaluation reader
    was still open never exited.  It must exit at once, its workers with it, and without a traceback."""
    p = subprocess.run([sys.executable, "-c", EXITS_WITH_READERS_OPEN, str(shards)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert (p.returncode, p.stdout.strip()) == (0, "read"), p.stderr
    assert "Exception ignored" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_a_forked_process_that_drops_a_copy_of_an_open_feed_leaves_its_workers_alone(shards):
    """A process forked while a feed's workers run (another loader's worker) holds a copy of the feed's
    iterator; if it drops that copy (the garbage collector runs where it likes), the shutdown must not stop,
    test or kill workers that only the training process owns: testing them raised "can only test a child
    process" in such processes of two MNIST runs (an iterator already shut down, kept by a reference cycle),
    and stopping them would stop the training feed."""
    feed = ShardFeed(make_cfg(str(shards / URLS), data__workers=2), 0, 1, "cpu")
    feed.batch(0)
    old = feed._it
    feed.batch(5)  # a seek: the old iterator is shut down, and `old` keeps it as a cycle would
    live = feed._it
    pid = os.fork()
    if pid == 0:  # the child: drop both copies as the garbage collector would, and say how that went
        try:
            old._shutdown_workers()
            live._shutdown_workers()
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0
    assert all(w.is_alive() for w in live._workers)
    fresh = ShardFeed(make_cfg(str(shards / URLS), data__workers=2), 0, 1, "cpu")
    assert torch.equal(feed.batch(6)[0], fresh.batch(6)[0])  # the feed reads on, as one never forked
