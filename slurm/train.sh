#!/bin/bash
# gandist training as a SLURM job: N nodes x G GPUs, one srun task per node, each task running
# `accelerate launch` (one training process per GPU, or one on a CPU-only node, gloo).
#
#   sbatch slurm/train.sh [CONFIG] [key=value ...]
#   sbatch --nodes=4 slurm/train.sh configs/wgan_gp_celeba.yaml train.steps=200000
#
# Submit from the repository (the job runs there: configs, .venv and relative output.dir are found
# from the submit directory; GANDIST_HOME=DIR says otherwise).  Edit the #SBATCH lines below for
# your cluster; sbatch options on the command line override them.
#
# Time limit and preemption: SLURM sends this script SIGUSR1 300 s before the time limit
# (--signal=B:USR1@300); the script passes it to the training processes, which agree at the next
# log or checkpoint step (at most train.log_every steps later: keep 300 s above that many steps plus
# one checkpoint's save), save a checkpoint and exit with 75; the node tasks exit 75 and the script requeues the job
# (scontrol requeue: same job id, so the same port) and the next run resumes from that checkpoint
# (train.resume=auto).  A preemption with a GraceTime sends SIGTERM to the training step instead:
# training checkpoints on it the same way and the job is requeued the same way.  `scancel` (which
# also sends SIGTERM to this script) lets training checkpoint but does not requeue.
#
# Settings from the environment (all optional):
#   GANDIST_HOME              repository directory the job runs in, where launch/lib.sh is found (default: the
#                             submit directory; sbatch runs a copy of this script, so its own path says nothing)
#   GANDIST_VENV              virtualenv with gandist (default: ./.venv when it exists, else PATH)
#   GANDIST_PROCS_PER_NODE    processes per node (default: GPUs allocated or present, else 1)
#   GANDIST_ACCELERATE_CONFIG accelerate config file (default: launch/multi_node.yaml)
#   GANDIST_MAIN_ADDR         address of the first node (default: its NodeAddr from scontrol)
#   GANDIST_MAIN_PORT         rendezvous port (default: 20000 + job id % 10000, stable across requeues)
#   GANDIST_LOG_DIR           per-node logs (default: <output.dir>/slurm)
#   GANDIST_MAX_REQUEUES      requeue at most this many times (default: 100)
#   GANDIST_SRUN_ARGS         extra srun options for the training step, e.g. a container:
#                             "--container-image=/shared/gandist.sqsh --container-workdir=/opt/gandist"
#   GANDIST_TASK_PREFIX       command that wraps each node's task, e.g. "apptainer exec --nv gandist.sif"
#
# Elastic mode (README "Elastic training"): GANDIST_ELASTIC_NODES=MIN:MAX runs each node's task through
# launch/elastic.sh (torchrun --nnodes=MIN:MAX): a lost node costs the others a restart from the newest
# checkpoint, not the job, which goes on while MIN nodes remain.  Submit with --no-kill (SLURM keeps the job
# when a node fails); the node tasks run with --kill-on-bad-exit=0.  SLURM never grows a running job: a
# one-node job with the same GANDIST_RDZV_ID joins it (sbatch --nodes=1 --no-kill, GANDIST_RDZV_ID=<job id>).
#   GANDIST_RDZV_ENDPOINT     HOST:PORT of the rendezvous store, on a host that is not a training node:
#                             python launch/store.py --port PORT on the submit host (required in this mode)
#   GANDIST_RDZV_ID           the run's rendezvous id (default: this job's id; a joining job gives the first's)
#   GANDIST_MAX_RESTARTS, GANDIST_SHUTDOWN_TIMEOUT, GANDIST_RDZV_CONF: see launch/elastic.sh
#
#SBATCH --job-name=gandist
#SBATCH --nodes=2                 # N: machines
#SBATCH --ntasks-per-node=1       # keep at 1: the task runs accelerate launch, which starts a process per GPU
#SBATCH --exclusive               # whole nodes
#SBATCH --time=24:00:00           # per run; the job checkpoints and requeues itself before it ends
#SBATCH --signal=B:USR1@300       # SIGUSR1 to this script 300 s before the time limit
#SBATCH --requeue
#SBATCH --open-mode=append        # a requeued run appends to the job's log
#SBATCH --output=slurm-%x-%j.out
# GPU nodes: remove one '#' from each of these lines (G = GPUs per node):
##SBATCH --gpus-per-node=8
##SBATCH --partition=gpu

# shellcheck disable=SC2317,SC2329  # the node_* functions and the handlers run via srun and traps
set -uo pipefail

