"""The streaming shard reader: evaluation mode covers every sample exactly once across ranks, training
mode gives every rank the same number of batches per epoch and resumes exactly, corrupt data is skipped
and counted, the url forms (braces, ';', http with a cache) all read the same, and the index.json checks
and the tar reader hold on their own.

Everything here reads in this process (data.workers=0); DataLoader worker processes and pipe: urls are
tested in tests/integration/test_shard_workers.py."""
from __future__ import annotations

import dataclasses
import functools
import http.server
import io
import json
import shutil
import tarfile
import threading

import numpy as np
import pytest
import torch

from gandist.config import Config
from gandist.data.errors import DataError
from gandist.data.prepare import prepare
from gandist.data.shards.eval import eval_batches
from gandist.data.shards.feed import ShardFeed
from gandist.data.shards.index import check_index, count_samples
from gandist.data.shards.io import expand_urls
from gandist.data.shards.tar import TarError, is_tar, tar_members
from gandist.data.synthetic import render
from tests.data_fixtures import make_celeba

N, SHARD = 53, 8  # 7 shards: six of 8 samples and one of 5
URLS = "train-{000000..000006}.tar"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    prepare("synthetic", None, out, size=N, shard_size=SHARD, progress=False, workers=0)
    return out


@pytest.fixture(scope="module")
def by_pixels():
    """uint8 bytes of each embedded image -> (index, class)."""
    out = {}
    for i in range(N):
        arr, label = render(0, i, 32, 3)
        out[arr.tobytes()] = (i, label)
    return out


def make_cfg(urls: str, **over) -> Config:
    cfg = Config()
    cfg.data.source, cfg.data.urls, cfg.data.workers, cfg.data.shuffle_buffer = "shards", urls, 0, 16
    cfg.train.batch_size, cfg.train.seed = 8, 0
    for k, v in over.items():
        section, key = k.split("__")
        setattr(getattr(cfg, section), key, v)
    return cfg


def as_u8(x: torch.Tensor) -> np.ndarray:
    return ((x.double() + 1.0) * 127.5).round().to(torch.uint8).numpy()


def identify(x: torch.Tensor, by_pixels) -> list[tuple[int, int]]:
    return [by_pixels[img.tobytes()] for img in as_u8(x)]


# -- evaluation mode -------------------------------------------------------------------------------

def read_each_sample_once(shards, workers: int):
    """Evaluation mode over 2 ranks x `workers`: every sample exactly once, with the embedded dataset's
    pixels and labels; shard i goes to rank i mod 2."""
    seen, per_rank = [], []
    for rank in (0, 1):
        reader = eval_batches(str(shards / URLS), rank, 2, 5, workers=workers, with_keys=True)
        n = 0
        for x, y, keys in reader:
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and len(x) <= 5
            for img, lab, key in zip(x.numpy(), y.tolist(), keys):
                arr, label = render(0, int(key), 32, 3)
                np.testing.assert_array_equal(img, arr)
                assert lab == label
            seen += keys
            n += len(keys)
        assert reader.skipped == 0
        per_rank.append(n)
    assert sorted(seen) == [f"{i:07d}" for i in range(N)]  # each exactly once
    assert per_rank == [8 + 8 + 8 + 5, 8 + 8 + 8]  # shards 0, 2, 4, 6 and 1, 3, 5


def test_eval_mode_yields_each_sample_once_over_2_ranks(shards):
    read_each_sample_once(shards, workers=0)


# -- training mode ---------------------------------------------------------------------------------

