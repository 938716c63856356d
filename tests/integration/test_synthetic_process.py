"""The embedded dataset is a pure function of (seed, index): the same bytes in another process."""
from __future__ import annotations

import subprocess

from tests.conftest import PY, REPO, env
from tests.unit.data.test_synthetic import digest


def test_same_bytes_in_another_process():
    code = ("from tests.unit.data.test_synthetic import digest; print(digest(5, 30, 64, 3)); print(digest(5, 30, 32, 1))")
    p = subprocess.run([PY, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120, check=True)
    assert p.stdout.split() == [digest(5, 30, 64, 3), digest(5, 30, 32, 1)]
