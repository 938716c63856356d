"""gandist-sample: images from a trained run's generator, as a grid PNG (and optionally one PNG each).

    gandist-sample runs/quickstart                          # 64 images -> RUN_DIR/samples/sample_seed0.png
    gandist-sample runs/quickstart --n 100 --seed 3 --out grid.png --out-dir images/
    gandist-sample runs/cgan_cifar10 --label 3              # class-conditional: all of class 3
    gandist-sample runs/cgan_celeba --attributes Male,Smiling   # those attributes 1, the others 0
    gandist-sample runs/quickstart --interpolate 10         # 8 rows of 10 -> samples/interpolate_seed0.png
    gandist-sample models/shapes/ --n 4 --out four.png      # a copied-out final/ directory on its own

RUN_DIR is a run directory or its final/ directory; G is rebuilt from final/generator.json, so no training
config is needed.  Without --label a class-conditional model gets one class per row, as in the training
grids.  --interpolate K: one row per pair of random endpoints, K images along the great circle, its
condition fixed.  The EMA generator is used when the run kept one (--checkpoint picks); the same seed gives
the same images.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from PIL import Image

from gandist.cli import ConfigError, UsageError, run_command
from gandist.distributed import generator
from gandist.metrics.inception import quantise
from gandist.metrics.sets import generated_batches
from gandist.trained import add_run_arguments, build_loaded, generator_card, pick_device, read_generator
from gandist.training import run_dir as layout
from gandist.training.reporting import save_grid

INTERPOLATION_ROWS = 8  # pairs of endpoints of an unconditional (or attribute) strip without --n


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--n", type=int, help="number of images (default 64), or of rows with --interpolate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="grid PNG (default RUN_DIR/samples/sample_seed<SEED>.png, or "
                                 "interpolate_seed<SEED>.png with --interpolate)")
    p.add_argument("--out-dir", help="also write each image as its own PNG here")
    p.add_argument("--nrow", type=int, help="images per grid row (default: sqrt(n), or num_classes for "
                                            "class-conditional models without --label)")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--label", type=int, help="class id for every image (class-conditional models)")
    cond.add_argument("--attributes", help="comma list of attributes set to 1, the others 0 "
                                           "(attribute-conditional models); '' = all 0")
    p.add_argument("--interpolate", type=int, metavar="K", help="a latent interpolation strip: each row K "
                   "images from one fixed z to another (slerp); rows: --n, or one per class")
    return p.parse_intermixed_args(argv)  # RUN_DIR key=value --opt x key=value ...


def conditions(model, n: int, seed: int, label: int | None = None, attributes: str | None = None,
               nrow: int | None = None) -> tuple[torch.Tensor | None, int, list[int] | None]:
    """(condition vectors or None, images per grid row, class of each image or None) for the card `model`."""
    card = model if isinstance(model, dict) else generator_card(model)
    ld, names = card["network"]["label_dim"], card["conditioning"]["attributes"]
    square = nrow or max(1, int(math.sqrt(n)))
    if not ld:
        if label is not None or attributes is not None:
            raise UsageError(f"--{'label' if label is not None else 'attributes'}: the model of this run is "
                             f"unconditional (model.conditioning=none)")
        return None, square, None
    if card["conditioning"]["kind"] == "attributes":
        if label is not None:
            raise UsageError(f"--label: this model is conditioned on attributes ({', '.join(names)}), "
                             f"not classes; use --attributes")
        if attributes is None:
            y = (torch.rand(n, ld, generator=generator(seed, 1, "sample")) > 0.5).float()
            return y, square, None
        chosen = [a.strip() for a in attributes.split(",") if a.strip()]
        unknown = [a for a in chosen if a not in names]
        if unknown:
            raise UsageError(f"--attributes: {', '.join(unknown)} not among the model's attributes "
                             f"({', '.join(names)})")
        y = torch.tensor([float(a in chosen) for a in names]).repeat(n, 1)
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


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """From a (t=0) to b (t=1) along the great circle.  Not a straight line: Gaussian latents lie near a
    sphere, and the chord dips inside it (0.71 x the norm half-way), into noise G never saw in training."""
    cos = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))
    omega = torch.acos(cos.clamp(-1, 1))
    sin = torch.sin(omega)
    arc = torch.sin((1 - t) * omega) / sin * a + torch.sin(t * omega) / sin * b  # weights 1 and 0 at the ends: exact
    return torch.where(sin > 1e-6, arc, (1 - t) * a + t * b)


def interpolation(model, rows: int, steps: int, seed: int, label: int | None = None, attributes: str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, list[int] | None]:
    """(z, condition vectors or None, class of each image or None) of a strip: row r goes from one random z
    to another in `steps` images, its condition fixed along it."""
    card = model if isinstance(model, dict) else generator_card(model)
    ends = torch.randn(2, rows, 1, card["network"]["z_dim"], generator=generator(seed, 0, "interpolate"))
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    z = slerp(ends[0], ends[1], t).reshape(rows * steps, -1)
    y, _, classes = conditions(card, rows, seed, label, attributes, nrow=1)  # one condition per row
    if y is not None:
        y = y.repeat_interleave(steps, 0)
    return z, y, classes and [c for c in classes for _ in range(steps)]


@torch.no_grad()
def generate(G, z: torch.Tensor, y: torch.Tensor | None, chunk: int = 256) -> torch.Tensor:
    """G's images for all of z, float32 on the CPU."""
    return torch.cat([x.float().cpu() for x in generated_batches(G, z, y, chunk)])


