# entra.pim developer entry points. Everything installs itself into .venv on first use.
#   make demo   run the main job (onboarding/offboarding) against a local PIM sandbox
#   make test   lint, sanity, ansible-lint, unit, sandbox and integration tests
#   make bench  benchmarks against the sandbox (figures, never pass/fail on time)
#   make bench-sandbox  the sandbox's own requests/s

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COLLECTIONS := .tmp/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/entra/pim
SANITY_ROOT := .tmp/sanity/ansible_collections/entra/pim
ANSIBLE_TEST_GET_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py
SHARED_TOOLS ?= $(firstword $(wildcard ../shared/tools) $(wildcard /work/shared/tools))

export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/$(COLLECTIONS)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: all venv collection lint format unit sandbox-test integration sanity ansible-lint test demo bench bench-sandbox docs build clean test-hardening

all: test

$(STAMP): requirements.txt requirements-dev.txt emulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet -e emulator
	touch $@

venv: $(STAMP)

# Ansible finds the collection through a symlink, so edits are live without rebuilding.
collection:
	@mkdir -p $(dir $(COLLECTION_LINK))
	@ln -sfn $(CURDIR) $(COLLECTION_LINK)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: venv collection
	$(BIN)/pytest -q tests/unit

sandbox-test: venv collection
	$(BIN)/pytest -q tests/emulator

integration: venv collection
	tests/with-sandbox.sh $(BIN)/pytest -q tests/integration

# ansible-test wants a real ansible_collections/entra/pim directory (it resolves symlinks),
# so sanity runs on a copy of the collection's files; the sandbox and benchmarks are not
# part of the collection (galaxy.yml build_ignore) and are checked by ruff and pytest instead.
sanity: venv
	@test -f $(ANSIBLE_TEST_GET_PIP) || install -D -m 0644 $(SHARED_TOOLS)/ansible-test-get-pip.py $(ANSIBLE_TEST_GET_PIP)
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	git ls-files -co --exclude-standard | grep -Ev '^(emulator|bench|\.ci|tests/emulator)/' | xargs -d '\n' cp --parents -t $(SANITY_ROOT)/
	cd $(SANITY_ROOT) && git init -q && git add -A   # ansible-test lists files through git
	cd $(SANITY_ROOT) && $(CURDIR)/$(BIN)/ansible-test sanity --venv --python 3.11 --color no

ansible-lint: venv collection
	$(BIN)/ansible-lint

# Pytest runs last so its summary closes the output. Each worker starts (and always stops)
# its own sandbox on a free loopback port.
PYTEST := $(BIN)/pytest -q -p no:cacheprovider -n 2
test: lint sanity ansible-lint test-hardening
	$(PYTEST) tests/unit tests/emulator tests/integration tests/workflows

# The fault, bad-input and secrets matrices (issue 8), about 8 minutes on 2 idle cores. They
# import their own conftest by name, so they run in a pytest process of their own;
# --dist loadscope keeps each fault's (or module's) play on one worker.
test-hardening: venv collection
	rm -rf .tmp/hardening-results   # measured outcomes of this run, for tests/hardening/report.py
	$(PYTEST) --dist loadscope tests/hardening

demo: venv collection
	tests/with-sandbox.sh $(BIN)/ansible-playbook -i playbooks/inventory/localhost.yml playbooks/demo.yml

# HTML docsite with antsibull-docs. Offline, Sphinx cannot fetch intersphinx inventories, so
# warnings are not fatal here; ansible-doc rendering is what tests/workflows checks.
docs: venv collection
	rm -rf .tmp/docsite && mkdir -m 700 -p .tmp/docsite
	$(BIN)/antsibull-docs sphinx-init --use-current --dest-dir .tmp/docsite entra.pim
	sed -i 's/ -W --keep-going//' .tmp/docsite/build.sh
	cd .tmp/docsite && ./build.sh
	@echo "docsite: .tmp/docsite/build/html/index.html"

bench: venv collection
	$(BIN)/python bench/run.py

# The sandbox's own throughput (GET by id, schedule requests; 1 and 8 keep-alive clients).
bench-sandbox: venv
	$(BIN)/python emulator/bench_sandbox.py

build: venv
	$(BIN)/ansible-galaxy collection build --force --output-path .tmp/dist

clean:
	rm -rf .tmp $(VENV)
