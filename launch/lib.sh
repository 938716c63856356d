# shellcheck shell=bash
# What the shell entry points share: slurm/train.sh, slurm/check.sh, slurm/prepare.sh, launch/elastic.sh and
# docker/entrypoint.sh source it from $GANDIST_HOME/launch/lib.sh.  (sbatch runs a spool copy of a batch script,
# so a file beside the script cannot be found from the script's own path: GANDIST_HOME, the submit directory by
# default, says where the repository is.)  It only defines functions; a function that must stop the script calls
# `die MESSAGE`, which each script defines with its own name in front.
#
# slurm/train.sh sends most of these functions to its node tasks as text (declare -f, its NODE_CODE), and
# slurm/check.sh sends use_venv: a function sent must call only functions sent with it.

use_venv() {  # DIR: put GANDIST_VENV, else DIR/.venv, first on PATH when it is a virtualenv
    local venv=${GANDIST_VENV:-$1/.venv}
    if [ -x "$venv/bin/python" ]; then PATH="$venv/bin:$PATH"; fi
}

enter_home() {  # cd to GANDIST_HOME and use its virtualenv
    cd "$GANDIST_HOME" || die "GANDIST_HOME=$GANDIST_HOME: no such directory"
    use_venv "$PWD"
}

output_dir() {  # --config FILE [key=value ...]: print the run directory (output.dir) as gandist's config loader
    # resolves it; a bad config is refused here, before any launcher starts.  Status 2: the config does not load
    # (the reason on stderr); 3: gandist is not importable here (it may live in a container)
    python3 - "$@" <<'PY'
import argparse, sys
try:
    from gandist import config
except ImportError:
    sys.exit(3)
p = argparse.ArgumentParser()
p.add_argument("--config")
p.add_argument("overrides", nargs="*")
a = p.parse_args(sys.argv[1:])
try:
    print(config.load(a.config, a.overrides).output.dir)
except config.ConfigError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
PY
}

# shellcheck disable=SC2034  # the variables it sets are the calling script's
config_args() {  # [CONFIG] [key=value ...], as slurm/train.sh takes them: sets CONFIG (default: the quickstart)
    # and OVERRIDES (an array)
    CONFIG=configs/quickstart.yaml
    if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
        CONFIG=$1
        shift
    fi
    OVERRIDES=("$@")
}

newest_checkpoint() {  # RUN_DIR: the run's newest complete checkpoint (trainer.json is written last), or nothing
    local f newest=""
    [ -n "$1" ] || return 0
    for f in "$1"/checkpoints/step_*/trainer.json; do
        [ -e "$f" ] && newest=${f%/trainer.json}
    done
    echo "$newest"
}

# -- signals ---------------------------------------------------------------------------------------------------

wait_for() {  # PID: wait until PID exits, through the signals this shell traps meanwhile; returns its status
    local rc
    while :; do
        wait "$1"
        rc=$?
        # wait returns >128 when a trapped signal interrupts it; PID may still be running
        if [ "$rc" -gt 128 ] && kill -0 "$1" 2>/dev/null; then continue; fi
        return "$rc"
    done
}

signal_children() {  # SIGNAL PID: send SIGNAL to PID's direct children (the training processes under a launcher)
    local sig=$1 parent=$2 status pid key value
    for status in /proc/[0-9]*/status; do
        pid=${status#/proc/}
        pid=${pid%/status}
        while read -r key value; do
            if [ "$key" = "PPid:" ]; then
                [ "$value" = "$parent" ] && kill -s "$sig" "$pid" 2>/dev/null
                break
            fi
        done 2>/dev/null <"$status"
    done
}

resend_signal() {  # SIGNAL LAUNCHER: SIGNAL to the launcher's children now, and again every 2 s until it is gone.
    # A training process that is still starting ignores it (the launcher starts with the stop signals ignored, so
    # that it does not die of them itself) until gandist.train listens; once heard, a repeat changes nothing:
    # training is already stopping, and a finished one ignores stop signals.  The repeater's pid: RESENDER.
    signal_children "$1" "$2"
    if [ -z "${RESENDER:-}" ]; then
        (while kill -0 "$2" 2>/dev/null; do sleep 2; signal_children "$1" "$2"; done) &
        RESENDER=$!
    fi
}

stop_resending() {
    if [ -n "${RESENDER:-}" ]; then kill "$RESENDER" 2>/dev/null; fi
    RESENDER=""
}

# -- processes and nodes ---------------------------------------------------------------------------------------

gpu_count() {  # the GPUs this process may use: CUDA_VISIBLE_DEVICES's list, else nvidia-smi's; 0 for none
    local n=0
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "$CUDA_VISIBLE_DEVICES" != "-1" ]; then
        n=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
    fi
    if [ "$n" -eq 0 ] && command -v nvidia-smi >/dev/null 2>&1; then
        n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    fi
    echo "$n"
}

