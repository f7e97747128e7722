# Two entry points for a fresh machine: `make demo` and `make test`.
# Both set up a local virtual environment in .venv (torch pinned and installed first).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test setup system-deps lint typecheck unit benchmark screenshots clean

demo: setup
	$(BIN)/triage demo

test: setup system-deps  # ruff and mypy run inside the tests (tests/test_code_quality.py)
	$(BIN)/pytest

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Real components the integration tests use: Orthanc (the PACS) with its DICOMweb plugin,
# dcmtk (storescu, the modality), dicom3tools (dciodvfy, SR validation), PostgreSQL (the shared
# catalogue; the tests start their own server as the postgres user), Chromium (the browser the
# web page's tests drive through Playwright; never `playwright install`, which downloads).
# Installed with apt-get when missing.
system-deps:
	@missing=""; \
	command -v Orthanc >/dev/null || missing="$$missing orthanc"; \
	dpkg -s orthanc-dicomweb >/dev/null 2>&1 || missing="$$missing orthanc-dicomweb"; \
	command -v storescu >/dev/null || missing="$$missing dcmtk"; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy triage

unit: setup
	$(BIN)/pytest -m "not integration"

# the README's screenshots of the web worklist: the demo, driven by a real browser (Chromium)
screenshots: setup system-deps
	$(BIN)/python docs/screenshots.py

benchmark: setup system-deps
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
