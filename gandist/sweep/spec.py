"""A sweep spec (YAML; the format is in the README, Sweeps) and the members it stands for.  Every member's
config is loaded and checked before anything is written or submitted, so that a bad value on one axis stops
the sweep with one line naming the member and the key, not half a sweep later.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gandist import config
from gandist.cli import ConfigError, UsageError
from gandist.compare.runs import flatten, short_names, value_text

KEYS = ("config", "set", "grid", "members", "out", "sbatch")
NAME = re.compile(r"^[A-Za-z0-9._+=,-]+$")  # what a member's directory name may hold
REFUSED_SBATCH = ("--array", "--output", "--error", "--parsable")  # the sweep sets these itself


@dataclass
class Spec:
    path: Path
    config: Path
    set: dict
    grid: dict[str, list]
    members: dict[str, dict]
    out: Path
    sbatch: list[str] = field(default_factory=list)


@dataclass
class Member:
    index: int  # its place in the manifest, and its SLURM array index
    name: str  # its run directory's name under the sweep's out
    overrides: dict  # dotted key -> value
    cfg: config.Config | None = None  # loaded and checked by `check`

    def args(self, spec: Spec) -> list[str]:
        """What slurm/train.sh takes: the base config, then key=value overrides, output.dir last."""
        return [str(spec.config), *(f"{k}={cli_value(v)}" for k, v in self.overrides.items()),
                f"output.dir={spec.out / self.name}"]


def cli_value(v) -> str:
    """v as the text of a key=value override, which config.load reads back (as YAML) to the same value."""
    text = yaml.safe_dump(v, default_flow_style=True, width=math.inf)
    return text.removesuffix("\n...\n").strip()  # a plain scalar is written as a document: '1.0e-05\n...\n'


def _mapping(value, what: str, where: Path) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise UsageError(f"{where}: {what} must be a mapping of dotted config keys to values, got {value!r}")
    return value


def read(path: str | Path) -> Spec:
    """The spec file, its shape checked (errors name the file and the key)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"sweep spec {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"sweep spec {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"sweep spec {p} must hold a mapping (config, set, grid, members, out, sbatch)")
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise UsageError(f"{p}: unknown key {unknown[0]!r}; a sweep spec has {', '.join(KEYS)}")
    for key in ("config", "out"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UsageError(f"{p}: {key} must name a {'config file' if key == 'config' else 'directory'}, "
                             f"got {data.get(key)!r}")
    if not Path(data["config"]).is_file():
        raise UsageError(f"{p}: config {data['config']} does not exist (paths are relative to {Path.cwd()})")
    grid = _mapping(data.get("grid"), "grid", p)
    for k, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"{p}: grid {k} must be a non-empty list of values, got {values!r}")
        if len({cli_value(v) for v in values}) < len(values):
            raise UsageError(f"{p}: grid {k} lists a value twice: {values!r}")
    members = _mapping(data.get("members"), "members", p)
    members = {str(name): _mapping(s, f"members {name}", p) for name, s in members.items()}
    if not grid and not members:
        raise UsageError(f"{p}: give a grid (axes of values) or members (named override sets), or both")
    sbatch = data.get("sbatch") or []
    if not isinstance(sbatch, list) or not all(isinstance(a, str) and a.startswith("-") for a in sbatch):
        raise UsageError(f"{p}: sbatch must be a list of sbatch options such as --nodes=2, got {sbatch!r}")
    refused = [a for a in sbatch if a.split("=")[0] in REFUSED_SBATCH]
    if refused:
        raise UsageError(f"{p}: sbatch {refused[0]}: the sweep sets {', '.join(REFUSED_SBATCH)} itself")
    return Spec(p, Path(data["config"]).resolve(), _mapping(data.get("set"), "set", p), grid, members,
                Path(data["out"]).resolve(), sbatch)


def expand(spec: Spec) -> list[Member]:
    """Every member: each named set (or none) times each grid point (or none), in the spec's order."""
    shared = flatten(spec.set)
    if "output.dir" in shared:
        raise UsageError(f"{spec.path}: set output.dir: each member's run directory is <out>/<member name>; "
                         f"set out instead")
    axes = list(spec.grid)
    names = short_names(axes)
    sets = list(spec.members.items()) or [(None, {})]
    points = list(itertools.product(*spec.grid.values())) if axes else [()]
    out = []
    for set_name, own in sets:
        own = flatten(own)
        for point in points:
            grid = dict(zip(axes, point))
            for key in (*own, *grid):
                where = [w for w, d in (("set", shared), (f"members {set_name}", own), ("grid", grid)) if key in d]
                if key == "output.dir" or len(where) > 1:
                    raise UsageError(f"{spec.path}: {key} is given by {' and '.join(where)}; "
                                     + ("each member's output.dir is <out>/<member name>" if key == "output.dir"
                                        else "give each key in one place"))
            parts = ([set_name] if set_name is not None else []) + [f"{names[k]}={value_text(v)}"
                                                                   for k, v in grid.items()]
            name = ",".join(parts)
            if not NAME.match(name):
                raise UsageError(f"{spec.path}: member {name!r} cannot name a directory (letters, digits and "
                                 f"._+=,- only): name it in members, or use other values")
            out.append(Member(len(out), name, {**shared, **own, **grid}))
    seen = {}
    for m in out:
        if m.name in seen:
            raise UsageError(f"{spec.path}: members {seen[m.name]} and {m.index} would share the directory "
                             f"{m.name}")
        seen[m.name] = m.index
    return out


def check(spec: Spec, members: list[Member]) -> list[Member]:
    """Every member's config loaded and checked (errors name the member and key)."""
    for m in members:
        try:
            m.cfg = config.load(spec.config, m.args(spec)[1:])
        except ConfigError as e:
            raise UsageError(f"{spec.path}: member {m.index} ({m.name}): {e}") from None
    return members