def test_training_mode_gives_every_rank_the_same_batches_per_epoch(shards, by_pixels):
    cfg = make_cfg(str(shards / URLS))
    for rank in (0, 1):
        src = ShardFeed(cfg, rank, 2, "cpu")
        assert src.total == N and src.bpe == N // 8  # the same epoch length on both ranks
        for j in range(3 * src.bpe + 2):
            x, y = src.batch(j)
            assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y is None
            assert x.min() >= -1.0 and x.max() <= 1.0
            identify(x, by_pixels)  # real dataset images
        state = json.loads(json.dumps(src.state_dict()))  # JSON-serialisable for checkpoints
        assert state["epoch"] == 3 and state["batch_in_epoch"] == 2 and state["next_batch"] == 3 * src.bpe + 2
        assert src.skipped == 0


def test_training_mode_is_seeded_and_resumes_exactly(shards, by_pixels):
    cfg = make_cfg(str(shards / URLS))
    a = ShardFeed(cfg, 1, 2, "cpu")
    first, states = [], {}
    for j in range(10):
        first.append(a.batch(j)[0])
        states[j + 1] = a.state_dict()
    again = ShardFeed(cfg, 1, 2, "cpu")
    assert all(torch.equal(again.batch(j)[0], first[j]) for j in range(10))

    resumed = ShardFeed(cfg, 1, 2, "cpu")  # from a checkpoint taken after 7 batches (mid-epoch 1)
    resumed.load_state_dict(json.loads(json.dumps(states[7])))
    assert resumed.state_dict()["next_batch"] == 7
    assert all(torch.equal(resumed.batch(j)[0], first[j]) for j in range(7, 10))
    jumped = ShardFeed(cfg, 1, 2, "cpu")  # or positioned by the D-step index alone
    assert torch.equal(jumped.batch(8)[0], first[8])

    other_rank = ShardFeed(cfg, 0, 2, "cpu")
    other_seed = ShardFeed(make_cfg(str(shards / URLS), train__seed=1), 1, 2, "cpu")
    assert not torch.equal(other_rank.batch(0)[0], first[0])
    assert not torch.equal(other_seed.batch(0)[0], first[0])
    # the shuffle reaches across shards: the first batches already mix samples of several
    shard_of = {int(k): s for s in range(7) for k in shard_keys(shards / f"train-{s:06d}.tar")}
    assert len({shard_of[i] for x in first[:3] for i, _ in identify(x, by_pixels)}) >= 3


def test_training_labels_become_conditions(shards, by_pixels, tmp_path):
    cfg = make_cfg(str(shards / URLS), model__conditioning="concat")
    src = ShardFeed(cfg, 0, 1, "cpu")
    for j in range(3):
        x, y = src.batch(j)
        assert y.shape == (8, 10)
        assert [lab for _, lab in identify(x, by_pixels)] == y.argmax(1).tolist()

    names, rows = make_celeba(tmp_path / "celeba", n=10, partition=False)
    prepare("celeba", tmp_path / "celeba", tmp_path / "c", crop=30, resolution=32, shard_size=4, progress=False,
            workers=0)
    pattern = json.loads((tmp_path / "c" / "index.json").read_text())["splits"]["train"]["pattern"]
    urls = str(tmp_path / "c" / pattern)
    attrs = {x.numpy().tobytes(): a for xs, ys in eval_batches(urls, 0, 1, 10, 0, label_key="attr",
                                                               attributes=names) for x, a in zip(xs, ys.tolist())}
    chosen = ["Smiling", "Bald"]
    cfg = make_cfg(urls, model__conditioning="projection", data__label_key="attr", data__attributes=chosen,
                   data__num_classes=0, train__batch_size=4)
    src = ShardFeed(cfg, 0, 1, "cpu")
    for j in range(4):
        x, y = src.batch(j)
        for img, cond in zip(as_u8(x), y.tolist()):
            full = attrs[img.tobytes()]
            assert cond == [float(full[names.index(a)] > 0) for a in chosen]

    with pytest.raises(DataError, match=r"data.attributes: \['Wavy_Hair'\] are not attributes"):
        ShardFeed(make_cfg(urls, model__conditioning="concat", data__label_key="attr",
                             data__attributes=["Wavy_Hair"]), 0, 1, "cpu")
    with pytest.raises(DataError, match="data.resolution is 64 but the celeba shards .* are 32 px"):
        ShardFeed(make_cfg(urls, data__resolution=64), 0, 1, "cpu")
    with pytest.raises(DataError, match="have no class labels"):
        ShardFeed(make_cfg(urls, model__conditioning="concat"), 0, 1, "cpu")