procs_per_node() {  # GANDIST_PROCS_PER_NODE, else the GPUs SLURM allocated or the node has, else 1 (CPU, gloo)
    local n
    if [ -n "${GANDIST_PROCS_PER_NODE:-}" ]; then echo "$GANDIST_PROCS_PER_NODE"; return; fi
    if [[ "${SLURM_GPUS_ON_NODE:-0}" =~ ^[1-9][0-9]*$ ]]; then echo "$SLURM_GPUS_ON_NODE"; return; fi
    n=$(gpu_count)
    [ "$n" -gt 0 ] || n=1
    echo "$n"
}

# shellcheck disable=SC2034  # the variables it sets are the calling script's
slurm_layout() {  # a SLURM job's layout: one srun task per node, each running `accelerate launch` for its GPUs.
    # Sets NNODES, PROCS (per node), HEAD_NODE, MAIN_ADDR, MAIN_PORT, RDZV, ACCELERATE_ARGS (accelerate launch's
    # options for the whole job, less the machine rank and what it runs), NODE_SRUN_ARGS (one task per node),
    # SRUN_EXTRA (GANDIST_SRUN_ARGS) and TASK_PREFIX (GANDIST_TASK_PREFIX).  Run from GANDIST_HOME.
    local acc_config
    NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    PROCS=$(procs_per_node)
    [[ "$PROCS" =~ ^[1-9][0-9]*$ ]] || die "processes per node must be a positive number, got '$PROCS' (GANDIST_PROCS_PER_NODE)"
    # Rank 0 lives on the first node of the allocation; its address is the node's NodeAddr as SLURM knows it
    # (the name itself need not resolve, e.g. several slurmd on one host)
    HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    [ -n "$HEAD_NODE" ] || die "could not expand SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
    MAIN_ADDR=${GANDIST_MAIN_ADDR:-$(scontrol show node "$HEAD_NODE" 2>/dev/null | grep -o 'NodeAddr=[^ ]*' | head -n 1 | cut -d= -f2)}
    MAIN_ADDR=${MAIN_ADDR:-$HEAD_NODE}
    MAIN_PORT=${GANDIST_MAIN_PORT:-$((20000 + SLURM_JOB_ID % 10000))}  # the same job id after a requeue: the same port
    acc_config=${GANDIST_ACCELERATE_CONFIG:-launch/multi_node.yaml}
    [ -f "$acc_config" ] || die "accelerate config $acc_config not found (in $PWD)"
    # accelerate 1.x takes rdzv_backend from its command line only: pass the file's value on
    RDZV=$(sed -n 's/^rdzv_backend:[[:space:]]*\([A-Za-z0-9_-]*\).*/\1/p' "$acc_config" | head -n 1)
    RDZV=${RDZV:-static}
    ACCELERATE_ARGS=(--config_file "$acc_config" --num_machines "$NNODES" --num_processes "$((NNODES * PROCS))"
                     --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" --rdzv_backend "$RDZV")
    NODE_SRUN_ARGS=(--nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1
                    --cpus-per-task="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}")
    read -r -a SRUN_EXTRA <<<"${GANDIST_SRUN_ARGS:-}"
    read -r -a TASK_PREFIX <<<"${GANDIST_TASK_PREFIX:-}"
}