say() { printf '%s gandist job %s: %s\n' "$(date '+%F %T')" "${SLURM_JOB_ID:-?}" "$*"; }
die() { say "error: $*" >&2; exit 2; }

# What the scripts share (wait_for, the signal helpers, the run directory, the node layout), from the repository
GANDIST_HOME=${GANDIST_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
# shellcheck source-path=SCRIPTDIR/.. source=launch/lib.sh
. "$GANDIST_HOME/launch/lib.sh" || die "no launch/lib.sh in GANDIST_HOME=$GANDIST_HOME: submit from the repository or set GANDIST_HOME"

# -- what runs on every node (srun task); sent to the nodes as text with the library functions it uses, so
# -- nothing here needs to exist on a node's disk but bash, python and the launcher. -------------------------

node_signal() {  # SIGNAL: a trap; remembers the first signal and the newest checkpoint at that moment
    if [ -z "$NODE_SIGNAL" ]; then
        NODE_SIGNAL=$1
        NODE_CHECKPOINT_BEFORE=$(newest_checkpoint "$NODE_RUN_DIR")
    fi
    echo "node $SLURM_NODEID: SIG$1, passing it to training"
    [ -z "$NODE_LAUNCHER" ] || resend_signal "$1" "$NODE_LAUNCHER"  # not started yet: node_task passes it on once it is
}

node_task() {  # ACCELERATE-LAUNCH-ARGS...: one per node; exit 75 when a signal made training save and stop
    local rc a after="" train_args=() now
    use_venv "$PWD"  # where the task runs: inside the container, if there is one
    NODE_SIGNAL=""
    NODE_LAUNCHER=""
    NODE_RUN_DIR=""
    NODE_CHECKPOINT_BEFORE=""
    RESENDER=""
    # From here on a stop signal is remembered, and passed to training once it runs (SLURM's warning
    # can come at any moment, also while a requeued run starts)
    trap 'node_signal USR1' USR1
    trap 'node_signal TERM' TERM
    printf '%s node %s (%s): machine rank %s of %s, job %s run %s, in %s\n' "$(date '+%F %T')" \
        "${SLURMD_NODENAME:-?}" "$(hostname)" "$SLURM_NODEID" "$SLURM_NNODES" "$SLURM_JOB_ID" \
        "$((${SLURM_RESTART_COUNT:-0} + 1))" "$PWD"
    # The run directory, resolved where training runs (inside the container, if there is one)
    for a in "$@"; do
        [ -n "$after" ] && train_args+=("$a")
        [ "$a" = gandist.train ] && after=1
    done
    NODE_RUN_DIR=$(trap '' USR1 TERM; output_dir "${train_args[@]}" 2>/dev/null)
    [ -z "$NODE_SIGNAL" ] || NODE_CHECKPOINT_BEFORE=$(newest_checkpoint "$NODE_RUN_DIR")  # signalled before it was known
    # The launcher and, until gandist.train installs its handlers, the training processes start with
    # SIGUSR1/SIGTERM ignored: SLURM signals every process of the step, and neither the launcher nor
    # data-loader processes must die of it.  The torchrun agent inside accelerate launch is told to
    # leave SIGTERM alone too (it would otherwise kill the training processes 30 s later, possibly
    # mid-checkpoint); SLURM's own SIGKILL after KillWait still ends everything.  (PET_: torchrun's
    # --signals-to-handle, torch >= 2.8; TORCHELASTIC_: the same for older releases.)
    export PET_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT TORCHELASTIC_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT
    if [ -n "${GANDIST_ELASTIC_NODES:-}" ]; then
        # launch/elastic.sh's torchrun is the training processes' parent: the signals go to it, and it stops
        # the workers itself (an elastic agent restarts workers that stop on their own).  Its agent handles SIGUSR1,
        # so its workers start with the default action back (the ignore above does not reach them): gandist.train
        # notes a SIGUSR1 that comes while it still imports, instead of dying of it
        ( trap '' USR1 TERM; exec bash launch/elastic.sh "${train_args[@]}" ) &
    else
        ( trap '' USR1 TERM; exec accelerate launch --machine_rank "$SLURM_NODEID" "$@" ) &
    fi
    NODE_LAUNCHER=$!
    # This shell passes the signals on itself as well, to the launcher's children only: with
    # proctrack/pgid (or a signal to this task alone) they would not reach training otherwise.
    [ -z "$NODE_SIGNAL" ] || resend_signal "$NODE_SIGNAL" "$NODE_LAUNCHER"
    wait_for "$NODE_LAUNCHER"
    rc=$?
    stop_resending
    if [ "$rc" -ne 0 ] && [ -n "$NODE_SIGNAL" ]; then
        # gandist.train exits 75 after its checkpoint, but the launcher reports any worker's exit as 1:
        # a checkpoint newer than the one there was at the signal is what tells.  (A SIGTERM from srun
        # ending the step after another node failed finds none: training cannot save without a peer.)
        now=$(newest_checkpoint "$NODE_RUN_DIR")
        if [ -n "$now" ] && [ "$now" != "$NODE_CHECKPOINT_BEFORE" ]; then
            echo "node $SLURM_NODEID: training saved $now after SIG$NODE_SIGNAL and stopped: exit 75"
            exit 75
        fi
        if [ -z "$NODE_RUN_DIR" ] && [ "$NODE_SIGNAL" = USR1 ]; then  # cannot look: trust the warning
            echo "node $SLURM_NODEID: training stopped after SIGUSR1 (run directory unknown): exit 75"
            exit 75
        fi
        echo "node $SLURM_NODEID: SIG$NODE_SIGNAL, but no new checkpoint in ${NODE_RUN_DIR:-(run directory unknown)}"
    fi
    echo "node $SLURM_NODEID: launcher exit $rc"
    exit "$rc"
}

# -- the batch script -----------------------------------------------------------------------------

[ -n "${SLURM_JOB_ID:-}" ] || die "slurm/train.sh is a SLURM batch script: sbatch slurm/train.sh [CONFIG] [key=value ...]"

# Signals first: an untrapped SIGUSR1 would end this script.
SIGNALLED=""   # SIGUSR1: the time limit is near; checkpoint, stop, requeue
TERMINATED=""  # SIGTERM: SLURM is ending the job (scancel, time limit, preemption); no requeue from here
SRUN_PID=""
on_usr1() {
    SIGNALLED=USR1
    say "SIGUSR1: the job is about to end; asking training to checkpoint and stop"
    [ -n "$SRUN_PID" ] && kill -USR1 "$SRUN_PID" 2>/dev/null  # srun passes it to every task
}
REQUEUED=""
on_term() {
    if [ -n "$REQUEUED" ]; then return; fi  # the requeue itself ends this run
    TERMINATED=TERM
    say "SIGTERM: SLURM is ending the job; training checkpoints on it; no requeue from here"
}
trap on_usr1 USR1
trap on_term TERM

enter_home

# A sweep's array task (gandist-sweep --slurm submits `slurm/train.sh --sweep SWEEP/sweep.json`): task i runs
# member i, whose config and overrides the manifest holds (read with plain json: gandist may be in a container)
if [ "${1:-}" = --sweep ]; then
    [ $# -eq 2 ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ] || die "--sweep MANIFEST is for the array tasks of gandist-sweep --slurm"
    mapfile -d '' -t MEMBER < <(python3 -c 'import json, sys
sys.stdout.write("".join(a + "\0" for a in json.load(open(sys.argv[1]))["members"][int(sys.argv[2])]["args"]))' "$2" "$SLURM_ARRAY_TASK_ID")
    [ "${#MEMBER[@]}" -gt 0 ] || die "no member $SLURM_ARRAY_TASK_ID in the sweep manifest $2"
    say "sweep $2: member $SLURM_ARRAY_TASK_ID"
    set -- "${MEMBER[@]}"
fi

config_args "$@"
RESTART=${SLURM_RESTART_COUNT:-0}

# The run directory, from gandist's own config loader (this also rejects a bad config before any
# node starts).  Without gandist on this host (it lives in a container), logs go to ./slurm-logs.
RUN_DIR=$(output_dir --config "$CONFIG" "${OVERRIDES[@]}")
case $? in
    0) LOG_DIR=${GANDIST_LOG_DIR:-$RUN_DIR/slurm} ;;
    3) RUN_DIR="(set in the container)"; LOG_DIR=${GANDIST_LOG_DIR:-$PWD/slurm-logs}
       say "gandist is not importable here; assuming it runs in a container (GANDIST_SRUN_ARGS/GANDIST_TASK_PREFIX)" ;;
    *) die "the config does not load (config $CONFIG, overrides: ${OVERRIDES[*]:-none})" ;;
