"""The errors a user causes, and how every gandist command ends: a user's mistake is one line naming what is
wrong (exit 2), anything else a traceback plus one line (exit 1).  Every line says which rank and host raised it."""
from __future__ import annotations

import sys
import traceback
from typing import Callable

from gandist.distributed import where

EXIT_ERROR = 1  # unexpected error
EXIT_USAGE = 2  # bad input: config, run directory, checkpoint, data, weights file, metric name
# gandist-train's own endings.  After a stop signal's checkpoint the run exits EXIT_REQUEUE (SLURM's script
# requeues the job on it; rank 0 also leaves run_dir.PREEMPTED, for launchers such as torchrun that do not pass
# their workers' exit status on), or EXIT_INTERRUPTED for Ctrl-C (the shell's status for a SIGINT).
EXIT_DIVERGED = 3  # train.max_bad_steps non-finite steps in a row
EXIT_REQUEUE = 75
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad input to a command (a run directory, an option), named in the message."""


class ConfigError(ValueError):
    """A config value that is unknown, of the wrong type, or out of range.  Defined here, beside the other
    errors a user causes, because the parts that check their own settings (the backends, the data) sit below
    gandist.config and cannot import it; gandist.config exports it as its own."""


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def run_command(prog: str, body: Callable[[], int], usage_errors: tuple[type[BaseException], ...]) -> int:
    """body()'s exit status; `usage_errors` are reported as the user's mistakes."""
    try:
        return body()
    except usage_errors as e:
        print(f"{prog}: error ({where()}): {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        traceback.print_exc()
        print(f"{prog}: {type(e).__name__} ({where()}): {e}", file=sys.stderr)
        return EXIT_ERROR
