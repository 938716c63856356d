"""Compare two runs' final weights: `python -m gandist.diff_weights RUN_A RUN_B`.

Prints the largest absolute difference per network and overall, e.g. to check that a 2-process run
matches a 1-process run of the same config (world-size invariance)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import load_file

from gandist.trained import final_dir


def weight_diffs(a: Path, b: Path) -> dict[str, float]:
    out = {}
    for name in ("generator", "discriminator"):
        fa, fb = final_dir(a) / f"{name}.safetensors", final_dir(b) / f"{name}.safetensors"
        for f in (fa, fb):
            if not f.is_file():
                raise FileNotFoundError(f"{f} does not exist: is {f.parent.parent} a finished gandist run?")
        wa, wb = load_file(str(fa)), load_file(str(fb))
        if wa.keys() != wb.keys():
            raise ValueError(f"{fa} and {fb} hold different tensors: {sorted(wa.keys() ^ wb.keys())[:5]}")
        out[name] = max(((wa[k].double() - wb[k].double()).abs().max().item() for k in wa), default=0.0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gandist.diff_weights", description=__doc__)
    p.add_argument("run_a")
    p.add_argument("run_b")
    args = p.parse_args(argv)
    try:
        d = weight_diffs(Path(args.run_a), Path(args.run_b))
    except (OSError, ValueError) as e:
        print(f"gandist.diff_weights: {e}", file=sys.stderr)
        return 2
    for k, v in d.items():
        print(f"{k:14s} max |a-b| = {v:.3e}")
    print(f"{'overall':14s} max |a-b| = {max(d.values()):.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