# -- corrupt data ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_members_reads_what_tarfile_reads(fmt):
    files = [("a/000001.png", b"x" * 700), ("d" * 120 + "/k.cls", b"3"), ("\u00e9t\u00e9.json", b"{}"), ("e.txt", b"")]
    if fmt != tarfile.USTAR_FORMAT:
        files.append(("x" * 130 + ".png", b"y" * 512))  # a GNU long name / a pax path
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("a-folder")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    raw = buf.getvalue()
    assert list(tar_members(io.BytesIO(raw))) == files
    with pytest.raises(TarError, match="member truncated"):
        list(tar_members(io.BytesIO(raw[:1000])))
    damaged = bytearray(raw)
    damaged[1536 + 3] ^= 1  # a name byte of the second header
    with pytest.raises(TarError, match="bad header checksum at byte 1536"):
        list(tar_members(io.BytesIO(bytes(damaged))))


class _Stream(io.RawIOBase):
    """A pipe or http body: readable, not seekable."""

    def __init__(self, data: bytes):
        self.f = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self.f.readinto(b)


def test_samples_are_counted_by_the_same_tar_reader(shards, tmp_path):
    path = shards / "train-000006.tar"
    assert count_samples(str(path)) == 5 == len(shard_keys(path))  # the short last shard
    with open(path, "rb") as f, open(path, "rb") as g:
        headers_only, full = list(tar_members(f, data=False)), list(tar_members(g))
    assert [n for n, _ in headers_only] == [n for n, _ in full]
    assert all(d is None for _, d in headers_only)
    assert [n for n, _ in tar_members(_Stream(path.read_bytes()), data=False)] == [n for n, _ in headers_only]
    assert is_tar(path)
    for junk in (b"", b"<html>404</html>", b"\0" * 2048, np.random.default_rng(0).bytes(4096)):
        (tmp_path / "junk").write_bytes(junk)
        assert not is_tar(tmp_path / "junk")


def test_check_index_against_the_config():
    d = dataclasses.replace(Config().data, resolution=64, attributes=["Smiling"])
    celeba = {"source": "celeba", "resolution": 64, "channels": 3, "classes": None, "attributes": ["Male", "Smiling"]}
    cifar = {"source": "cifar10", "resolution": 64, "channels": 3, "classes": [str(i) for i in range(10)]}
    check_index({}, dataclasses.replace(d, resolution=28), "cls")  # no index.json: nothing to compare with
    check_index(celeba, d, "attr")
    check_index(celeba, d, None)
    check_index(cifar, d, "cls")
    with pytest.raises(DataError, match=r"^data.resolution is 32 but the celeba shards \(index.json\) are 64 px; "
                                        r"set data.resolution=64 or re-run gandist-prepare with --resolution 32 "
                                        r"\(rank 3 on h\)$"):
        check_index(celeba, dataclasses.replace(d, resolution=32), None, "rank 3 on h")
    with pytest.raises(DataError, match=r"^data.channels is 1 but the celeba shards \(index.json\) have 3$"):
        check_index(celeba, dataclasses.replace(d, channels=1), None)
    with pytest.raises(DataError, match=r"data.attributes: \['Bald'\] are not attributes of the celeba shards"):
        check_index(celeba, dataclasses.replace(d, attributes=["Smiling", "Bald"]), "attr")
    with pytest.raises(DataError, match=r"no class labels \(use data.label_key=attr with data.attributes\)"):
        check_index(celeba, d, "cls")
    with pytest.raises(DataError, match="data.num_classes is 5 but the cifar10 shards .* have 10 classes"):
        check_index(cifar, dataclasses.replace(d, num_classes=5), "cls")


