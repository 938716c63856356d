"""A sweep as one SLURM job array, each task a member run through slurm/train.sh, the script of a single run,
so that every member keeps the time-limit warning, requeue and exact resume, and may span several nodes.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from gandist.cli import UsageError
from gandist.sweep.spec import Spec

SCRIPT = Path("slurm") / "train.sh"
TASK = re.compile(r"^(\d+)_(\d+)\s+(\S+)$")  # squeue -r: one line per array task, <job>_<index> <state>


def sbatch() -> str:
    """sbatch's path, checked before the sweep writes anything."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise UsageError("--slurm: sbatch is not on PATH (SLURM's client commands are needed to submit)")
    if not SCRIPT.is_file():
        raise UsageError(f"--slurm submits {SCRIPT}, which is not in {Path.cwd()}: run gandist-sweep from the "
                         f"repository, as you would sbatch {SCRIPT} (the job runs there, with its .venv)")
    return exe


def submit(spec: Spec, manifest: Path, indices: list[int], parallel: int | None) -> int:
    """Submit the members `indices` as one array job; returns its job id."""
    array = ",".join(str(i) for i in indices) + (f"%{parallel}" if parallel else "")
    cmd = [sbatch(), "--parsable", f"--array={array}", f"--job-name={spec.out.name}",
           f"--output={spec.out / 'logs' / 'slurm-%A_%a.out'}", *spec.sbatch, str(SCRIPT), "--sweep", str(manifest)]
    (spec.out / "logs").mkdir(parents=True, exist_ok=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise UsageError(f"sbatch refused the sweep's array ({' '.join(cmd[1:])}): "
                         f"{(p.stderr or p.stdout).strip()}")
    return int(p.stdout.strip().split(";")[0])


def queued(jobs: list[int]) -> dict[int, str]:
    """Array index -> 'job J_i STATE' of the tasks SLURM still holds, which a re-run must not submit again."""
    squeue = shutil.which("squeue")
    if not jobs or squeue is None:
        return {}
    p = subprocess.run([squeue, "-h", "-r", "-j", ",".join(str(j) for j in jobs), "-o", "%i %T"],
                       capture_output=True, text=True)
    out = {}
    for line in p.stdout.splitlines() if p.returncode == 0 else []:  # unknown (long finished) jobs: none held
        m = TASK.match(line.strip())
        if m:
            out[int(m.group(2))] = f"job {m.group(1)}_{m.group(2)} {m.group(3).lower()}"
    return out
