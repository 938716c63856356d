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
# save a checkpoint at the next step and stop; the container then exits with 75.  Give them time:
# docker stop -t 120.  A rerun with the same output.dir resumes from that checkpoint.

# shellcheck disable=SC2317  # forward runs from traps
set -uo pipefail

GANDIST_HOME=${GANDIST_HOME:-/opt/gandist}
cd "$GANDIST_HOME" || { echo "entrypoint: GANDIST_HOME=$GANDIST_HOME: no such directory" >&2; exit 2; }
[ -x .venv/bin/accelerate ] && PATH="$PWD/.venv/bin:$PATH"

[ $# -gt 0 ] || set -- --config configs/quickstart.yaml
case $1 in
    --config | --config=* | *=*) ;;  # training arguments
    *) exec "$@" ;;
esac

procs=${GANDIST_PROCS:-}
if [ -z "$procs" ]; then
    procs=0
    if command -v nvidia-smi >/dev/null 2>&1; then
        procs=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    fi
fi
if ! [[ "$procs" =~ ^[0-9]+$ ]]; then
    echo "entrypoint: GANDIST_PROCS must be a number, got '$procs'" >&2
    exit 2
fi
if [ "$procs" -ge 2 ]; then
    launch=(--config_file launch/multi_gpu.yaml --num_processes "$procs")
elif [ "$procs" -eq 1 ]; then
    launch=(--config_file launch/single_gpu.yaml)
else
    echo "entrypoint: no GPU visible (docker run --gpus all ...?): one process on the CPU" >&2
    launch=(--config_file launch/single_gpu.yaml)
fi

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

# The launcher starts with the signals ignored (so it is not the one that dies of them, and the
# torchrun agent inside it leaves SIGTERM alone); this shell passes them to the training processes.
export PET_SIGNALS_TO_HANDLE=SIGHUP,SIGQUIT TORCHELASTIC_SIGNALS_TO_HANDLE=SIGHUP,SIGQUIT
got=""
trap '' USR1 TERM INT
(exec accelerate launch "${launch[@]}" -m gandist.train "$@") &
launcher=$!
forward() {
    got=$1
    echo "entrypoint: SIG$1: asking training to checkpoint and stop" >&2
    pkill -"$2" -P "$launcher"  # its direct children: the training processes
}
trap 'forward TERM TERM' TERM
trap 'forward INT TERM' INT
trap 'forward USR1 USR1' USR1
wait_for "$launcher"
rc=$?
if [ "$rc" -ne 0 ] && [ -n "$got" ]; then
    echo "entrypoint: training stopped after SIG$got (launcher exit $rc): exit 75" >&2
    exit 75
fi
exit "$rc"
