"""The comparison as one table: a row per run, with the config keys that differ between the runs, its status,
steps done of the total, images/s, the last losses, and the final and best scores (with the best's step);
sorted by a chosen figure.  Drawn with rich on a terminal, or as plain text, markdown or CSV (raw numbers)."""
from __future__ import annotations

import csv
import io
import math

from rich.console import Console
from rich.table import Table

from gandist.cli import UsageError
from gandist.compare.runs import LOSSES, SCORES, Run, differing, short_names, value_text

FORMATS = ("rich", "plain", "markdown", "csv")
# --sort keys: a score's final value (fid), its best (best_fid), or one of these, with the better end first
ORDER = {"steps": max, "images_per_sec": max, **{k: min for k in LOSSES}}
STYLE = {"done": "green", "running": "cyan", "preempted": "yellow", "diverged": "red", "failed": "red",
         "pending": "dim"}


def sort_keys() -> list[str]:
    return ["name", *ORDER, *SCORES, *(f"best_{k}" for k in SCORES)]


def default_sort(runs: list[Run]) -> str:
    """The best FID when the runs have one, else the best KID, the best IS, else the runs' own order."""
    return next((f"best_{k}" for k in SCORES if any(r.score(k) for r in runs)), "name")


def figure(run: Run, key: str) -> float | None:
    if key == "steps":
        return run.status.step
    if key == "images_per_sec":
        return run.images_per_sec
    if key in LOSSES:
        return run.last(key)
    score = run.score(key.removeprefix("best_"))
    return None if score is None else score[1] if key.startswith("best_") else score[0]


def better_first(key: str):
    return ORDER.get(key) or SCORES[key.removeprefix("best_")]


def sort(runs: list[Run], key: str) -> list[Run]:
    """Best first; runs without the figure (or with a non-finite one) last, in their own order."""
    if key not in sort_keys():
        raise UsageError(f"--sort: {key!r} is not one of {', '.join(sort_keys())}")
    if key == "name":
        return list(runs)
    sign = -1 if better_first(key) is max else 1
    known = [r for r in runs if figure(r, key) is not None and math.isfinite(figure(r, key))]
    return sorted(known, key=lambda r: sign * figure(r, key)) + [r for r in runs if r not in known]


def number(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def columns(runs: list[Run]) -> list[tuple[str, str, list[str], list]]:
    """(header, csv header, texts, raw values) of each column."""
    keys = differing(runs)
    names = short_names(keys)
    cols = [("run", "run", [r.name for r in runs], [r.name for r in runs])]
    cols += [(names[k], k, [value_text(r.config.get(k)) for r in runs], [r.config.get(k) for r in runs])
             for k in keys]
    cols.append(("status", "status", [r.status.state for r in runs], [r.status.state for r in runs]))
    cols.append(("steps", "step", [f"{r.status.step}/{r.status.total if r.status.total is not None else '?'}"
                                   for r in runs], [r.status.step for r in runs]))
    cols.append(("", "total", [], [r.status.total for r in runs]))  # CSV only
    cols.append(("img/s", "images_per_sec", [number(r.images_per_sec) for r in runs],
                 [r.images_per_sec for r in runs]))
    cols += [(k, k, [number(r.last(k)) for r in runs], [r.last(k) for r in runs]) for k in LOSSES]
    for k in SCORES:
        scores = [r.score(k) for r in runs]
        if not any(scores):
            continue
        cols.append((k, k, [number(s and s[0]) for s in scores], [s and s[0] for s in scores]))
        cols.append((f"best {k}", f"best_{k}", [f"{s[1]:.4g} @{s[2]}" if s else "-" for s in scores],
                     [s and s[1] for s in scores]))
        cols.append(("", f"best_{k}_step", [], [s and s[2] for s in scores]))
    cols.append(("", "detail", [], [r.status.detail for r in runs]))
    return cols


def notes(runs: list[Run]) -> list[str]:
    """How the runs that are not done stand, in words."""
    return [f"{r.name}: {r.status.state}: {r.status.detail}" for r in runs
            if r.status.state != "done" and r.status.detail]


def render(runs: list[Run], fmt: str, sort_key: str, console: Console | None = None) -> str | None:
    """The table as text (plain, markdown, csv), or drawn on `console` (rich: returns None)."""
    cols = [c for c in columns(runs) if c[0] or fmt == "csv"]
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow([c[1] for c in cols])
        w.writerows(zip(*(["" if v is None else v for v in c[3]] for c in cols)))
        return out.getvalue()
    title = f"{len(runs)} run(s), sorted by {sort_key}"
    headers, texts = [c[0] for c in cols], list(zip(*(c[2] for c in cols)))
    numeric = [c[0] not in ("run", "status") and all(isinstance(v, (int, float, type(None))) for v in c[3])
               for c in cols]
    if fmt == "rich":
        table = Table(title=title, title_justify="left")
        for h, right in zip(headers, numeric):
            table.add_column(h, justify="right" if right else "left")
        state = headers.index("status")
        for row in texts:
            table.add_row(*row[:state], f"[{STYLE[row[state]]}]{row[state]}[/]", *row[state + 1:])
        console = console or Console()
        console.print(table)
        for line in notes(runs):
            console.print(line, highlight=False, markup=False)
        return None
    if fmt == "markdown":
        lines = [f"| {' | '.join(headers)} |", f"| {' | '.join('---:' if r else '---' for r in numeric)} |"]
        lines += [f"| {' | '.join(row)} |" for row in texts]
        return "\n".join(lines + [""] + [f"- {n}" for n in notes(runs)]) + "\n"
    widths = [max(len(h), *(len(row[i]) for row in texts)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, numeric)).rstrip()

    lines = [title, line(headers), line(["-" * w for w in widths])] + [line(row) for row in texts]
    return "\n".join(lines + [""] + notes(runs)) + "\n"
