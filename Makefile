# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job on the embedded (synthetic) default
#   make test   set up .venv and run the linters (ruff check, ruff format --check, mypy) and the test suite
#
# torch/torchvision are pinned through constraints.txt (they install from local disk on our
# machines); pyproject.toml itself leaves them open for users.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hyperkd-installed
DEMO_OUT ?= demo

.PHONY: demo test test-lowest test-terratorch lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,stream]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hyperkd quickstart --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# The TerraTorch backbone (hyperkd.integrations.terratorch) against terratorch 1.2.11, in its own venv
# (terratorch pins its own stack; the default suite skips tests/test_terratorch.py without it).
test-terratorch:
	@test -x .venv-terratorch/bin/python || $(PYTHON) -m venv .venv-terratorch
	.venv-terratorch/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,terratorch]" terratorch==1.2.11
	.venv-terratorch/bin/python -m pytest -q -p no:cacheprovider tests/test_terratorch.py

# The suite against the lowest versions pyproject.toml allows (constraints-lowest.txt), in its own venv.
test-lowest:
	@test -x .venv-lowest/bin/python || $(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-lowest.txt -e ".[dev]"
	.venv-lowest/bin/pip check
	.venv-lowest/bin/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
