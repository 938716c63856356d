"""One rich progress-bar style for training, evaluation and shard writing; callers show it on rank 0 only."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(*, info: bool = False, transient: bool = False) -> Progress:
    """A bar with description, count, elapsed and remaining time; `info` adds a column tasks fill via `info`."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, transient=transient, refresh_per_second=2)
