"""gandist-prepare: shards from each source read back with the source's exact pixels and labels; bad
input is an error naming the file, or with --skip-bad a counted skip; re-runs are idempotent.

Every source is tested on files in its real format made here (tests/data_fixtures.py); the same checks
run again on the real samples in ../shared/data where they are (skipped without them, required in CI).
The shards are written in this process (workers=0); writer processes: tests/integration/test_prepare_cli.py."""
from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from gandist.data.errors import PrepareError
from gandist.data.prepare import parse_args, prepare
from gandist.data.shards.eval import eval_batches
from gandist.data.sources.cifar10 import read_batch
from gandist.data.synthetic import render
from tests.data_fixtures import (CELEBA_ATTRIBUTES, CELEBA_SIZE, CIFAR10_CLASSES, make_celeba, make_cifar, make_mnist,
                                 write_attr, write_cifar_batch, write_idx)


def read_split(out, split="train", **kw) -> dict:
    """{key: (uint8 (C, H, W) numpy, label)} of one split, through the evaluation-mode reader."""
    index = json.loads((out / "index.json").read_text())
    got = {}
    reader = eval_batches(str(out / index["splits"][split]["pattern"]), 0, 1, 100, workers=0, with_keys=True, **kw)
    for x, y, keys in reader:
        for img, lab, key in zip(x.numpy(), y.tolist() if y is not None else [None] * len(keys), keys):
            assert key not in got, f"{key} read twice"
            got[key] = (img, lab)
    assert reader.skipped == 0
    return got


# -- helpers ---------------------------------------------------------------------------------------

def centre_crop(path, crop, resolution=None, mode="RGB") -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert(mode)
        w, h = im.size
        left, top = (w - crop) // 2, (h - crop) // 2
        im = im.crop((left, top, left + crop, top + crop))
        if resolution and resolution != crop:
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = np.asarray(im)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# -- CIFAR-10 --------------------------------------------------------------------------------------

def check_cifar10_partial_copy(src, out, shard_size: int) -> dict:
    """A copy holding data_batch_1, test_batch and batches.meta only (as ../shared/data's sample): an error
    naming the missing batches, or with --skip-bad shards of what is there, read back byte-identical."""
    batches = src / "cifar-10-batches-py"
    with pytest.raises(PrepareError, match=r"data_batch_2: missing(.|\n)*--skip-bad"):
        prepare("cifar10", src, out, progress=False, workers=0)
    index = prepare("cifar10", src, out, skip_bad=True, progress=False, workers=0, shard_size=shard_size)
    train, test = index["splits"]["train"], index["splits"]["test"]
    n = len(read_batch(batches / "data_batch_1")[0])
    assert (train["total"], test["total"]) == (n, len(read_batch(batches / "test_batch")[0]))
    assert [s["count"] for s in train["shards"]] == [min(shard_size, n - k) for k in range(0, n, shard_size)]
    assert train["skipped"] == 4 and all("missing" in m for m in train["skipped_examples"])
    assert test["skipped"] == 0 and index["skipped"] == 4
    assert index["classes"] == CIFAR10_CLASSES and index["resolution"] == 32  # from batches.meta
    assert train["pattern"] == f"train-{{000000..{len(train['shards']) - 1:06d}}}.tar"

    for split, batch in (("train", "data_batch_1"), ("test", "test_batch")):
        data, labels = read_batch(batches / batch)
        got = read_split(out, split)
        assert len(got) == len(data)
        for key, (img, lab) in got.items():
            f, row = key.rsplit("-", 1)
            assert f == batch
            np.testing.assert_array_equal(img, data[int(row)].reshape(3, 32, 32))
            assert lab == labels[int(row)]
    # the train split is written in a seeded random order, the test split in the source's
    keys = [k for x in eval_batches(str(out / train["pattern"]), 0, 1, 2000, 0, with_keys=True) for k in x[2]]
    assert keys != sorted(keys)
    return index


def test_cifar10_partial_copy(tmp_path):
    make_cifar(tmp_path / "src", rows={"data_batch_1": 23, "test_batch": 9}, meta=True)
    check_cifar10_partial_copy(tmp_path / "src", tmp_path / "out", shard_size=10)


