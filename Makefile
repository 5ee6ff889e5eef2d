# The two commands: `make run` starts the whole stack on this machine, `make test` runs the
# whole test suite. Both install whatever is missing first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQS_HASH := $(shell cat requirements.txt requirements-dev.txt | md5sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQS_HASH)
# The browser tier's Node packages (tests/browser/package-lock.json), installed by `npm ci`; the
# stamp sits inside node_modules, which `npm ci` deletes first, so a changed lock file reinstalls.
BROWSER := tests/browser
NODE_STAMP := $(BROWSER)/node_modules/.installed-$(shell cat $(BROWSER)/package-lock.json | md5sum | cut -c1-12)

.PHONY: run test stop status image logs deps system-deps python-deps browser-deps lint format chaos bench cluster cluster-stop cluster-status

run: system-deps python-deps
	@bash support-files/dev/make-run.sh

stop:
	@bash support-files/dev/make-stop.sh

status:
	@bash support-files/supervisorctl.sh status || true

# The cluster topology on this machine (docs/operations.md#cluster-mode): 2 shards x 2 replicas of
# ClickHouse, ZooKeeper, Redis master + replica + 3 Sentinels, PostgreSQL, app nodes a and b.
cluster: system-deps python-deps
	@bash support-files/dev/make-cluster.sh

cluster-stop:
	@$(BIN)/python -m bench.cluster stop

cluster-status:
	@$(BIN)/python -m bench.cluster status

image: python-deps
	@bash support-files/build-image.sh

test: deps
	@bash support-files/dev/make-test.sh

# The fault suite (docs/reliability.md): 1,000 events/s through capture while workers, Gunicorn,
# Redis, ClickHouse and PostgreSQL are killed or stopped; fails if an accepted event was lost or
# duplicated. `make test` also runs its short form (python -m chaos --mode ci).
chaos: deps
	$(BIN)/python -m chaos --mode full

# The benchmark harness (docs/performance.md): the whole stack under supervisord on ports of its
# own, load from a separate process, bench/results/<timestamp>.json and .md. Single scenarios and
# options: BENCH_ARGS="single --runs 5" (python -m bench --help).
bench: deps
	@command -v wrk >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null; } \
		|| echo "bench: could not install wrk; the maximum rate falls back to the Python load generator"; }
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: python-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: python-deps
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make run` needs no Node packages (they are the browser tier's); `make test` installs them all.
deps: system-deps python-deps browser-deps

system-deps:
	@bash support-files/dev/install-system-deps.sh

python-deps: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "python-deps: installed requirements-dev.txt into $(VENV)"

# posthog-js, analytics.js, posthog-node and puppeteer-core, exactly as locked; then analytics.js
# bundled for the test page. puppeteer-core drives Debian's chromium (system-deps) and downloads
# no browser; the variables make sure nothing else tries to.
browser-deps: $(NODE_STAMP)

$(NODE_STAMP): $(BROWSER)/package.json $(BROWSER)/package-lock.json
	@cd $(BROWSER) && PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROMIUM_DOWNLOAD=1 \
		npm ci --no-audit --no-fund --loglevel=error
	@cd $(BROWSER) && npm run --silent build
	@touch $@
	@echo "browser-deps: installed $(BROWSER)/package-lock.json into $(BROWSER)/node_modules"