def rewrite_member(path, index: int, ext: str, change):
    """Rewrite the tar at path with member `index`'s `ext` file's bytes passed through `change`."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    target = f"{keys[index]}.{ext}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m, data in members:
            if m.name == target:
                data = change(data)
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return keys[index]


def flip_image_byte(png: bytes) -> bytes:
    b = bytearray(png)
    b[len(b) // 2] ^= 0x5A  # inside the compressed image data (libpng alone would crash on it)
    return bytes(b)


@pytest.fixture
def damaged(shards, tmp_path):
    d = tmp_path / "damaged"
    shutil.copytree(shards, d)
    bad_key = rewrite_member(d / "train-000001.tar", 2, "png", flip_image_byte)
    data = (d / "train-000002.tar").read_bytes()
    (d / "train-000002.tar").write_bytes(data[:len(data) // 2 + 700])  # cut inside a member
    (d / "train-000003.tar").write_bytes(np.random.default_rng(0).bytes(20000))  # not a tar at all
    return d, bad_key


def shard_keys(path) -> set[str]:
    with tarfile.open(path) as tar:
        return {m.name.split(".")[0] for m in tar.getmembers()}


def test_corrupt_members_and_shards_are_skipped_and_counted(shards, damaged, by_pixels):
    d, bad_key = damaged
    urls = str(d / "train-{000000..000007}.tar")  # ...000007 does not exist
    seen, skipped = [], 0
    for rank in (0, 1):
        reader = eval_batches(urls, rank, 2, 4, workers=0, with_keys=True)
        seen += [k for _, _, keys in reader for k in keys]
        skipped += reader.skipped
    assert len(seen) == len(set(seen))
    intact = set().union(*(shard_keys(shards / f"train-{s:06d}.tar") for s in (0, 1, 4, 5, 6))) - {bad_key}
    assert intact <= set(seen) and bad_key not in seen
    assert not set(seen) & shard_keys(shards / "train-000003.tar")
    assert skipped >= 4  # the corrupt image, the cut shard, the garbage shard, the missing shard

    # training goes on over several epochs, every image it yields is intact, the skips are counted
    src = ShardFeed(make_cfg(urls, train__batch_size=6), 0, 1, "cpu")
    for j in range(4 * src.bpe):
        x, _ = src.batch(j)
        assert bad_key not in {f"{i:07d}" for i, _ in identify(x, by_pixels)}
    assert src.skipped >= 3


def test_nothing_readable_is_an_error_not_a_hang(shards, tmp_path):
    d = tmp_path / "garbage"
    shutil.copytree(shards, d)
    for p in d.glob("*.tar"):
        p.write_bytes(b"\0" * 1024 + b"this is no tar")
    src = ShardFeed(make_cfg(str(d / URLS)), 0, 1, "cpu")  # index.json still lists the shards
    with pytest.raises(DataError, match=r"rank 0 on .*worker 0: opened 80 shards in a row without one good sample"):
        src.batch(0)
    with pytest.raises(DataError, match="none of the 7 shard"):
        ShardFeed(make_cfg(str(tmp_path / "nowhere" / URLS)), 0, 1, "cpu")


# -- url forms -------------------------------------------------------------------------------------

def test_url_forms_http_and_cache(shards, tmp_path):
    local = expand_urls(str(shards / URLS))
    assert len(local) == 7
    two = expand_urls(f"{shards}/train-{{000000..000002}}.tar; {shards}/train-{{000005..000006}}.tar")
    assert [u.rsplit("-", 1)[1] for u in two] == ["000000.tar", "000001.tar", "000002.tar", "000005.tar", "000006.tar"]

    def keys(urls, **kw):
        return sorted(k for rank in (0, 1) for _, _, ks in eval_batches(urls, rank, 2, 8, 0, with_keys=True, **kw)
                      for k in ks)

    everything = [f"{i:07d}" for i in range(N)]

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    web = f"http://127.0.0.1:{server.server_address[1]}/{URLS}"
    cache = tmp_path / "cache"
    try:
        assert keys(web) == everything
        src = ShardFeed(make_cfg(web, data__cache_dir=str(cache)), 0, 1, "cpu")  # index.json over http
        assert src.total == N
        assert keys(web, cache_dir=str(cache)) == everything
    finally:
        server.shutdown()
        server.server_close()
    assert len(list(cache.iterdir())) == 7 and not list(cache.glob(".*"))
    # with the server gone, the cache still serves every shard; without index.json the epoch length
    # comes from counting the first remote shard
    assert keys(web, cache_dir=str(cache)) == everything
    src = ShardFeed(make_cfg(web, data__cache_dir=str(cache)), 0, 1, "cpu")
    assert src.total == 7 * len(shard_keys(shards / "train-000000.tar"))
    assert src.batch(0)[0].shape == (8, 3, 32, 32) and src.skipped == 0
    # local shards without index.json are counted exactly
    bare = tmp_path / "bare"
    shutil.copytree(shards, bare, ignore=shutil.ignore_patterns("index.json"))
    assert ShardFeed(make_cfg(str(bare / URLS)), 0, 1, "cpu").total == N
    assert keys(str(bare / URLS)) == everything  # evaluation takes the image size from the first image


# -- the raw encoding (gandist-prepare --encoding raw) -----------------------------------------------

@pytest.fixture(scope="module")
def raw_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw_shards")
    prepare("synthetic", None, out, size=N, shard_size=SHARD, progress=False, workers=0, encoding="raw")
    return out


def test_raw_shards_read_bit_identical_to_png(shards, raw_shards):
    with tarfile.open(raw_shards / "train-000000.tar") as tar:  # really the other encoding
        assert {m.name.rsplit(".", 1)[1] for m in tar.getmembers()} == {"npy", "cls"}
    assert json.loads((raw_shards / "index.json").read_text())["encoding"] == "raw"

    def everything(d):
        return [(x, y, keys) for rank in (0, 1) for x, y, keys in eval_batches(str(d / URLS), rank, 2, 5, 0,
                                                                                with_keys=True)]

    png, raw = everything(shards), everything(raw_shards)
    assert len(png) == len(raw) and sum(len(k) for _, _, k in raw) == N
    for (xp, yp, kp), (xr, yr, kr) in zip(png, raw):
        assert kp == kr and xr.dtype == torch.uint8 and torch.equal(xp, xr) and torch.equal(yp, yr)
    # training mode: the same seeded batches, to the bit, through the whole feed (labels included)
    a = ShardFeed(make_cfg(str(shards / URLS), model__conditioning="concat"), 1, 2, "cpu")
    b = ShardFeed(make_cfg(str(raw_shards / URLS), model__conditioning="concat"), 1, 2, "cpu")
    assert "stored as png" in a.description and "stored as raw" in b.description
    for j in range(2 * a.bpe + 1):
        (xa, ya), (xb, yb) = a.batch(j), b.batch(j)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # one data.urls may hold shards of both encodings: each sample says which it is
    mixed = f"{shards}/train-{{000000..000002}}.tar;{raw_shards}/train-{{000003..000006}}.tar"
    keys = [k for _, _, ks in eval_batches(mixed, 0, 1, 8, 0, with_keys=True) for k in ks]
    assert sorted(keys) == [f"{i:07d}" for i in range(N)]


class _Touch:
    """Unpickling this creates a file: a loader that runs pickled code would leave it behind."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


