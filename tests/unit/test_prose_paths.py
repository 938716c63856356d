"""Every repository path that the code, scripts, configs and README name in prose exists: a docstring or a comment
that sends a reader to a file that was moved or never written costs them the afternoon.  The tests themselves are
left out, since they name missing files on purpose (a config that does not exist, to check its error)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# a path that starts at one of the repository's top folders and ends in a file suffix; brace and <placeholder>
# patterns (configs/{gan,dcgan}_mnist.yaml, gandist/variants/<name>.py) are not single paths and do not match
PATH = re.compile(r"(?<![\w./<{$-])((?:gandist|slurm|launch|docker|configs|tests|\.ci)/[A-Za-z0-9_/.-]+"
                  r"\.(?:py|sh|yaml|yml|md|png|json|toml))")
SCANNED = ("gandist", "launch", "slurm", "docker", "configs", ".ci")


def named_paths() -> dict[str, set[str]]:
    files = [p for d in SCANNED for p in (REPO / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files += [REPO / "README.md", REPO / "Makefile", REPO / "pyproject.toml"]
    found: dict[str, set[str]] = {}
    for f in files:
        try:
            text = f.read_text()
        except UnicodeDecodeError:  # a PNG, say
            continue
        for m in PATH.finditer(text):
            found.setdefault(m.group(1).rstrip("."), set()).add(str(f.relative_to(REPO)))
    return found


def test_every_path_named_in_prose_exists():
    found = named_paths()
    assert len(found) > 50  # the scan really reads the prose (it names many files)
    missing = {p: sorted(where) for p, where in found.items() if not (REPO / p).exists()}
    assert not missing, f"paths named but not in the repository: {missing}"
