"""The judge (gandist/metrics/judge.py, judge_train.py): gandist-judge learns from labelled shards the test
makes and beats chance clearly on held-out ones; its file carries what evaluation checks; a missing, damaged
or unfitting judge is refused before any work."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gandist.data.prepare import prepare
from gandist.metrics import judge
from gandist.metrics.evaluator import Evaluator
from gandist.metrics.judge_train import main
from gandist.metrics.registry import JUDGE_FEATURES, JUDGE_LOGITS, MetricError
from tests.data_fixtures import write_idx
from tests.metrics_fixtures import U8, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN, TEST = 600, 200


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28 px images of 10 classes a classifier can learn: class c is a bright 6 x 6 square at its own place,
    on noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 90, (n, 28, 28))
    for i, c in enumerate(labels):
        r, q = 3 + 12 * (c // 5), 1 + 5 * (c % 5)
        images[i, r:r + 6, q:q + 6] = rng.integers(170, 256, (6, 6))
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, str]:
    """{split: shard pattern} of MNIST-format shards written by gandist-prepare from the images above."""
    root = tmp_path_factory.mktemp("judge_data")
    for prefix, n, seed in (("train", TRAIN, 0), ("t10k", TEST, 1)):
        x, y = digits(n, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte", x, gz=False)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y, gz=False)
    out = root / "shards"
    index = prepare("mnist", root, out, splits=["train", "test"], workers=0, progress=False, log=lambda *a: None)
    return {s: str(out / index["splits"][s]["pattern"]) for s in ("train", "test")}


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("judge") / "judge.safetensors"
    code = main(["--train", shards["train"], "--test", shards["test"], "--out", str(path), "--epochs", "6",
                 "--batch-size", "32", "--width", "8", "--features", "32", "--workers", "0", "--no-progress"])
    assert code == 0
    return str(path)


def test_the_judge_learns_and_its_file_says_how_well(trained, shards):
    meta = judge.read_meta(trained)
    assert meta["test_accuracy"] > 0.8  # chance is 0.1
    assert meta["test_images"] == TEST and meta["train_images"] == TRAIN and meta["floor_n"] == TEST
    assert meta["floor_fd"] > 0 and (meta["resolution"], meta["channels"]) == (28, 1)
    assert meta["classes"] == [str(c) for c in range(10)]
    assert set(meta["floor_prdc"]) == {"precision", "recall", "density", "coverage"}
    assert min(meta["floor_prdc"].values()) > 0.5  # real images against real images of the same data
    # the weights saved are the ones measured: torch-fidelity's extractor of the file agrees on the test set
    x, y = digits(TEST, 1)
    net = judge.judge_extractor([JUDGE_LOGITS, JUDGE_FEATURES], trained, "cpu")
    logits, feats = net(torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1))
    assert feats.shape == (TEST, 32)
    assert float((logits.argmax(1) == torch.from_numpy(y).long()).float().mean()) == pytest.approx(
        meta["test_accuracy"])


def test_gandist_judge_refuses_bad_input_before_writing(shards, tmp_path, capsys):
    out = tmp_path / "j.safetensors"
    assert main(["--train", str(tmp_path / "none-{000000..000001}.tar"), "--test", shards["test"],
                 "--out", str(out)]) == 2
    assert "--train: " in capsys.readouterr().err
    assert main(["--train", shards["train"], "--test", shards["test"], "--out", str(out), "--labels", "attr"]) == 2
    assert "no attributes" in capsys.readouterr().err
    assert main(["--train", shards["train"], "--test", shards["test"], "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not out.exists()


def cgan_cfg(shards, judge_file, *more):
    return tiny_cfg("variant=cgan", "data.source=shards", f"data.urls={shards['train']}", "data.resolution=28",
                    "data.channels=1", f"eval.real_urls={shards['test']}", "eval.metrics=[judge_fd,judge_acc,prdc]",
                    f"eval.judge={judge_file}", *more)


def test_the_evaluator_checks_the_judge_before_any_work(trained, shards, tmp_path):
    ev = Evaluator(cgan_cfg(shards, trained), "cpu")
    assert ev.opts.judge_floor == judge.read_meta(trained)["floor_fd"] and ev.real_count == 0  # nothing read yet
    with pytest.raises(MetricError, match="eval.judge: .*does not exist"):
        Evaluator(cgan_cfg(shards, tmp_path / "missing.safetensors"), "cpu")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a judge at all")
    with pytest.raises(MetricError, match="eval.judge: .*not a readable safetensors file"):
        Evaluator(cgan_cfg(shards, bad), "cpu")
    with pytest.raises(MetricError, match="judges resolution 28, but the run's data.resolution is 32"):
        Evaluator(tiny_cfg("eval.metrics=[judge_fd]", f"eval.judge={trained}"), "cpu")
    rgb = SimpleNamespace(data=SimpleNamespace(resolution=28, channels=3, attributes=[], num_classes=10, label_key="cls"))
    with pytest.raises(MetricError, match="judges channels 1, but the run's data.channels is 3"):
        judge.check_fits(judge.read_meta(trained), rgb, trained)
    with pytest.raises(MetricError, match="judges 10 classes, but the run has data.num_classes=5"):
        Evaluator(cgan_cfg(shards, trained, "data.num_classes=5"), "cpu")
    with pytest.raises(MetricError, match="judges 10 classes, but the run has data.num_classes=5"):
        Evaluator(cgan_cfg(shards, trained, "data.num_classes=5", "eval.metrics=[judge_fd]"), "cpu")  # FD too
    with pytest.raises(MetricError, match="judge_acc: .*conditional run"):
        Evaluator(cgan_cfg(shards, trained, "variant=dcgan"), "cpu")
    with pytest.raises(MetricError, match=r"eval.real_urls: .*nope-000000.tar does not exist \(nor 1 more"):
        Evaluator(cgan_cfg(shards, trained, f"eval.real_urls={tmp_path}/nope-{{000000..000001}}.tar"), "cpu")
    with pytest.raises(MetricError, match="eval.judge: judge_fd, prdc read the judge"):
        Evaluator(tiny_cfg("eval.metrics=[judge_fd,prdc]"), "cpu")


def test_a_damaged_judge_file_is_refused_when_loaded(trained, tmp_path):
    meta = judge.read_meta(trained)
    meta.pop("format")
    small = judge.JudgeNet(1, 10, 4, 8)  # weights of another shape than its metadata says
    path = tmp_path / "damaged.safetensors"
    judge.save(small, meta, path)
    with pytest.raises(MetricError, match="its weights do not load"):
        judge.load(path)


def test_an_attribute_judge_serves_the_runs_attributes_in_the_runs_order(trained):
    meta = {**judge.read_meta(trained), "labels": "attr", "classes": [], "attributes": ["Male", "Smiling", "Young"]}
    run = SimpleNamespace(data=SimpleNamespace(resolution=28, channels=1, attributes=["Young", "Male"], num_classes=0,
                                               label_key="attr"))
    assert judge.check_fits(meta, run, "j", accuracy=True) == (2, 0)
    assert judge.check_fits(meta, run, "j") is None  # the distance alone needs no labels
    run.data.attributes = ["Young", "Bald"]
    assert judge.check_fits(meta, run, "j") is None
    with pytest.raises(MetricError, match="not trained on the attribute"):
        judge.check_fits(meta, run, "j", accuracy=True)
    with pytest.raises(MetricError, match="judges classes, but the run's data has attributes"):
        judge.check_fits(judge.read_meta(trained), run, "j")


def test_torch_fidelitys_own_calculate_metrics_takes_the_judge_and_gives_our_numbers(trained):
    import torch_fidelity

    from gandist.metrics.inception import extract
    from gandist.metrics.registry import Options, compute

    a, b = (torch.from_numpy(digits(60, seed)[0])[:, None].expand(-1, 3, -1, -1).contiguous() for seed in (2, 3))
    judge.register()
    theirs = torch_fidelity.calculate_metrics(
        input1=U8(a), input2=U8(b), fid=True, prc=True, prc_neighborhood=5, feature_extractor=judge.JUDGE,
        feature_extractor_weights_path=trained, cuda=False, cache=False, verbose=False, batch_size=25,
        save_cpu_ram=True)  # no DataLoader workers
    net = judge.judge_extractor([JUDGE_FEATURES], trained, "cpu")
    ours = compute(["judge_fd", "prdc"], extract(net, [a]), extract(net, [b]), Options())
    assert ours["judge_fd"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_FID], rel=1e-4)
    assert ours["precision"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_PRECISION])
    assert ours["recall"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_RECALL])