RAW_DAMAGE = {  # what a bad .npy sample is -> the words its skip message must hold
    "truncated": (lambda b: b[:-100], "EOF: reading array data"),
    "garbage": (lambda b: b"\x89PNG not an array" + b[20:], "magic string is not correct"),
    "trailing bytes": (lambda b: b + b"\0" * 7, "7 byte(s) after the array"),
    "another size": (lambda b: npy_bytes(np.zeros((3, 16, 16), np.uint8)), "16x16 px, data.resolution is 32"),
    "one channel": (lambda b: npy_bytes(np.zeros((1, 32, 32), np.uint8)), "1 channel(s), data.channels is 3"),
    "float pixels": (lambda b: npy_bytes(np.zeros((3, 32, 32), np.float32)), "a float32 array of shape (3, 32, 32)"),
}


@pytest.mark.parametrize("damage", sorted(RAW_DAMAGE))
def test_a_bad_raw_sample_is_skipped_counted_and_named(raw_shards, tmp_path, caplog, damage):
    change, words = RAW_DAMAGE[damage]
    d = tmp_path / "raw"
    shutil.copytree(raw_shards, d)
    bad_key = rewrite_member(d / "train-000001.tar", 3, "npy", change)
    caplog.set_level("WARNING", logger="gandist.data")
    reader = eval_batches(str(d / URLS), 0, 1, 8, 0, with_keys=True, resolution=32, channels=3)
    keys = [k for _, _, ks in reader for k in ks]
    assert reader.skipped == 1 and bad_key not in keys and len(keys) == N - 1
    skips = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skips) == 1, skips
    assert f"sample {bad_key!r} of {d / 'train-000001.tar'}" in skips[0] and words in skips[0], skips[0]

    # training: the bad sample is never served, the skip is counted
    src = ShardFeed(make_cfg(str(d / URLS)), 0, 1, "cpu")
    for j in range(3 * src.bpe):
        src.batch(j)
    assert src.skipped >= 1


