"""gandist-sample: images from a trained run's generator, as a grid PNG (and optionally one PNG each).

    gandist-sample runs/quickstart                          # 64 images -> RUN_DIR/samples/sample_seed0.png
    gandist-sample runs/quickstart --n 100 --seed 3 --out grid.png --out-dir images/
    gandist-sample runs/cgan_cifar10 --label 3              # class-conditional: all of class 3
    gandist-sample runs/cgan_celeba --attributes Male,Smiling   # those attributes 1, the others 0

Class-conditional models without --label get one class per row (row r: class r mod num_classes), like
the training sample grids; attribute-conditional ones without --attributes get random 0/1 attributes.
The generator is final/generator_ema.safetensors when the run kept an EMA, else final/generator.safetensors
(--checkpoint picks one).  The same seed gives the same images.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from PIL import Image

from gandist.cli import UsageError, run_command
from gandist.config import ConfigError, label_dim
from gandist.distributed import generator
from gandist.metrics.inception import quantise
from gandist.metrics.sets import generated_batches
from gandist.reporting import save_grid
from gandist.trained import add_run_arguments, generator_path, load_config, load_generator, pick_device


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--n", type=int, default=64, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="grid PNG (default RUN_DIR/samples/sample_seed<SEED>.png)")
    p.add_argument("--out-dir", help="also write each image as its own PNG here")
    p.add_argument("--nrow", type=int, help="images per grid row (default: sqrt(n), or num_classes for "
                                            "class-conditional models without --label)")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--label", type=int, help="class id for every image (class-conditional models)")
    cond.add_argument("--attributes", help="comma list of attributes set to 1, the others 0 "
                                           "(attribute-conditional models); '' = all 0")
    return p.parse_intermixed_args(argv)  # RUN_DIR key=value --opt x key=value ...


def conditions(cfg, n: int, seed: int, label: int | None = None, attributes: str | None = None, nrow: int | None = None
               ) -> tuple[torch.Tensor | None, int, list[int] | None]:
    """(G's condition vectors or None, images per grid row, class id of each image or None)."""
    ld = label_dim(cfg)
    square = nrow or max(1, int(math.sqrt(n)))
    if not ld:
        if label is not None or attributes is not None:
            raise UsageError(f"--{'label' if label is not None else 'attributes'}: the model of this run is "
                           f"unconditional (model.conditioning=none)")
        return None, square, None
    if cfg.data.attributes:
        if label is not None:
            raise UsageError(f"--label: this model is conditioned on attributes ({', '.join(cfg.data.attributes)}), "
                           f"not classes; use --attributes")
        if attributes is None:
            y = (torch.rand(n, ld, generator=generator(seed, 1, "sample")) > 0.5).float()
            return y, square, None
        chosen = [a.strip() for a in attributes.split(",") if a.strip()]
        unknown = [a for a in chosen if a not in cfg.data.attributes]
        if unknown:
            raise UsageError(f"--attributes: {', '.join(unknown)} not among the model's attributes "
                           f"({', '.join(cfg.data.attributes)})")
        y = torch.tensor([float(a in chosen) for a in cfg.data.attributes]).repeat(n, 1)
        return y, square, None
    if attributes is not None:
        raise UsageError(f"--attributes: this model is conditioned on {ld} classes, not attributes; use --label")
    if label is not None:
        if not 0 <= label < ld:
            raise UsageError(f"--label: {label} is not a class of this model (0..{ld - 1})")
        classes = [label] * n
        per_row = square
    else:
        per_row = nrow or ld
        classes = [(i // per_row) % ld for i in range(n)]
    y = torch.nn.functional.one_hot(torch.tensor(classes), ld).float()
    return y, per_row, classes


@torch.no_grad()
def generate(G, z: torch.Tensor, y: torch.Tensor | None, chunk: int = 256) -> torch.Tensor:
    """G's images for all of z, float32 on the CPU (chunk at a time on G's device)."""
    return torch.cat([x.float().cpu() for x in generated_batches(G, z, y, chunk)])


def save_each(images: torch.Tensor, out_dir: Path, classes: list[int] | None):
    """One PNG per image (grey or RGB), quantised as the grid is: 000000.png or 000000_class3.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    u8 = quantise(images).permute(0, 2, 3, 1).numpy()
    for i, arr in enumerate(u8):
        name = f"{i:06d}" + (f"_class{classes[i]}" if classes else "") + ".png"
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(out_dir / name)


def run(args) -> int:
    run_dir = Path(args.run_dir)
    if args.n < 1:
        raise UsageError(f"--n: must be at least 1, got {args.n}")
    if args.nrow is not None and args.nrow < 1:
        raise UsageError(f"--nrow: must be at least 1, got {args.nrow}")
    out = Path(args.out) if args.out else run_dir / "samples" / f"sample_seed{args.seed}.png"
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out: {out} must end in .png")
    cfg = load_config(run_dir, args.overrides)
    y, nrow, classes = conditions(cfg, args.n, args.seed, args.label, args.attributes, args.nrow)
    gpath = generator_path(run_dir, args.checkpoint)
    G = load_generator(cfg, gpath, pick_device(args.device))
    z = torch.randn(args.n, cfg.model.z_dim, generator=generator(args.seed, 0, "sample"))
    images = generate(G, z, y)
    save_grid(images, out, nrow)
    print(f"wrote {out} ({args.n} images from {gpath.relative_to(run_dir)}, seed {args.seed})")
    if args.out_dir:
        save_each(images, Path(args.out_dir), classes)
        print(f"wrote {args.n} images to {args.out_dir}")
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("gandist-sample", lambda: run(args), (UsageError, ConfigError))


if __name__ == "__main__":
    sys.exit(main())
