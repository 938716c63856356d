"""A sweep directory's manifest, <sweep>/sweep.json: its members, in array-index order, each with its name, run
directory, overrides and the arguments `slurm/train.sh` takes (the base config, then key=value overrides,
output.dir last), plus the SLURM array jobs submitted for it.

gandist-sweep writes it (before any member runs); gandist-compare reads it to list a sweep's members, those not
started yet included; an array task of the sweep (`slurm/train.sh --sweep MANIFEST`) reads its member's
arguments with nothing but Python's json module, so a batch host without gandist (a container job) can too.
"""
from __future__ import annotations

import json
from pathlib import Path

from gandist.cli import UsageError
from gandist.utils.files import write_json_atomic

MANIFEST = "sweep.json"


def path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / MANIFEST


def is_sweep(directory: str | Path) -> bool:
    return path(directory).is_file()


def read(sweep_dir: str | Path) -> dict:
    f = path(sweep_dir)
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{f}: not a readable sweep manifest ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise UsageError(f"{f}: not a sweep manifest (no list of members)")
    return data


def write(sweep_dir: str | Path, data: dict):
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path(sweep_dir), data)
