"""gandist-sweep: a family of runs from one spec, here or as one SLURM job array.

    gandist-sweep sweeps/gp.yaml --dry-run        # the members, how each stands, what a run would do
    gandist-sweep sweeps/gp.yaml                  # here, one after another (--parallel K: K at a time)
    gandist-sweep sweeps/gp.yaml --slurm --parallel 4    # one array job, at most 4 members at once

The spec's format is in the README (Sweeps); each member runs in <out>/<member>, listed in <out>/sweep.json.
Every member's config is checked before anything is written or submitted.  Re-running skips members that are
done, diverged (they would diverge again), running or queued, and resumes the others.  Exit status: 0 every
member done or diverged, 1 a member failed, 2 a bad spec, 75 SIGTERM, 130 Ctrl-C (re-run to resume).
"""
from __future__ import annotations

import argparse
import sys
import time

from gandist import config
from gandist.cli import UsageError, run_command
from gandist.compare import manifest, status
from gandist.compare.cli import compare
from gandist.compare.runs import flatten
from gandist.sweep import here, slurm, spec as spec_
from gandist.training import checkpoint


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC.yaml")
    p.add_argument("--dry-run", action="store_true", help="list the members and what would run; change nothing")
    p.add_argument("--parallel", type=int, metavar="K", help="members at once (here: default 1; on SLURM: the "
                                                             "array's %%K throttle, default none)")
    p.add_argument("--slurm", action="store_true", help="submit one SLURM job array (slurm/train.sh per member)")
    args = p.parse_args(argv)
    if args.parallel is not None and args.parallel < 1:
        p.error(f"--parallel: {args.parallel} is below 1")
    return args


def say(text: str):
    print(f"gandist-sweep: {text}", flush=True)


def manifest_data(spec, members, jobs: list[dict]) -> dict:
    return {"spec": str(spec.path.resolve()), "config": str(spec.config), "out": str(spec.out),
            "members": [{"index": m.index, "name": m.name, "overrides": m.overrides, "args": m.args(spec),
                         "steps": m.cfg.train.steps, "config": flatten(config.to_dict(m.cfg))} for m in members],
            "jobs": jobs}


def plan(spec, members, queued: dict[int, str]) -> list[tuple[str, str | None]]:
    """(status, why it is skipped, or None: it runs) of each member."""
    out = []
    for m in members:
        s = status.of(spec.out / m.name, m.cfg.train.steps)
        skip = (f"queued ({queued[m.index]})" if m.index in queued else
                s.state if s.state in (*status.FINISHED, "running") else None)
        out.append((s.state, skip))
    return out


def action(spec, m, skip: str | None) -> str:
    if skip:
        return f"skip: {skip}"
    newest = checkpoint.latest(spec.out / m.name)
    return f"resume from step {checkpoint.step_of(newest)}" if newest else "start"


def listing(spec, members, steps: list[tuple[str, str | None]], overrides: bool) -> str:
    """A line per member; with `overrides`, its own (not the shared `set`)."""
    shared = flatten(spec.set)
    rows = [(str(m.index), m.name, state, action(spec, m, skip))
            + ((" ".join(f"{k}={spec_.cli_value(v)}" for k, v in m.overrides.items() if k not in shared),)
               if overrides else ()) for m, (state, skip) in zip(members, steps)]
    heads = ("#", "member", "status", "action") + (("overrides",) if overrides else ())
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [heads, *rows])


def sweep(args) -> int:
    spec = spec_.read(args.spec)
    members = spec_.check(spec, spec_.expand(spec))  # every member's config, before anything is touched
    if args.slurm:
        slurm.sbatch()  # refuses here, before anything is written, when nothing can be submitted from here
    before = manifest.read(spec.out) if manifest.is_sweep(spec.out) else {}
    jobs = before.get("jobs", [])
    queued = slurm.queued([j["job"] for j in jobs])
    if queued and [m.args(spec) for m in members] != [m.get("args") for m in before["members"]]:
        # a queued array task finds its member by its index in sweep.json: the members must stay as they are
        raise UsageError(f"{args.spec}: the members differ from those in {manifest.path(spec.out)}, and "
                         f"{len(queued)} of its array tasks are still queued or running "
                         f"({', '.join(queued.values())}); wait for them or scancel them before changing the sweep")
    steps = plan(spec, members, queued)
    todo = [m for m, (_, skip) in zip(members, steps) if skip is None]
    print(f"sweep {spec.out}: {len(members)} member(s) of {spec.config}; {len(todo)} to run", flush=True)
    print(listing(spec, members, steps, args.dry_run), flush=True)
    if args.dry_run:
        return 0
    if not todo:
        say("nothing to do: every member is done, diverged, running or queued")
        return 0
    manifest.write(spec.out, manifest_data(spec, members, jobs))
    if args.slurm:
        job = slurm.submit(spec, manifest.path(spec.out), [m.index for m in todo], args.parallel)
        jobs.append({"job": job, "indices": [m.index for m in todo], "submitted": time.strftime("%FT%T%z")})
        manifest.write(spec.out, manifest_data(spec, members, jobs))
        say(f"submitted job array {job} ({len(todo)} member(s)); logs {spec.out / 'logs'}/slurm-{job}_<member>.out; "
            f"follow it with: gandist-compare {spec.out}")
        return 0
    codes, stopped = here.run(spec, todo, args.parallel or 1, say)
    compare([str(spec.out)])
    return here.exit_status(codes, stopped)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("gandist-sweep", lambda: sweep(args), (UsageError,))
