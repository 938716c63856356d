#!/bin/bash
# gandist-check as a SLURM job, with slurm/train.sh's layout: one srun task per node, each running
# `accelerate launch` (one process per GPU, or one on a CPU-only node, gloo), so that the check runs on the
# nodes, GPUs, filesystems and software a training job of the same submission gets.  About two minutes.
#
#   sbatch slurm/check.sh [CONFIG] [key=value ...]               # the arguments slurm/train.sh takes
#   sbatch --nodes=4 --gpus-per-node=8 slurm/check.sh configs/wgan_gp_celeba.yaml
#
# Submit it from the repository with the sbatch options you give slurm/train.sh (nodes, GPUs, partition, the
# container settings below).  Rank 0's table is in the job's output (slurm-gandist-check-<job>.out); the job
# fails when a check fails (its row names the rank and host) or the config is bad.  gandist-check is told
# the nodes and processes per node the job asked for, and fails when the ranks that came do not match them.
#
# Settings from the environment, as slurm/train.sh reads them (all optional):
#   GANDIST_HOME (where launch/lib.sh is found), GANDIST_VENV, GANDIST_PROCS_PER_NODE, GANDIST_ACCELERATE_CONFIG, GANDIST_MAIN_ADDR,
#   GANDIST_MAIN_PORT, GANDIST_SRUN_ARGS, GANDIST_TASK_PREFIX (see slurm/train.sh)
#   GANDIST_CHECK_ARGS        options of gandist-check itself, e.g. "--rounds 20 --json check.json"
#
#SBATCH --job-name=gandist-check
#SBATCH --nodes=2                 # N: machines, as slurm/train.sh
#SBATCH --ntasks-per-node=1       # keep at 1: the task runs accelerate launch, which starts a process per GPU
#SBATCH --exclusive               # whole nodes
#SBATCH --time=00:15:00
#SBATCH --output=slurm-%x-%j.out
# GPU nodes: remove one '#' from each of these lines (G = GPUs per node), as in slurm/train.sh:
##SBATCH --gpus-per-node=8
##SBATCH --partition=gpu

set -uo pipefail

say() { printf '%s gandist-check job %s: %s\n' "$(date '+%F %T')" "${SLURM_JOB_ID:-?}" "$*"; }
die() { say "error: $*" >&2; exit 2; }

GANDIST_HOME=${GANDIST_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
# shellcheck source-path=SCRIPTDIR/.. source=launch/lib.sh
. "$GANDIST_HOME/launch/lib.sh" || die "no launch/lib.sh in GANDIST_HOME=$GANDIST_HOME: submit from the repository or set GANDIST_HOME"

[ -n "${SLURM_JOB_ID:-}" ] || die "slurm/check.sh is a SLURM batch script: sbatch slurm/check.sh [CONFIG] [key=value ...]"

enter_home
config_args "$@"
slurm_layout  # slurm/train.sh's: the same nodes, processes per node and rendezvous
read -r -a CHECK_ARGS <<<"${GANDIST_CHECK_ARGS:-}"
LAUNCH_ARGS=("${ACCELERATE_ARGS[@]}" -m gandist.check --expect-nodes "$NNODES" --expect-procs-per-node "$PROCS"
             "${CHECK_ARGS[@]}" --config "$CONFIG" "${OVERRIDES[@]}")

say "$NNODES node(s) [$SLURM_JOB_NODELIST] x $PROCS process(es), rank 0 on $HEAD_NODE at $MAIN_ADDR:$MAIN_PORT" \
    "($RDZV rendezvous), config $CONFIG ${OVERRIDES[*]:-}"
# Each node's task finds the virtualenv where it runs (inside the container, if there is one), as slurm/train.sh's.
# shellcheck disable=SC2016  # expanded by the node's shell
srun "${NODE_SRUN_ARGS[@]}" --kill-on-bad-exit=1 "${SRUN_EXTRA[@]}" "${TASK_PREFIX[@]}" \
     bash -c "$(declare -f use_venv)"'; use_venv "$PWD"; exec accelerate launch --machine_rank "$SLURM_NODEID" "$@"' \
     gandist-check-node "${LAUNCH_ARGS[@]}"
RC=$?
# (the launcher reports a rank's 1 or 2 as 1: rank 0's table, or its one-line error, says which)
if [ "$RC" -eq 0 ]; then say "every check passed"; else say "failed (srun exit $RC): see the output above"; fi
exit "$RC"