def test_a_raw_sample_never_runs_pickled_code(raw_shards, tmp_path, caplog):
    d = tmp_path / "raw"
    shutil.copytree(raw_shards, d)
    trap = tmp_path / "pickle-ran"
    bad_key = rewrite_member(d / "train-000000.tar", 0, "npy", lambda b: npy_bytes(np.array([_Touch(trap)], object)))
    reader = eval_batches(str(d / URLS), 0, 1, 8, 0, with_keys=True)
    keys = [k for _, _, ks in reader for k in ks]
    assert not trap.exists()
    assert reader.skipped == 1 and bad_key not in keys
    assert any("Object arrays cannot be loaded when allow_pickle=False" in r.getMessage() for r in caplog.records)


def test_raw_shards_of_another_size_fail_clearly_without_an_index(raw_shards, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(raw_shards, bare, ignore=shutil.ignore_patterns("index.json"))
    with pytest.raises(DataError, match=r"sample '\d{7}' of .*train-000000.tar: 32x32 px, data.resolution is 64"):
        ShardFeed(make_cfg(str(bare / URLS), data__resolution=64), 0, 1, "cpu")
    # evaluation without an index takes the size from the first raw image, as for PNG
    x, _ = next(iter(eval_batches(str(bare / URLS), 0, 1, 4, 0)))
    assert x.shape == (4, 3, 32, 32)


def test_check_index_knows_the_encodings():
    d = dataclasses.replace(Config().data, resolution=32)
    synthetic = {"source": "synthetic", "resolution": 32, "channels": 3, "classes": [str(i) for i in range(10)]}
    check_index(synthetic, d, "cls")  # an index from before the field: png
    check_index({**synthetic, "encoding": "png"}, d, "cls")
    check_index({**synthetic, "encoding": "raw"}, d, "cls")
    with pytest.raises(DataError, match=r"^the synthetic shards \(index.json\) are encoded 'jpeg', which this gandist "
                                        r"cannot read \(it reads png and raw\); re-run gandist-prepare with "
                                        r"--encoding png or raw \(rank 1 on h\)$"):
        check_index({**synthetic, "encoding": "jpeg"}, d, "cls", "rank 1 on h")
