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
#   GANDIST_HOME, GANDIST_VENV, GANDIST_PROCS_PER_NODE, GANDIST_ACCELERATE_CONFIG, GANDIST_MAIN_ADDR,
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

[ -n "${SLURM_JOB_ID:-}" ] || die "slurm/check.sh is a SLURM batch script: sbatch slurm/check.sh [CONFIG] [key=value ...]"

GANDIST_HOME=${GANDIST_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$GANDIST_HOME" || die "GANDIST_HOME=$GANDIST_HOME: no such directory"
VENV=${GANDIST_VENV:-$PWD/.venv}
[ -x "$VENV/bin/accelerate" ] && export PATH="$VENV/bin:$PATH"

CONFIG=configs/quickstart.yaml
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
    CONFIG=$1
    shift
fi
NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}

# Processes per node, exactly as slurm/train.sh counts them (tests/integration/test_check.py keeps the two equal).
procs_per_node() {
    if [ -n "${GANDIST_PROCS_PER_NODE:-}" ]; then echo "$GANDIST_PROCS_PER_NODE"; return; fi
    if [[ "${SLURM_GPUS_ON_NODE:-0}" =~ ^[1-9][0-9]*$ ]]; then echo "$SLURM_GPUS_ON_NODE"; return; fi
    local n
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${CUDA_VISIBLE_DEVICES}" != "-1" ]; then
        n=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
        [ "$n" -gt 0 ] && { echo "$n"; return; }
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
        [ "$n" -gt 0 ] && { echo "$n"; return; }
    fi
    echo 1  # a CPU-only node: one process (gloo)
}
PROCS=$(procs_per_node)
[[ "$PROCS" =~ ^[1-9][0-9]*$ ]] || die "processes per node must be a positive number, got '$PROCS' (GANDIST_PROCS_PER_NODE)"

# Rank 0 on the job's first node, at its NodeAddr; the port from the job id, as slurm/train.sh.
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
[ -n "$HEAD_NODE" ] || die "could not expand SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
MAIN_ADDR=${GANDIST_MAIN_ADDR:-$(scontrol show node "$HEAD_NODE" 2>/dev/null | grep -o 'NodeAddr=[^ ]*' | head -n 1 | cut -d= -f2)}
MAIN_ADDR=${MAIN_ADDR:-$HEAD_NODE}
MAIN_PORT=${GANDIST_MAIN_PORT:-$((20000 + SLURM_JOB_ID % 10000))}
ACC_CONFIG=${GANDIST_ACCELERATE_CONFIG:-launch/multi_node.yaml}
[ -f "$ACC_CONFIG" ] || die "accelerate config $ACC_CONFIG not found (in $PWD)"
RDZV=$(sed -n 's/^rdzv_backend:[[:space:]]*\([A-Za-z0-9_-]*\).*/\1/p' "$ACC_CONFIG" | head -n 1)
RDZV=${RDZV:-static}

read -r -a CHECK_ARGS <<<"${GANDIST_CHECK_ARGS:-}"
LAUNCH_ARGS=(--config_file "$ACC_CONFIG" --num_machines "$NNODES" --num_processes "$((NNODES * PROCS))"
             --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" --rdzv_backend "$RDZV"
             -m gandist.check --expect-nodes "$NNODES" --expect-procs-per-node "$PROCS" "${CHECK_ARGS[@]}"
             --config "$CONFIG" "$@")
read -r -a SRUN_EXTRA <<<"${GANDIST_SRUN_ARGS:-}"
read -r -a TASK_PREFIX <<<"${GANDIST_TASK_PREFIX:-}"

say "$NNODES node(s) [$SLURM_JOB_NODELIST] x $PROCS process(es), rank 0 on $HEAD_NODE at $MAIN_ADDR:$MAIN_PORT" \
    "($RDZV rendezvous), config $CONFIG $*"
# Each node's task finds the virtualenv where it runs (inside the container, if there is one), as slurm/train.sh's.
# shellcheck disable=SC2016  # expanded by the node's shell
srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 \
     --cpus-per-task="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}" --kill-on-bad-exit=1 "${SRUN_EXTRA[@]}" \
     "${TASK_PREFIX[@]}" bash -c 'venv=${GANDIST_VENV:-$PWD/.venv}; [ -x "$venv/bin/accelerate" ] && PATH="$venv/bin:$PATH"
                                 exec accelerate launch --machine_rank "$SLURM_NODEID" "$@"' gandist-check-node \
     "${LAUNCH_ARGS[@]}"
RC=$?
# (the launcher reports a rank's 1 or 2 as 1: rank 0's table, or its one-line error, says which)
if [ "$RC" -eq 0 ]; then say "every check passed"; else say "failed (srun exit $RC): see the output above"; fi
exit "$RC"
