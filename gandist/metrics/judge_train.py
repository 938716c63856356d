"""gandist-judge: train the judge (gandist/metrics/judge.py) on labelled shards, measure it on held-out ones.

    gandist-judge --train 'data/shards/mnist-sample/train-{000000..000003}.tar' \\
                  --test 'data/shards/mnist-sample/test-{000000..000000}.tar' --out judges/mnist.safetensors
    gandist-judge --train ... --test ... --labels attr --attributes Smiling,Male,Eyeglasses \\
                  --out judges/celeba.safetensors

It records the judge's held-out accuracy and the real-vs-real floor (the Frechet distance in its features
between held-out and training images), which a generator is read against: judge_fd / floor near 1 means as
close as other real images.  Train on the GAN's images, measure on a split neither saw.  The images are held
in memory (--max-train caps them).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich import get_console
from rich.table import Table

from gandist import __version__
from gandist.cli import UsageError, run_command
from gandist.data.errors import DataError
from gandist.data.shards.eval import eval_batches
from gandist.data.shards.index import find_index
from gandist.metrics import judge
from gandist.metrics.registry import JUDGE_FEATURES, MetricError, Options, compute, frechet
from gandist.metrics.sets import shard_urls
from gandist.trained import pick_device
from gandist.utils.console import progress_bar


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-judge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="shard pattern(s) of the labelled training images (';' separates)")
    p.add_argument("--test", required=True, help="shard pattern(s) of held-out images: accuracy and the floor")
    p.add_argument("--out", required=True, help="the judge file to write (safetensors; replaced atomically)")
    p.add_argument("--labels", choices=("cls", "attr"), default="cls",
                   help="cls: one class per image (MNIST, CIFAR-10); attr: binary attributes (CelebA), multi-label")
    p.add_argument("--attributes", default="", help="with --labels attr: comma list (default: all the index names)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv layer (doubling twice)")
    p.add_argument("--features", type=int, default=128, help="size of the penultimate (feature) layer")
    p.add_argument("--max-train", type=int, default=0, help="read at most this many training images; 0 = all")
    p.add_argument("--workers", type=int, default=2, help="shard-reading worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of torch; 0 = torch's default (on a CPU others share, 1 is often faster)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def check_args(a):
    for name in ("epochs", "batch_size", "width", "features"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(a, name)}")
    if a.lr <= 0 or a.max_train < 0 or a.workers < 0 or a.threads < 0:
        raise UsageError("--lr must be > 0, --max-train, --workers and --threads >= 0")
    if a.attributes and a.labels != "attr":
        raise UsageError("--attributes: only with --labels attr")
    out = Path(a.out)
    if out.is_dir():
        raise UsageError(f"--out: {out} is a directory; name the judge file to write")


def shard_index(option: str, pattern: str) -> tuple[list[str], dict]:
    """The urls of a shard pattern and their index.json; an error naming the option where they are missing."""
    urls = shard_urls(option, pattern)
    meta, _ = find_index(urls)
    if not meta:
        raise UsageError(f"{option}: no index.json beside {urls[0]} (shards written by gandist-prepare have one)")
    return urls, meta


def label_names(a, meta: dict) -> tuple[list[str], list[str]]:
    """(class names, attribute names) the judge learns, from the training shards' index."""
    if a.labels == "cls":
        classes = meta.get("classes") or []
        if meta.get("label_key") not in (None, "cls") or not classes:
            raise UsageError(f"--train: these shards have no class labels (their index says label_key="
                             f"{meta.get('label_key')}); use --labels attr for attributes")
        return [str(c) for c in classes], []
    have = meta.get("attributes") or []
    if not have:
        raise UsageError("--train: these shards have no attributes (their index lists none); use --labels cls")
    want = [s.strip() for s in a.attributes.split(",") if s.strip()] or list(have)
    bad = [s for s in want if s not in have]
    if bad:
        raise UsageError(f"--attributes: {', '.join(bad)} not among the shards' attributes ({', '.join(have)})")
    return [], want


def quiet(bar, show: bool):
    """The bar, drawing nothing at all unless `show`."""
    bar.disable = not show
    return bar


