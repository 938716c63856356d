"""The table gandist-check prints (rich on a terminal, plain lines in logs).  Each rank's `finding` (a value,
or the error that stopped it) is gathered to every rank, so all build the same rows and agree on the exit
status, and a failing rank is named in its row."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gandist.cli import first_line
from gandist.distributed import where

PASS, WARN, FAIL, INFO = "pass", "warn", "fail", "info"
SECTIONS = ("ranks", "collectives", "batchnorm", "precision", "data", "output.dir", "evaluation", "training")
PLAIN = {PASS: "ok", WARN: "warn", FAIL: "FAIL", INFO: ""}
GLYPH = {PASS: "[green]✓[/]", WARN: "[yellow]![/]", FAIL: "[bold red]✗[/]", INFO: "[dim]·[/]"}
SHOWN = 8  # ranks listed in a row before "... and N more": a 512-rank failure stays readable


@dataclass
class Row:
    section: str  # one of SECTIONS
    check: str
    status: str  # PASS, WARN, FAIL or INFO (a figure, no verdict)
    detail: str  # may hold several lines


def finding(fn: Callable, *args) -> dict:
    """fn(*args) under 'value', or why it failed under 'error': never raised, since the others wait for this
    rank in the gather that follows."""
    me = {"where": where()}
    try:
        me["value"] = fn(*args)
    except Exception as e:  # any failure is this check's verdict on this rank
        text = first_line(e) or type(e).__name__
        me["error"] = text.replace(f" ({me['where']})", "")  # data errors name the rank themselves
    return me


def listed(lines: list[str]) -> str:
    if len(lines) > SHOWN:
        lines = [*lines[:SHOWN], f"... and {len(lines) - SHOWN} more"]
    return "\n".join(lines)


def errors(found: list[dict]) -> list[str]:
    return [f"{f['where']}: {f['error']}" for f in found if "error" in f]


def verdict(section: str, check: str, found: list[dict], passed: str) -> Row:
    """FAIL naming every rank whose finding is an error, else PASS saying `passed`."""
    bad = errors(found)
    return Row(section, check, FAIL, listed(bad)) if bad else Row(section, check, PASS, passed)


def ordered(rows: list[Row]) -> list[Row]:
    """The rows in the order of SECTIONS (the checks run in another)."""
    return sorted(rows, key=lambda r: SECTIONS.index(r.section))


def summary(rows: list[Row], seconds: float) -> tuple[int, str]:
    """(exit status, last line): 1 when a check failed."""
    checks = [r for r in rows if r.status != INFO]
    failed = [r for r in rows if r.status == FAIL]
    warned = [r for r in rows if r.status == WARN]
    warn = f", {len(warned)} warning(s)" if warned else ""
    if failed:
        names = "; ".join(f"{r.section} {r.check}" for r in failed)
        return 1, f"gandist-check: {len(failed)} of {len(checks)} checks FAILED ({names}){warn}, in {seconds:.1f} s"
    return 0, f"gandist-check: all {len(checks)} checks passed{warn}, in {seconds:.1f} s"


def plain(rows: list[Row]) -> str:
    """One line a row, for logs, pipes and grep."""
    width = max((len(r.check) for r in rows), default=0)
    out, last = [], None
    for r in ordered(rows):
        section = r.section if r.section != last else ""
        last = r.section
        first, *more = r.detail.splitlines() or [""]
        out.append(f"{PLAIN[r.status]:<5} {section:<11} {r.check:<{width}}  {first}".rstrip())
        out.extend(f"{'':<5} {'':<11} {'':<{width}}  {line}" for line in more)
    return "\n".join(out)


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=escape(title), title_justify="left", show_lines=False, expand=False)
    t.add_column("", no_wrap=True)
    t.add_column("section", style="bold", no_wrap=True)
    t.add_column("check", no_wrap=True)
    t.add_column("result", overflow="fold")
    last = None
    for r in ordered(rows):
        detail = escape(r.detail)  # "[Errno 30] ..." is text, not rich markup
        t.add_row(GLYPH[r.status], r.section if r.section != last else "", r.check,
                  f"[red]{detail}[/]" if r.status == FAIL else detail)
        last = r.section
    return t


def show(rows: list[Row], title: str, last_line: str, console: Console | None = None) -> None:
    """Print the table (rank 0 calls this)."""
    console = console or Console()
    if console.is_terminal:
        console.print(table(rows, title))
        console.print(f"[bold {'red' if 'FAILED' in last_line else 'green'}]{escape(last_line)}")
    else:
        print(title)
        print(plain(rows))
        print(last_line, flush=True)


def as_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in ordered(rows)]
