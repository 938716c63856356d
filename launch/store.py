"""The rendezvous store of an elastic gandist run, as a process of its own.

torchrun's c10d rendezvous keeps its state in a TCP store, which by default lives inside the agent of the
node named in --rdzv-endpoint: lose that node and every survivor loses the rendezvous with it.  Run this on
a host that is not a training node (the submit or login host) and point every node's agent at it
(launch/elastic.sh, also under slurm/train.sh's elastic mode); the agents then all connect as clients.

    python launch/store.py --port 29400            # prints "rendezvous store: HOST:PORT", runs until stopped
"""
import argparse
import signal
import socket
import sys
from datetime import timedelta

import torch.distributed as dist


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: every interface)")
    p.add_argument("--port", type=int, default=29400)
    args = p.parse_args(argv)
    try:
        store = dist.TCPStore(args.host, args.port, is_master=True, multi_tenant=True, wait_for_workers=False,
                              timeout=timedelta(seconds=60))
    except (RuntimeError, OSError) as e:
        print(f"launch/store.py: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    print(f"rendezvous store: {socket.gethostname()}:{args.port}", flush=True)
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
