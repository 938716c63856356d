#!/bin/bash
# The image's entrypoint: `accelerate launch -m gandist.train ARGS` on every GPU the container sees.
#
#   docker run --gpus all gandist --config configs/wgan_gp_celeba.yaml train.steps=100000
#   docker run --gpus all gandist                       # = --config configs/quickstart.yaml
#   docker run gandist gandist-prepare synthetic --out shards/synthetic   # other commands run as given
#
# Arguments that start with --config or hold key=value are training arguments; anything else is run
# as a command (bash, python, gandist-prepare, accelerate ...).
#   GANDIST_PROCS=N   processes (default: the visible GPUs; none visible: one process on the CPU)
#   GANDIST_HOME=DIR  the repository inside the image (default /opt/gandist)
# SIGTERM, SIGINT and SIGUSR1 (docker stop, Ctrl-C, a scheduler) go to the training processes, which
# save a checkpoint at the next step and stop; the container then exits with 75, saying so in one line
# (the launcher's own report of a worker that exited 75 is left out; other failures show it as ever).
# Give them time: docker stop -t 120.  A rerun with the same output.dir resumes from that checkpoint.

# shellcheck disable=SC2317,SC2329  # forward runs from traps (SC2329 is shellcheck 0.10+'s name for it)
set -uo pipefail

die() { echo "entrypoint: $*" >&2; exit 2; }

GANDIST_HOME=${GANDIST_HOME:-/opt/gandist}
# shellcheck source-path=SCRIPTDIR/.. source=launch/lib.sh
. "$GANDIST_HOME/launch/lib.sh" || die "no launch/lib.sh in GANDIST_HOME=$GANDIST_HOME"
enter_home

[ $# -gt 0 ] || set -- --config configs/quickstart.yaml
case $1 in
    --config | --config=* | *=*) ;;  # training arguments
    *) exec "$@" ;;
esac

# A stop signal is remembered from here on, and passed to training once the launcher runs.
got="" sig="" launcher=""
forward() {  # NAME SIGNAL: a trap; SIGNAL is what training is sent
    got=$1 sig=$2
    echo "entrypoint: SIG$1: asking training to checkpoint and stop" >&2
    [ -z "$launcher" ] || resend_signal "$sig" "$launcher"  # to the training processes, until they have heard it
}
trap 'forward TERM TERM' TERM
trap 'forward INT TERM' INT
trap 'forward USR1 USR1' USR1
procs=${GANDIST_PROCS:-$(trap '' USR1 TERM INT; gpu_count)}  # a stop signal must not cut the count short
[[ "$procs" =~ ^[0-9]+$ ]] || die "GANDIST_PROCS must be a number, got '$procs'"
if [ "$procs" -ge 2 ]; then
    launch=(--config_file launch/multi_gpu.yaml --num_processes "$procs")
elif [ "$procs" -eq 1 ]; then
    launch=(--config_file launch/single_gpu.yaml)
else
    echo "entrypoint: no GPU visible (docker run --gpus all ...?): one process on the CPU" >&2
    launch=(--config_file launch/single_gpu.yaml)
fi

# `accelerate launch`, run from Python so that one outcome is told apart: training that exited 75 (it
# saved a checkpoint after a signal) makes the launcher exit 75 quietly.  accelerate would report it as
# a failure: a CalledProcessError traceback (one process) or torchrun's ChildFailedError traceback and
# log lines (several; torchrun ends the ranks still exiting, hence their SIGTERM/SIGKILL).  Any other
# failure raises as before, with the agent's log lines it held back.
launch_py=$(cat <<'PY'
import logging, signal, subprocess, sys

STOPPED = 75  # gandist.train: a signal made it save a checkpoint and stop
ENDED_BY_AGENT = {-signal.SIGTERM, -signal.SIGKILL}


def stopped(e):
    if isinstance(e, subprocess.CalledProcessError):  # accelerate's one-process launcher
        return e.returncode == STOPPED
    failures = getattr(e, "failures", None)  # torchrun's ChildFailedError: {rank: ProcessFailure}
    codes = {f.exitcode for f in failures.values()} if isinstance(failures, dict) else set()
    return STOPPED in codes and codes <= {STOPPED, *ENDED_BY_AGENT}


held = []  # the torchrun agent's lines about ended workers, until the outcome is known
agent_log = logging.getLogger("torch.distributed.elastic.multiprocessing.api")
hold = lambda record: held.append(record)  # a filter that keeps every record back
agent_log.addFilter(hold)


def release():
    agent_log.removeFilter(hold)
    for record in held:
        agent_log.handle(record)


sys.argv = ["accelerate", "launch", *sys.argv[1:]]
from accelerate.commands.accelerate_cli import main

try:
    main()
except Exception as e:
    if not stopped(e):
        release()
        raise
    sys.exit(STOPPED)
except BaseException:
    release()
    raise
release()
PY
)

# The launcher starts with the signals ignored (so it is not the one that dies of them, and the
# torchrun agent inside it leaves SIGTERM alone); this shell passes them to the training processes.
export PET_SIGNALS_TO_HANDLE=SIGHUP,SIGQUIT TORCHELASTIC_SIGNALS_TO_HANDLE=SIGHUP,SIGQUIT
(trap '' USR1 TERM INT; exec python3 -c "$launch_py" "${launch[@]}" -m gandist.train "$@") &
launcher=$!
[ -z "$got" ] || resend_signal "$sig" "$launcher"  # a signal that came before the launcher did
wait_for "$launcher"
rc=$?
stop_resending
if [ "$rc" -eq 75 ]; then
    echo "entrypoint: ${got:+SIG$got: }training saved a checkpoint and stopped: exit 75 (a rerun with the same output.dir resumes)" >&2
    exit 75
fi
if [ "$rc" -ne 0 ] && [ -n "$got" ]; then
    echo "entrypoint: SIG$got, but training did not save a checkpoint and stop: it failed (launcher exit $rc; its report above)" >&2
fi
exit "$rc"