def test_cifar10_real_sample(shared_data, tmp_path):
    index = check_cifar10_partial_copy(shared_data / "cifar10-sample", tmp_path / "out", shard_size=500)
    assert (index["splits"]["train"]["total"], index["splits"]["test"]["total"]) == (1102, 1017)


def test_cifar10_full_layout_generated(tmp_path):
    d, arrays = make_cifar(tmp_path / "raw")
    # --src may be the batches folder itself
    index = prepare("cifar10", d, tmp_path / "out", progress=False, workers=0)
    assert index["splits"]["train"]["total"] == 30 and index["skipped"] == 0
    got = read_split(tmp_path / "out", "train")
    for key, (img, lab) in got.items():
        f, row = key.rsplit("-", 1)
        np.testing.assert_array_equal(img, arrays[f][0][int(row)].reshape(3, 32, 32))
        assert lab == arrays[f][1][int(row)]
    assert len(got) == 30


def test_cifar10_bad_batches(tmp_path):
    d, _ = make_cifar(tmp_path / "raw")
    (d / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(PrepareError, match="data_batch_3: not a readable CIFAR-10"):
        prepare("cifar10", tmp_path / "raw", tmp_path / "out", progress=False, workers=0)
    write_cifar_batch(d / "data_batch_3", np.zeros((4, 3072), np.uint8), [1, 2, 3])
    with pytest.raises(PrepareError, match="data_batch_3: 4 images but 3 labels"):
        prepare("cifar10", tmp_path / "raw", tmp_path / "out", progress=False, workers=0)
    # a pickle that would run code is refused, not executed
    with open(d / "data_batch_3", "wb") as f:
        pickle.dump({b"data": subprocess.Popen, b"labels": []}, f)
    with pytest.raises(PrepareError, match="refusing to load subprocess.Popen"):
        prepare("cifar10", tmp_path / "raw", tmp_path / "out", progress=False, workers=0)
    index = prepare("cifar10", tmp_path / "raw", tmp_path / "out", progress=False, workers=0, skip_bad=True)
    assert index["splits"]["train"]["total"] == 24 and index["splits"]["train"]["skipped"] == 1
    with pytest.raises(PrepareError, match="does not exist"):
        prepare("cifar10", tmp_path / "nowhere", tmp_path / "out2", progress=False, workers=0)


# -- CelebA ----------------------------------------------------------------------------------------

def check_celeba_without_partition(src, out, shard_size: int) -> dict:
    """Aligned faces and their 40 attributes without list_eval_partition.txt (as ../shared/data's sample):
    everything is train, centre crop 108 and Lanczos to 64 px by default, every attribute kept."""
    index = prepare("celeba", src, out, progress=False, workers=0, shard_size=shard_size)
    lines = (src / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    rows = {p[0][:-4]: [int(v) for v in p[1:]] for p in (line.split() for line in lines[2:])}
    assert names == CELEBA_ATTRIBUTES  # the fixtures' names are the real ones
    assert list(index["splits"]) == ["train"]  # no list_eval_partition.txt: everything is train
    train = index["splits"]["train"]
    assert train["total"] == len(rows) and index["skipped"] == 0
    assert [s["count"] for s in train["shards"]] == [min(shard_size, len(rows) - k)
                                                     for k in range(0, len(rows), shard_size)]
    assert index["attributes"] == names
    assert index["resolution"] == 64 and index["preprocessing"]["center_crop"] == 108

    got = read_split(out, label_key="attr", attributes=names)
    assert sorted(got) == sorted(rows)
    for key, (img, attr) in got.items():
        assert attr == rows[key], key
        assert img.shape == (3, 64, 64)
    for key in sorted(got)[:4]:  # centre crop 108 of 178x218, Lanczos to 64
        np.testing.assert_array_equal(got[key][0], centre_crop(src / "img_align_celeba" / f"{key}.jpg", 108, 64))
    return index


def test_celeba_without_partition(tmp_path):
    make_celeba(tmp_path / "src", n=10, size=CELEBA_SIZE, partition=False, names=CELEBA_ATTRIBUTES)
    check_celeba_without_partition(tmp_path / "src", tmp_path / "out", shard_size=4)


def test_celeba_real_sample(shared_data, tmp_path):
    index = check_celeba_without_partition(shared_data / "celeba-sample", tmp_path / "out", shard_size=200)
    assert [s["count"] for s in index["splits"]["train"]["shards"]] == [200, 200, 100]


def test_celeba_partition_and_exact_pixels(tmp_path):
    names, rows = make_celeba(tmp_path / "c", n=8, size=(30, 36))
    # crop = resolution: no resize, so the pixels are the decoded JPEG's centre square exactly
    index = prepare("celeba", tmp_path / "c", tmp_path / "out", crop=24, resolution=24, progress=False, workers=0)
    assert {k: v["total"] for k, v in index["splits"].items()} == {"train": 5, "valid": 2, "test": 1}
    got = {**read_split(tmp_path / "out", "train", label_key="attr", attributes=names),
           **read_split(tmp_path / "out", "valid", label_key="attr", attributes=names),
           **read_split(tmp_path / "out", "test", label_key="attr", attributes=names)}
    assert sorted(got) == sorted(k[:-4] for k in rows)
    for key, (img, attr) in got.items():
        assert attr == rows[f"{key}.jpg"]
        np.testing.assert_array_equal(img, centre_crop(tmp_path / "c" / "img_align_celeba" / f"{key}.jpg", 24))


def test_celeba_bad_input_is_an_error_or_counted(tmp_path, capsys):
    root = tmp_path / "c"
    names, rows = make_celeba(root, n=6, partition=False)
    rows["000099.jpg"] = [1, 1, 1]  # a row naming an absent image
    del rows["000002.jpg"]  # an image without a row
    write_attr(root, names, rows)
    with pytest.raises(PrepareError) as e:
        prepare("celeba", root, tmp_path / "out", crop=24, resolution=24, progress=False, workers=0)
    assert "000099.jpg does not exist" in str(e.value) and "000002.jpg: no row" in str(e.value)

    (root / "img_align_celeba" / "000004.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    index = prepare("celeba", root, tmp_path / "out", crop=24, resolution=24, progress=False, workers=0,
                    skip_bad=True)
    train = index["splits"]["train"]
    assert train["total"] == 4 and train["skipped"] == 3
    assert any("000004.jpg: cannot decode" in m for m in train["skipped_examples"])
    err = capsys.readouterr().err  # never silently: each skip is reported as it happens
    assert "train: skipped" in err and "000004.jpg: cannot decode" in err and "000099.jpg does not exist" in err
    assert sorted(read_split(tmp_path / "out", label_key="attr", attributes=names)) == \
        ["000001", "000003", "000005", "000006"]

    # the listing is consistent again: without --skip-bad the corrupt image stops prepare, named
    del rows["000099.jpg"]
    write_attr(root, names, rows)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(PrepareError, match="000004.jpg: cannot decode"):
        prepare("celeba", root, tmp_path / "out2", crop=24, resolution=24, progress=False, workers=0)
    assert not list((tmp_path / "out2").glob("*.tar*"))  # no half-written shard is left in place


# -- MNIST -----------------------------------------------------------------------------------------

def check_mnist_test_set_only(src, out, shard_size: int) -> dict:
    """The gzipped IDX files of the test set in src/raw (as ../shared/data's sample): no train files is
    an error naming them; the test split reads back with the files' exact pixels and labels."""
    raw = src / "raw"
    with pytest.raises(PrepareError, match="no train-images-idx3-ubyte"):
        prepare("mnist", src, out, progress=False, workers=0)
    index = prepare("mnist", src, out, splits=["test"], progress=False, workers=0, shard_size=shard_size)
    images = np.frombuffer(gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    images = images.reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    assert index["splits"]["test"]["total"] == len(images) and index["channels"] == 1 and index["resolution"] == 28
    got = read_split(out, "test")
    assert len(got) == len(images)
    for key, (img, lab) in got.items():
        i = int(key.split("-")[1])
        np.testing.assert_array_equal(img[0], images[i])
        assert lab == labels[i]
    return index


def test_mnist_test_set_only(tmp_path):
    make_mnist(tmp_path / "src" / "raw", {"t10k": 30}, gz=True)
    check_mnist_test_set_only(tmp_path / "src", tmp_path / "out", shard_size=8)


def test_mnist_real_sample(shared_data, tmp_path):
    index = check_mnist_test_set_only(shared_data / "mnist-sample", tmp_path / "out", shard_size=4000)
    assert index["splits"]["test"]["total"] == 10000


def test_resplit_cuts_a_held_out_set_from_one_split(tmp_path):
    """--resplit: the test set alone becomes disjoint train and test splits that together hold every sample
    once, with its exact pixels and label; the cut depends on --shuffle-seed only, and asking too much names it."""
    make_mnist(tmp_path / "src" / "raw", {"t10k": 30}, gz=True)
    kw = dict(splits=["test"], progress=False, workers=0, shard_size=8)
    index = prepare("mnist", tmp_path / "src", tmp_path / "out", resplit_sizes={"train": 20, "test": 7}, **kw)
    assert (index["splits"]["train"]["total"], index["splits"]["test"]["total"]) == (20, 7)
    prepare("mnist", tmp_path / "src", tmp_path / "whole", **kw)
    whole = read_split(tmp_path / "whole", "test")
    train, test = read_split(tmp_path / "out", "train"), read_split(tmp_path / "out", "test")
    assert not set(train) & set(test) and set(train) | set(test) <= set(whole)
    for key, (img, lab) in {**train, **test}.items():
        np.testing.assert_array_equal(img, whole[key][0])
        assert lab == whole[key][1]
    again = prepare("mnist", tmp_path / "src", tmp_path / "again", resplit_sizes={"train": 20, "test": 7}, **kw)
    assert set(read_split(tmp_path / "again", "test")) == set(test) and again["splits"]["test"]["total"] == 7
    other = prepare("mnist", tmp_path / "src", tmp_path / "other", resplit_sizes={"train": 20, "test": 7},
                    shuffle_seed=1, **kw)
    assert set(read_split(tmp_path / "other", "test")) != set(test) and other
    with pytest.raises(PrepareError, match="asks for 31 samples in all; the split.s. read hold 30: test .30."):
        prepare("mnist", tmp_path / "src", tmp_path / "bad", resplit_sizes={"train": 30, "test": 1}, **kw)
    assert parse_args(["mnist", "--out", "o", "--resplit", "train=8000,test=2000"]).resplit == \
        {"train": 8000, "test": 2000}
    with pytest.raises(SystemExit):
        parse_args(["mnist", "--out", "o", "--resplit", "train=8000,train=2"])


def test_mnist_uncompressed_and_truncated(tmp_path):
    rng = np.random.default_rng(1)
    imgs, labs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", imgs, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labs, gz=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[:3], gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labs[:3], gz=True)
    prepare("mnist", tmp_path, tmp_path / "out", progress=False, workers=0, shuffle_seed=None)
    got = read_split(tmp_path / "out", "train")
    assert [k for k in got] == [f"train-{i:05d}" for i in range(7)]  # --no-shuffle: the source's order
    for i, (img, lab) in enumerate(got.values()):
        np.testing.assert_array_equal(img[0], imgs[i])
        assert lab == labs[i]
    assert len(read_split(tmp_path / "out", "test")) == 3

    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(PrepareError, match=r"train-images-idx3-ubyte: header says 7x28x28 = 5488 bytes.*\(truncated\)"):
        prepare("mnist", tmp_path, tmp_path / "out", progress=False, workers=0)


# -- image folders ---------------------------------------------------------------------------------

def test_folder_with_classes_and_flat(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "flowers"
    expect = {}
    for cls in ("tulip", "daisy", "rose"):
        (src / cls / "sub").mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            p = src / cls / ("sub" if i == 2 else "") / f"img.{i}.png"
            Image.fromarray(arr).save(p)
            expect[(cls, i)] = arr
    (src / "daisy" / "notes.txt").write_text("not an image")
    index = prepare("folder", src, tmp_path / "out", resolution=16, progress=False, workers=0)
    assert index["classes"] == ["daisy", "rose", "tulip"] and index["splits"]["train"]["total"] == 9
    got = read_split(tmp_path / "out")
    for key, (img, lab) in got.items():
        cls = index["classes"][lab]
        i = int(key.rsplit("_", 1)[1])  # 0000003_rose_img_0 -> 0
        assert key.split("_", 1)[1].startswith(cls)
        np.testing.assert_array_equal(img, expect[(cls, i)].transpose(2, 0, 1))

    flat = tmp_path / "anime"
    flat.mkdir()
    big = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # 30 wide, 20 high: centre 20x20 square
    Image.fromarray(big).save(flat / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8), "RGBA").save(flat / "b.png")
    (flat / "c.jpg").write_bytes(b"garbage")
    with pytest.raises(PrepareError, match="c.jpg: cannot decode image"):
        prepare("folder", flat, tmp_path / "flat", resolution=20, progress=False, workers=0)
    index = prepare("folder", flat, tmp_path / "flat", resolution=20, progress=False, workers=0, skip_bad=True)
    assert index["classes"] is None and index["label_key"] is None
    assert index["splits"]["train"]["total"] == 2 and index["skipped"] == 1
    got = read_split(tmp_path / "flat")
    np.testing.assert_array_equal(got["0000000_a"][0], big[:, 5:25].transpose(2, 0, 1))
    assert got["0000000_a"][1] == -1  # no label
    with pytest.raises(PrepareError, match="no images"):
        prepare("folder", tmp_path / "out", tmp_path / "o3", progress=False, workers=0)  # a folder of tars


# -- the embedded dataset, idempotence, the command line -----------------------------------------------

def test_synthetic_matches_render(tmp_path):
    index = prepare("synthetic", None, tmp_path / "s", size=40, resolution=32, shard_size=16, progress=False, workers=0)
    assert [s["count"] for s in index["splits"]["train"]["shards"]] == [16, 16, 8]
    got = read_split(tmp_path / "s")
    assert sorted(got) == [f"{i:07d}" for i in range(40)]
    for key, (img, lab) in got.items():
        arr, label = render(0, int(key), 32, 3)
        np.testing.assert_array_equal(img, arr)
        assert lab == label


def test_rerun_is_idempotent(tmp_path):
    out = tmp_path / "s"
    kw = dict(size=30, shard_size=8, progress=False)
    logs = []
    prepare("synthetic", None, out, workers=0, log=logs.append, **kw)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert sorted(files) == ["index.json"] + [f"train-{i:06d}.tar" for i in range(4)]

    logs.clear()
    prepare("synthetic", None, out, workers=0, log=logs.append, **kw)  # nothing to do
    assert any("up to date" in line for line in logs)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == files

    prepare("synthetic", None, out, workers=0, force=True, **kw)  # rewritten: the same bytes
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {k: v[0] for k, v in files.items()}

    (out / "train-000002.tar").write_bytes(b"damaged")  # a damaged shard is noticed and rewritten
    prepare("synthetic", None, out, workers=0, **kw)
    assert (out / "train-000002.tar").read_bytes() == files["train-000002.tar"][0]

    logs.clear()
    index = prepare("synthetic", None, out, workers=0, log=logs.append, **{**kw, "shard_size": 16})
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "train-000000.tar", "train-000001.tar"]
    assert any("removed 2 stale" in line for line in logs)
    assert index["splits"]["train"]["total"] == 30 and len(read_split(out)) == 30




# -- --encoding raw ------------------------------------------------------------------------------------

def members(out, split="train") -> set[str]:
    """The member extensions of a split's shards."""
    index = json.loads((out / "index.json").read_text())
    exts = set()
    for s in index["splits"][split]["shards"]:
        with tarfile.open(out / s["name"]) as tar:
            exts |= {m.name.split(".", 1)[1] for m in tar.getmembers()}
    return exts


def check_raw_equals_png(src, tmp_path, source, split="train", **kw) -> dict:
    """The same input prepared as png and as raw: the index says which, the shards hold .png or .npy,
    and the reader gives the same keys, labels and pixels, bit for bit."""
    png = prepare(source, src, tmp_path / "png", progress=False, workers=0, **kw)
    raw = prepare(source, src, tmp_path / "raw", progress=False, workers=0, encoding="raw", **kw)
    assert (png["encoding"], raw["encoding"]) == ("png", "raw")
    assert raw["splits"][split]["params"]["encoding"] == "raw"
    assert "png" in members(tmp_path / "png", split) and "npy" not in members(tmp_path / "png", split)
    assert "npy" in members(tmp_path / "raw", split) and "png" not in members(tmp_path / "raw", split)
    labels = {"label_key": "attr", "attributes": png["attributes"]} if png["attributes"] else {}
    a, b = read_split(tmp_path / "png", split, **labels), read_split(tmp_path / "raw", split, **labels)
    assert list(a) == list(b) and len(a) == png["splits"][split]["total"] > 0  # the same write order too
    for key in a:
        assert a[key][0].dtype == b[key][0].dtype == np.uint8
        np.testing.assert_array_equal(a[key][0], b[key][0])
        assert a[key][1] == b[key][1]
    return raw


def test_raw_encoding_reads_back_the_png_pixels_of_every_source(tmp_path):
    d, _ = make_cifar(tmp_path / "cifar")
    check_raw_equals_png(d, tmp_path / "c", "cifar10")
    make_celeba(tmp_path / "celeba", n=6, partition=False)
    check_raw_equals_png(tmp_path / "celeba", tmp_path / "e", "celeba", crop=24, resolution=16)
    make_mnist(tmp_path / "mnist", {"train": 9, "t10k": 3})
    raw = check_raw_equals_png(tmp_path / "mnist", tmp_path / "m", "mnist", split="test")
    assert raw["channels"] == 1
    check_raw_equals_png(None, tmp_path / "s", "synthetic", size=20, shard_size=8)


def test_raw_encoding_on_the_real_samples(shared_data, tmp_path):
    check_raw_equals_png(shared_data / "cifar10-sample", tmp_path / "c", "cifar10", skip_bad=True,
                         splits=["test"], split="test")
    raw = check_raw_equals_png(shared_data / "celeba-sample", tmp_path / "e", "celeba")
    shard = raw["splits"]["train"]["shards"][0]
    assert shard["bytes"] > shard["count"] * 3 * 64 * 64  # every pixel stored as it is


def test_changing_the_encoding_rewrites_and_an_old_index_means_png(tmp_path):
    out = tmp_path / "s"
    kw = dict(size=20, shard_size=8, progress=False, workers=0)
    logs = []
    prepare("synthetic", None, out, log=logs.append, **kw)
    assert any(line.startswith("train: 20 samples in 3 shard(s)") and line.endswith(", png") for line in logs)
    png = {p.name: p.read_bytes() for p in out.glob("*.tar")}

    logs.clear()
    index = prepare("synthetic", None, out, encoding="raw", log=logs.append, **kw)
    assert not any("up to date" in line for line in logs) and index["encoding"] == "raw"
    assert members(out) == {"npy", "cls"}
    logs.clear()
    prepare("synthetic", None, out, encoding="raw", log=logs.append, **kw)
    assert "train: up to date (20 samples in 3 shard(s), raw)" in logs

    index = prepare("synthetic", None, out, **kw)  # back to png: the same bytes as the first time
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == png and members(out) == {"png", "cls"}

    # an index written before --encoding existed (no field anywhere) describes PNG shards: up to date
    old = json.loads((out / "index.json").read_text())
    del old["encoding"]
    for e in old["splits"].values():
        del e["params"]["encoding"]
    (out / "index.json").write_text(json.dumps(old))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    logs.clear()
    index = prepare("synthetic", None, out, log=logs.append, **kw)
    assert "train: up to date (20 samples in 3 shard(s), png)" in logs
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamps
    assert index["encoding"] == "png" and index["splits"]["train"]["params"]["encoding"] == "png"
    assert json.loads((out / "index.json").read_text()) == index  # the index gains the field
    # ... and not up to date for raw
    index = prepare("synthetic", None, out, encoding="raw", **kw)
    assert members(out) == {"npy", "cls"}


def test_encoding_option():
    assert parse_args(["synthetic", "--out", "o"]).encoding == "png"
    assert parse_args(["synthetic", "--out", "o", "--encoding", "raw"]).encoding == "raw"
    with pytest.raises(SystemExit):
        parse_args(["synthetic", "--out", "o", "--encoding", "jpeg"])
    with pytest.raises(PrepareError, match="--encoding must be png or raw, not 'jpeg'"):
        prepare("synthetic", None, "unused", encoding="jpeg", progress=False)
