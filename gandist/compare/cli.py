"""gandist-compare: runs side by side, from their own files -- one table and overlaid curves.

    gandist-compare runs/sweeps/gp                          # a sweep: every member, those not started too
    gandist-compare runs/a runs/b --format markdown         # runs, sweeps or folders of runs, mixed
    gandist-compare runs/sweeps/gp --sort best_kid --format csv > gp.csv

A row per run: the config keys that differ between the runs, status (done, running, preempted, diverged,
failed, pending), steps done of the total, images/s (median of the logged intervals), the last losses, and
the final and best FID/KID/IS with the step of the best; sorted best first by --sort (default: the best FID
when there is one).  losses.png, scores.png and table.csv go to --out (default: <DIR>/compare for one sweep or
folder of runs, else ./compare).  TensorBoard's HParams tab shows the same runs (`tensorboard --logdir DIR`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gandist.cli import UsageError, run_command
from gandist.compare import figures, runs as runs_, table
from gandist.compare.manifest import is_sweep
from gandist.training import run_dir as layout
from gandist.utils.files import write_text_atomic


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    p.add_argument("--format", choices=table.FORMATS, help="default: rich on a terminal, else plain")
    p.add_argument("--sort", metavar="KEY", help=f"one of {', '.join(table.sort_keys())}")
    p.add_argument("--out", type=Path, help="where the plots and table.csv go")
    p.add_argument("--no-plots", action="store_true", help="only print the table; write nothing")
    return p.parse_args(argv)


def default_out(dirs: list[str]) -> Path:
    if len(dirs) == 1 and (is_sweep(dirs[0]) or not layout.is_run(Path(dirs[0]))):
        return Path(dirs[0]) / "compare"
    return Path("compare")


def compare(dirs: list[str], fmt: str | None = None, sort_key: str | None = None, out: Path | None = None,
            plots: bool = True) -> list[runs_.Run]:
    """Print the table of the runs in `dirs`; unless plots is False, write the plots and table.csv to `out`."""
    runs = runs_.collect(dirs)
    sort_key = sort_key or table.default_sort(runs)
    runs = table.sort(runs, sort_key)
    text = table.render(runs, fmt or ("rich" if sys.stdout.isatty() else "plain"), sort_key)
    if text is not None:
        sys.stdout.write(text)
    if plots:
        out = out or default_out(dirs)
        out.mkdir(parents=True, exist_ok=True)
        written = figures.draw(runs, out, ", ".join(Path(d).resolve().name for d in dirs))
        write_text_atomic(out / "table.csv", table.render(runs, "csv", sort_key))
        sys.stdout.flush()
        print(f"wrote {', '.join(str(p) for p in [*written, out / 'table.csv'])}", file=sys.stderr)
    return runs


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        compare(args.dirs, args.format, args.sort, args.out, not args.no_plots)
        return 0

    return run_command("gandist-compare", body, (UsageError,))
