"""A full disk on demand, for tests of what a failed save does (tests/integration/test_chaos.py): on
PYTHONPATH with GANDIST_TEST_ENOSPC_AT=N set, every torch.save into the checkpoint of step N being
written (checkpoints/.tmp-step_N) writes part of its bytes and then fails with ENOSPC, as a full disk
does.  Python imports sitecustomize at start-up, so this reaches the training processes that torchrun
starts; it does nothing without the variable."""
import os

_AT = os.environ.get("GANDIST_TEST_ENOSPC_AT")

if _AT:
    import errno

    import torch

    _save = torch.save

    def _full_disk_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and f".tmp-step_{int(_AT):08d}" in str(f):
            with open(f, "wb") as out:
                out.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return _save(obj, f, *args, **kwargs)

    torch.save = _full_disk_save
