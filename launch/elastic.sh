#!/usr/bin/env bash
# Elastic gandist training, one node: torchrun with --nnodes=MIN:MAX, joining the run's c10d rendezvous at a
# standalone store.  Start it on every node.  A lost node costs the others one restart each: they continue
# from the newest checkpoint at the smaller world size (at a fixed global batch the weights do not depend on
# the world size).  A node started again later joins: the others checkpoint (torchrun's SIGTERM on a
# membership change), and all continue at the larger size.  A hung node is found within train.hang_timeout_s.
#
#   python launch/store.py --port 29400 &          # once, on a host that is not a training node
#   GANDIST_RDZV_ENDPOINT=submit-host:29400 GANDIST_RDZV_ID=celeba-gp GANDIST_ELASTIC_NODES=2:4 \
#       launch/elastic.sh --config configs/wgan_gp_celeba.yaml train.steps=200000      # on each node
#
# Settings from the environment:
#   GANDIST_RDZV_ENDPOINT     HOST:PORT of the rendezvous store (required; launch/store.py)
#   GANDIST_RDZV_ID           the run's id: the same on every node of this run, another for another run (required)
#   GANDIST_ELASTIC_NODES     MIN:MAX nodes (default 1:2); training runs while at least MIN are up
#   GANDIST_PROCS_PER_NODE    processes per node (default: the GPUs, else 1)
#   GANDIST_VENV              virtualenv with gandist (default: the .venv of this script's repository when it
#                             exists, else PATH); launch/lib.sh is always this script's repository's
#   GANDIST_MAX_RESTARTS      restarts of this node's workers before it gives up (default 10): every membership
#                             change, a loss or a rejoin, costs one on every node; running out ends the job
#   GANDIST_SHUTDOWN_TIMEOUT  seconds a worker is given to stop after torchrun's signal before SIGKILL
#                             (default 300): it must reach the next log step and save a checkpoint.  A worker
#                             the watchdog named is not waited for: it ends itself, or the agent's file timer
#                             (TORCHELASTIC_ENABLE_FILE_TIMER, set here) SIGKILLs it once its deadline passes
#   GANDIST_RDZV_CONF         more rendezvous settings, e.g. last_call_timeout=10 (default last_call_timeout=5)
# Exit status: 0 done; 75 stopped by SIGTERM/SIGUSR1 with a checkpoint (requeue); 1 failed (the newest
# checkpoint is named; run it again to continue).
set -uo pipefail

die() { echo "launch/elastic.sh: error: $*" >&2; exit 2; }

# The repository this script is in (run where it lies, never a spool copy; inside a container that may not be
# where GANDIST_HOME says): its launch/lib.sh and its .venv
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=launch/lib.sh
. "$HERE/launch/lib.sh" || die "no launch/lib.sh in $HERE"
use_venv "$HERE"

[ -n "${GANDIST_RDZV_ENDPOINT:-}" ] || die "set GANDIST_RDZV_ENDPOINT=HOST:PORT, the rendezvous store started with" \
    "'python launch/store.py --port PORT' on a host that is not a training node"
[ -n "${GANDIST_RDZV_ID:-}" ] || die "set GANDIST_RDZV_ID: one id per run, the same on each of its nodes"
NODES=${GANDIST_ELASTIC_NODES:-1:2}
[[ "$NODES" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || die "GANDIST_ELASTIC_NODES=$NODES: expected MIN:MAX, e.g. 1:2"
export GANDIST_ELASTIC_NODES=$NODES  # gandist.train checks train.batch_size against every world size in range
PROCS=$(procs_per_node)

# The run directory (and a bad config refused here, before torchrun starts anything)
RUN_DIR=$(output_dir "$@")
case $? in
    0) ;;
    3) die "gandist is not importable by $(command -v python3) (GANDIST_VENV, or a .venv in $HERE)" ;;
    *) die "the config does not load (arguments: $*)" ;;
esac
newest() { local n; n=$(newest_checkpoint "$RUN_DIR"); echo "${n:-none}"; }
RESTARTS=${GANDIST_MAX_RESTARTS:-10}
# torch shares one TCP store per rendezvous, hosted by group rank 0, but a node that was rank 0 in an earlier
# round keeps pointing at its own old one when another node becomes rank 0 (a rejoin): both then wait 60 s
# for each other and the round fails.  Without the sharing each round's store is found afresh.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
# torchrun's agent runs a FileTimerServer; each worker's watchdog keeps its deadline ahead while the worker makes
# progress (gandist/liveness.py), so a frozen worker is SIGKILLed by the agent instead of holding up a restart
export TORCHELASTIC_ENABLE_FILE_TIMER=1
# a worker that names itself stalled ends this node's agent and leaves the reason here
NOTE=$(mktemp "${TMPDIR:-/tmp}/gandist-node.XXXXXX") || die "cannot make a temporary file"
export GANDIST_NODE_NOTE=$NOTE
trap 'rm -f "$NOTE"' EXIT
torchrun --nnodes="$NODES" --nproc-per-node="$PROCS" --rdzv-backend=c10d --rdzv-endpoint="$GANDIST_RDZV_ENDPOINT" \
    --rdzv-id="$GANDIST_RDZV_ID" --rdzv-conf="is_host=false,${GANDIST_RDZV_CONF:-last_call_timeout=5}" \
    --max-restarts="$RESTARTS" --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \
    --shutdown-timeout="${GANDIST_SHUTDOWN_TIMEOUT:-300}" -m gandist.train "$@" &
LAUNCHER=$!
# shellcheck disable=SC2329  # run by the traps below
forward() { kill -s "$1" "$LAUNCHER" 2>/dev/null; }  # torchrun passes it on to the workers and stops
trap 'forward TERM' TERM
trap 'forward USR1' USR1
trap 'forward INT' INT
wait_for "$LAUNCHER"
RC=$?
if [ "$RC" -eq 0 ]; then
    exit 0
fi
if [ -s "$NOTE" ]; then
    echo "launch/elastic.sh: error: this node left the run: $(cat "$NOTE"); the others go on without it." \
         "Start launch/elastic.sh here again once the cause is fixed: it rejoins at the next checkpoint" >&2
    exit 1
fi
if [ -f "$RUN_DIR/stopped.json" ]; then  # rank 0 left it after Ctrl-C's checkpoint: nothing to requeue
    echo "launch/elastic.sh: training stopped on Ctrl-C and saved $(newest): exit 130"
    exit 130
fi
if [ -f "$RUN_DIR/preempted.json" ]; then  # rank 0 left it after a stop signal's checkpoint
    echo "launch/elastic.sh: training stopped on a signal and saved $(newest): exit 75"
    exit 75
fi
echo "launch/elastic.sh: error: training ended (torchrun exit $RC): a failure this node could not restart from," \
     "or its $RESTARTS restarts (GANDIST_MAX_RESTARTS) were used up; the newest checkpoint is $(newest);" \
     "start the nodes again to continue from it" >&2
exit 1
