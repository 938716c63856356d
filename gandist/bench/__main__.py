"""python -m gandist.bench {data,train,draws,comm,memory,elastic,cluster} ...: see gandist/bench/__init__.py."""
from __future__ import annotations

import argparse
import sys

from gandist.bench import comm, data, draws, elastic, emulated, memory, train


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gandist.bench", description=sys.modules["gandist.bench"].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    commands = {"data": data, "train": train, "draws": draws, "comm": comm, "memory": memory, "elastic": elastic,
                "cluster": emulated}
    for module in commands.values():
        module.add_parser(sub)
    args = p.parse_args(argv)
    return commands[args.what].run(args)


if __name__ == "__main__":
    sys.exit(main())