esac
mkdir -p "$LOG_DIR" || die "cannot create the log directory $LOG_DIR"

slurm_layout
LAUNCH_ARGS=("${ACCELERATE_ARGS[@]}" -m gandist.train --config "$CONFIG" "${OVERRIDES[@]}")
NODE_LOG="$LOG_DIR/${SLURM_JOB_NAME:-gandist}-$SLURM_JOB_ID-run$((RESTART + 1))-node%n.log"
MAX_REQUEUES=${GANDIST_MAX_REQUEUES:-100}

if [ -n "${GANDIST_ELASTIC_NODES:-}" ]; then
    [ -n "${GANDIST_RDZV_ENDPOINT:-}" ] || die "GANDIST_ELASTIC_NODES needs GANDIST_RDZV_ENDPOINT=HOST:PORT: start" \
        "'python launch/store.py --port PORT' on the submit host (not on a node the job may lose)"
    export GANDIST_RDZV_ID=${GANDIST_RDZV_ID:-$SLURM_JOB_ID} GANDIST_PROCS_PER_NODE=$PROCS
    KILL_ON_BAD_EXIT=0  # a lost node's task must not take the others down
    say "run $((RESTART + 1)): elastic, $NNODES node(s) [$SLURM_JOB_NODELIST] x $PROCS process(es) joining" \
        "rendezvous $GANDIST_RDZV_ID at $GANDIST_RDZV_ENDPOINT (nodes $GANDIST_ELASTIC_NODES), config $CONFIG ${OVERRIDES[*]:-}"