def save_each(images: torch.Tensor, out_dir: Path, classes: list[int] | None):
    """One PNG per image, quantised as the grid is: 000000.png or 000000_class3.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    u8 = quantise(images).permute(0, 2, 3, 1).numpy()
    for i, arr in enumerate(u8):
        name = f"{i:06d}" + (f"_class{classes[i]}" if classes else "") + ".png"
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(out_dir / name)


def run(args) -> int:
    for opt, v, least in (("n", args.n, 1), ("nrow", args.nrow, 1), ("interpolate", args.interpolate, 2)):
        if v is not None and v < least:
            raise UsageError(f"--{opt}: must be at least {least}, got {v}")
    if args.interpolate and args.nrow is not None:
        raise UsageError("--nrow: an interpolation strip has --interpolate K images per row")
    card, run_dir, final = read_generator(args.run_dir, args.overrides)
    kind = "interpolate" if args.interpolate else "sample"
    out = Path(args.out) if args.out else run_dir / layout.SAMPLES / f"{kind}_seed{args.seed}.png"
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out: {out} must end in .png")
    if args.interpolate:
        per_class = card["conditioning"]["kind"] == "classes" and args.label is None
        rows = args.n or (card["network"]["label_dim"] if per_class else INTERPOLATION_ROWS)
        z, y, classes = interpolation(card, rows, args.interpolate, args.seed, args.label, args.attributes)
        nrow, what = args.interpolate, f"{rows} rows of {args.interpolate} interpolation steps"
    else:
        n = args.n or 64
        y, nrow, classes = conditions(card, n, args.seed, args.label, args.attributes, args.nrow)
        z = torch.randn(n, card["network"]["z_dim"], generator=generator(args.seed, 0, "sample"))
        what = f"{n} images"
    G, gpath = build_loaded(card, final, args.checkpoint, pick_device(args.device))
    images = generate(G, z, y)
    save_grid(images, out, nrow)
    print(f"wrote {out} ({what} from {gpath.relative_to(run_dir)}, seed {args.seed})")
    if args.out_dir:
        save_each(images, Path(args.out_dir), classes)
        print(f"wrote {len(images)} images to {args.out_dir}")
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("gandist-sample", lambda: run(args), (UsageError, ConfigError))


if __name__ == "__main__":
    sys.exit(main())
