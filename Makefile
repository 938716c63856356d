# Two commands do everything:  `make demo` (install + train the quickstart)  and  `make test`.
# Both create or reuse the git-ignored virtualenv .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gandist-installed

.PHONY: install demo test test-unit bench bench-train gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is left unpinned: pip takes the newest release, which brings the torchvision it pairs with
	# (on GPU machines the usual CUDA builds; they also run on CPU).
	$(PY) -m pip install -e '.[dev]'
	$(PY) -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

install: $(STAMP)

# The demo is the quickstart config with the sngan variant (spectral-norm projection D, hinge loss), which draws
# every cell of its last grid as a recognisable shape; the file itself stays the plain DCGAN baseline that the
# tests and benchmarks measure.  Ten samples of each of the ten classes, a class a row.
demo: install
	$(PY) -m gandist.train --config configs/quickstart.yaml variant=sngan log.grid_size=100

# tests/unit: no subprocesses, a few minutes; tests/integration: real processes, signals, SLURM, Docker lint.
# .ci/system-deps installs SLURM's packages where it can (root with apt-get); where it can't, the SLURM tests
# skip with the reason (under CI=true they fail instead).
test: install
	bash .ci/system-deps
	$(PY) -m pytest tests/unit tests/integration

test-unit: install
	$(PY) -m pytest tests/unit

bench: install
	$(PY) -m gandist.bench data

# gandist's training round vs a plain PyTorch loop (python -m gandist.bench train --help); e.g.
#   make bench-train BENCH_ARGS="--variant wgan_gp --device cuda --precision bf16"
BENCH_ARGS ?= --variant dcgan --resolution 32 --batch-size 64 --steps 20 --warmup 3
bench-train: install
	$(PY) -m gandist.bench train $(BENCH_ARGS)

# Every check that needs a GPU, in one command (.ci/gpu-check: gandist-check on the GPU, the bench-train runs, the
# tests that skip without CUDA); without a GPU it runs what it can and says what it skipped and why.
gpu-check: install
	PY=$(PY) bash .ci/gpu-check

clean:
	rm -rf $(VENV) runs .pytest_cache