else
    KILL_ON_BAD_EXIT=1
    say "run $((RESTART + 1)): $NNODES node(s) [$SLURM_JOB_NODELIST] x $PROCS process(es), rank 0 on $HEAD_NODE" \
        "at $MAIN_ADDR:$MAIN_PORT ($RDZV rendezvous), config $CONFIG ${OVERRIDES[*]:-}"
fi
say "run directory $RUN_DIR; node logs ${NODE_LOG//%n/<N>}"


requeue() {  # REASON
    if [ -n "$TERMINATED" ]; then
        say "not requeueing ($1): SLURM is ending this job itself"
        return 1
    fi
    if [ "$RESTART" -ge "$MAX_REQUEUES" ]; then
        say "not requeueing ($1): the job has already run $((RESTART + 1)) times (GANDIST_MAX_REQUEUES=$MAX_REQUEUES)"
        return 1
    fi
    say "requeueing job $SLURM_JOB_ID ($1); run $((RESTART + 2)) resumes from the newest checkpoint in $RUN_DIR"
    REQUEUED=1
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        REQUEUED=""
        say "error: scontrol requeue $SLURM_JOB_ID failed (does the partition allow requeue? JobRequeue, --requeue)"
        return 1
    fi
    sleep 30  # SLURM ends this run now; exiting first would only race it
    return 0
}

NODE_LOG_DIR_MARK="$LOG_DIR/.started-$SLURM_JOB_ID"  # final/ written after it: this run finished training
touch "$NODE_LOG_DIR_MARK"
if [ -n "$SIGNALLED" ]; then  # the warning came before training started: nothing to save
    requeue "signalled before training started"
    exit 75
fi

NODE_CODE=$(declare -f use_venv output_dir newest_checkpoint wait_for signal_children resend_signal stop_resending \
                      node_signal node_task)
srun "${NODE_SRUN_ARGS[@]}" --kill-on-bad-exit="$KILL_ON_BAD_EXIT" --output="$NODE_LOG" "${SRUN_EXTRA[@]}" \
     "${TASK_PREFIX[@]}" bash -c "$NODE_CODE"'; node_task "$@"' gandist-node "${LAUNCH_ARGS[@]}" &
SRUN_PID=$!
wait_for "$SRUN_PID"  # this script traps USR1 and TERM as the tasks do
RC=$?

if [ "$RC" -eq 0 ]; then
    say "training finished (run directory $RUN_DIR)"
    exit 0
fi
if [ -n "${GANDIST_ELASTIC_NODES:-}" ] && [ "$RUN_DIR/final/generator.json" -nt "$NODE_LOG_DIR_MARK" ]; then
    say "training finished (run directory $RUN_DIR); a node's task ended with an error on the way (srun exit $RC)"
    exit 0
fi
for f in "${NODE_LOG//%n/}"*; do
    [ -f "$f" ] && { echo "--- last lines of $f"; tail -n 15 "$f"; }
done
if [ "$RC" -eq 75 ] || [ -n "$SIGNALLED" ]; then
    # 75: a signal (SIGUSR1 from here, or SIGTERM of a preemption to the step) made training save a
    # checkpoint and stop.  After SIGUSR1 here another status can mean the same: srun ends the other
    # nodes' tasks once one has exited 75.
    requeue "training stopped on a signal, srun exit $RC"
    exit 75
fi
say "training failed: srun exit $RC (node logs above)"
exit "$RC"
