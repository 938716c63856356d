"""gandist-train stops on a bad config before any work, with exit status 2."""
from __future__ import annotations

import subprocess


from tests.conftest import PY, REPO, env

QUICK = REPO / "configs" / "quickstart.yaml"


def test_cli_config_error_exits_before_any_work(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([PY, "-m", "gandist.train", "--config", str(QUICK), "train.steps=-1", f"output.dir={out}"],
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "train.steps" in p.stderr and "minimum" in p.stderr and "rank 0 on" in p.stderr
    assert not out.exists()  # nothing was created
