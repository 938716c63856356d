""".ci/gpu-check (make gpu-check) runs every test that skips without CUDA: its GPU_TESTS list holds each of them
by node id, and nothing else (a renamed or removed test would be collected as an error on the GPU machine)."""
from __future__ import annotations

import re

from tests.conftest import REPO

SCRIPT = REPO / ".ci" / "gpu-check"
# a decorator that skips its test when torch sees no GPU (the words split so that this file does not match)
SKIPS_WITHOUT_CUDA = re.compile(r"^@pytest\.mark\.skipif\(\s*not torch\." + r"cuda\.is_available\(\)", re.M)


def listed() -> list[str]:
    block = re.search(r"^GPU_TESTS=\(\n(.*?)^\)", SCRIPT.read_text(), re.M | re.S).group(1)
    return re.findall(r'^\s*"([^"]+)"', block, re.M)


def skipping_without_cuda() -> list[str]:
    """Node ids of the tests whose skipif says they need CUDA."""
    found = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        text = path.read_text()
        for m in SKIPS_WITHOUT_CUDA.finditer(text):
            name = re.search(r"^def (test_\w+)", text[m.end():], re.M).group(1)
            found.append(f"{path.relative_to(REPO)}::{name}")
    return found


def test_the_script_runs_exactly_the_tests_that_skip_without_cuda():
    needed = skipping_without_cuda()
    assert "tests/unit/training/test_host_syncs.py::test_on_a_gpu_ten_rounds_make_no_synchronising_call" in needed
    assert sorted(listed()) == sorted(needed), "update GPU_TESTS in .ci/gpu-check"


def test_the_makefile_target_runs_the_script():
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^gpu-check: install\n\tPY=\$\(PY\) bash \.ci/gpu-check$", make, re.M), make
    assert "gpu-check" in re.search(r"^\.PHONY:.*$", make, re.M).group(0)
