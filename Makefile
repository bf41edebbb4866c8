# opmap: two commands do all set-up on a fresh machine.
#   make rehearse  - create .venv if needed, then rehearse the paper's experiment on the twin
#   make test      - create .venv if needed, then ruff, import-linter and pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint rehearse bench soak soak-24h clean-venv tickit-env fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/stage_tree.py build/importlint

# tickit-devices (the SIMPLON conformance simulator) breaks in the project venv (its
# apischema imports tiled's graphql-core 3.3); the SIMPLON tests run it from its own venv.
tickit-env: $(STAMP)
	$(BIN)/python tests/devices/_simplon_servers.py

# the soak variants (marker `soak`) run in `make soak`; PYTEST_WORKERS test processes (xdist),
# each test file on one of them (its module fixtures built once)
PYTEST_WORKERS ?= 2
test: lint tickit-env
	$(BIN)/python -m pytest -m "not soak" -n $(PYTEST_WORKERS) --dist loadfile

# the long fault-injection variants (server killed twice in larger maps; an IOC or a DCU
# restarted and the map resumed); figures in build/soak.xml
soak: $(STAMP) tickit-env
	$(BIN)/python -m pytest -m soak -p no:randomly --junitxml=build/soak.xml

# issue 13 §9: a 24-hour-equivalent rehearsal (small maps, event-driven clock); RSS growth and
# open fds of the rehearsal and its Tiled server, figures in build/soak-24h.json (tools/soak.py)
soak-24h: $(STAMP)
	$(BIN)/python tools/soak.py --out build/soak-24h.json

rehearse: $(STAMP)
	$(BIN)/opmap rehearse $(REHEARSE_ARGS)

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

# schemathesis against the running server's OpenAPI for FUZZ_TIME seconds; not in `make test`.
FUZZ_TIME ?= 300
fuzz: $(STAMP)
	$(BIN)/python tools/fuzz_server.py --max-time $(FUZZ_TIME) --out build/fuzz

clean-venv:
	rm -rf $(VENV)