def read_all(option: str, urls, a, attributes, limit: int, show: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) of the shards, in shard order, at most `limit` (0 = all)."""
    kw = dict(label_key=a.labels, attributes=attributes)
    batches = eval_batches(urls, 0, 1, 512, a.workers, **kw)
    images, labels, n = [], [], 0
    with quiet(progress_bar(transient=True), show) as bar:
        task = bar.add_task(f"reading {option}", total=None)
        for x, y in batches:
            if y is None or (a.labels == "cls" and bool((y < 0).any())):
                raise UsageError(f"{option}: images without {'class labels' if a.labels == 'cls' else 'attributes'}")
            images.append(x)
            labels.append(y)
            n += len(x)
            bar.advance(task, len(x))
            if limit and n >= limit:
                break
    if not images:
        raise UsageError(f"{option}: no readable images in {urls[0]}" + (" ..." if len(urls) > 1 else ""))
    x, y = torch.cat(images), torch.cat(labels)
    return (x[:limit], y[:limit]) if limit else (x, y)


def loss_of(logits, y, labels: str):
    if labels == "cls":
        return F.cross_entropy(logits, y.long())
    return F.binary_cross_entropy_with_logits(logits, (y > 0).float())


def hits(logits, y, labels: str) -> torch.Tensor:
    """Right answers per image: 1/0 for a class, the share of attributes right for attributes."""
    if labels == "cls":
        return (logits.argmax(1) == y.long()).float()
    return ((logits > 0) == (y > 0)).float().mean(1)


@torch.no_grad()
def embed(net, x: torch.Tensor, channels: int, device, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of uint8 images, in eval mode."""
    net.eval()
    fs, ls = [], []
    for i in range(0, len(x), batch):
        f, logits = net(judge.to_input(x[i:i + batch].to(device), channels))
        fs.append(f.float().cpu())
        ls.append(logits.float().cpu())
    return torch.cat(fs), torch.cat(ls)


def train(net, x, y, a, device, show: bool):
    torch.manual_seed(a.seed)
    steps_per_epoch = -(-len(x) // a.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.epochs * steps_per_epoch)
    channels = x.shape[1]
    with quiet(progress_bar(info=True, transient=True), show) as bar:
        task = bar.add_task("training the judge", total=a.epochs * steps_per_epoch, info="")
        for epoch in range(a.epochs):
            net.train()
            order = torch.randperm(len(x))
            for i in range(0, len(x), a.batch_size):
                idx = order[i:i + a.batch_size]
                _, logits = net(judge.to_input(x[idx].to(device), channels))
                loss = loss_of(logits, y[idx].to(device), a.labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{a.epochs}  loss {loss.item():.3f}")


def run(a) -> int:
    check_args(a)
    show = not a.no_progress
    train_urls, meta = shard_index("--train", a.train)
    test_urls, test_meta = shard_index("--test", a.test)
    for key in ("resolution", "channels"):
        if meta.get(key) != test_meta.get(key):
            raise UsageError(f"--test: images of {key} {test_meta.get(key)}, but --train's are {meta.get(key)}")
    classes, attributes = label_names(a, meta)
    device = pick_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)

    x, y = read_all("--train", train_urls, a, attributes, a.max_train, show)
    xt, yt = read_all("--test", test_urls, a, attributes, 0, show)
    if a.labels == "cls" and int(max(y.max(), yt.max())) >= len(classes):
        raise UsageError(f"--train/--test: a class label >= the {len(classes)} classes of the index")
    info = {"labels": a.labels, "classes": classes, "attributes": attributes, "resolution": int(x.shape[-1]),
            "channels": int(x.shape[1]), "width": a.width, "features": a.features}
    torch.manual_seed(a.seed)
    net = judge.build(info).to(device)
    t0 = time.perf_counter()
    train(net, x, y, a, device, show)
    seconds = time.perf_counter() - t0

    ft, logits = embed(net, xt, info["channels"], device)
    accuracy = float(hits(logits, yt, a.labels).mean())
    train_acc = float(hits(embed(net, x[:len(xt)], info["channels"], device)[1], y[:len(xt)], a.labels).mean())
    # the floor: held-out reals against as many training reals (a seeded draw), in the judge's features
    n = min(len(xt), len(x))
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(a.seed))[:n]
    fr = embed(net, x[pick], info["channels"], device)[0]
    floor = frechet(fr, ft[:n])
    # what precision, recall, density and coverage are for real images (training reals as the "generated" set)
    real_prdc = compute(["prdc"], {JUDGE_FEATURES: fr}, {JUDGE_FEATURES: ft[:n]}) if n > Options().nearest_k else {}
    record = {**info, "test_accuracy": accuracy, "train_accuracy": train_acc, "floor_fd": floor, "floor_n": n,
              "floor_prdc": real_prdc,
              "train": a.train, "test": a.test, "train_images": len(x), "test_images": len(xt),
              "epochs": a.epochs, "seed": a.seed, "train_seconds": round(seconds, 1), "gandist": __version__}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    judge.save(net.cpu(), record, out)

    t = Table(caption=f"wrote {out}")
    t.add_column("judge")
    t.add_column("value", justify="right")
    for k, v in (("trained on", f"{len(x)} images, {a.epochs} epochs, {seconds:.1f} s on {device}"),
                 ("accuracy, held-out images", f"{accuracy:.4f} ({len(xt)} images)"),
                 ("accuracy, training images", f"{train_acc:.4f}"),
                 ("floor: judge FD real vs real", f"{floor:.4g} ({n} held-out vs {n} training images)"),
                 *((f"real vs real {k}", f"{v:.4f}") for k, v in real_prdc.items())):
        t.add_row(k, v)
    get_console().print(t)
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("gandist-judge", lambda: run(args), (UsageError, MetricError, DataError))


if __name__ == "__main__":
    sys.exit(main())
