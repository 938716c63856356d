#!/bin/bash
# Make WebDataset shards as a SLURM job (one task on one node; gandist-prepare's writer processes
# use the CPUs the job gets):
#
#   sbatch slurm/prepare.sh SOURCE --src DIR --out DIR [--skip-bad] [gandist-prepare options ...]
#   sbatch slurm/prepare.sh celeba --src /shared/data/celeba --out /shared/shards/celeba64 --resolution 64
#   sbatch slurm/prepare.sh synthetic --out /shared/shards/synthetic --size 20000
#
# Every argument goes to `python -m gandist.data.prepare` unchanged; --workers defaults to the CPUs
# allocated to the job.  Submit from the repository (GANDIST_HOME=DIR says otherwise; sbatch runs a copy
# of this script, which finds launch/lib.sh there); the virtualenv is ./.venv when it exists
# (GANDIST_VENV=DIR), else whatever python3 is on PATH.  The job's exit status is gandist-prepare's.
#
#SBATCH --job-name=gandist-prepare
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%x-%j.out
##SBATCH --partition=cpu

set -uo pipefail

say() { printf '%s gandist-prepare job %s: %s\n' "$(date '+%F %T')" "${SLURM_JOB_ID:-?}" "$*"; }
die() { say "error: $*" >&2; exit 2; }

GANDIST_HOME=${GANDIST_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
# shellcheck source-path=SCRIPTDIR/.. source=launch/lib.sh
. "$GANDIST_HOME/launch/lib.sh" || die "no launch/lib.sh in GANDIST_HOME=$GANDIST_HOME: submit from the repository or set GANDIST_HOME"

[ -n "${SLURM_JOB_ID:-}" ] || die "slurm/prepare.sh is a SLURM batch script: sbatch slurm/prepare.sh SOURCE --src DIR --out DIR [...]"
[ $# -ge 1 ] || die "no arguments: sbatch slurm/prepare.sh SOURCE --src DIR --out DIR [--skip-bad] [...]"
enter_home

ARGS=("$@")
has_workers=""
for a in "${ARGS[@]}"; do
    case $a in --workers | --workers=*) has_workers=1 ;; esac
done
if [ -z "$has_workers" ] && [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    ARGS+=(--workers "$SLURM_CPUS_PER_TASK")
fi

say "on $(hostname) in $PWD: python -m gandist.data.prepare ${ARGS[*]}"
srun --nodes=1 --ntasks=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" python3 -m gandist.data.prepare "${ARGS[@]}"
rc=$?
if [ "$rc" -eq 0 ]; then say "done"; else say "gandist-prepare failed with exit status $rc"; fi
exit "$rc"
