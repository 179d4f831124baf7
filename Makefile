# raftcache — developer entry points. `make run` and `make test` are the two set-up commands.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The stamp is keyed on the dependency files: editing either re-installs on the next target.
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)
STAMP := $(VENV)/.stamp-$(DEPS_HASH)
PYTEST_ARGS ?=

.PHONY: venv run test lint format sweep soak bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.stamp-*
	@touch $@

run: $(STAMP)
	$(VENV)/bin/raftcache cluster --nodes 3 --base-port 8001 --data-dir ./data

test: $(STAMP) test-tools
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# System tools some tests drive: redis-cli/redis-benchmark (against --resp-port) and libfaketime
# (clock-jump faults). Installed from Debian when missing and possible (root or sudo); otherwise
# those tests skip and say why.
.PHONY: test-tools
test-tools:
	@if ! command -v redis-cli >/dev/null || ! ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-tools libfaketime) >/dev/null 2>&1 \
		|| echo "note: redis-tools/libfaketime not installable here; their tests will skip"; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

# Longer chaos sweep over many seeds (SEEDS=N to choose how many): the slow-marked sweeps
# (500 seeds by default), then the multi-group simulations `make test` runs over a few seeds
# (marked `sweep`; 50 seeds by default: about 14 s a seed for the six of them, half of it the
# joins-and-leaves one). One seed alone: RAFTCACHE_SEED=N pytest tests/store/test_joins_leaves_sim.py.
sweep: $(STAMP)
	RAFTCACHE_SWEEP_SEEDS=$${SEEDS:-500} HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m slow $(PYTEST_ARGS)
	RAFTCACHE_SWEEP_SEEDS=$${SEEDS:-50} HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m "sweep and not slow" $(PYTEST_ARGS)

# Side-by-side benchmarks (benchmarks/README.md). bench-deps installs the peers and tools the
# benchmark needs and nothing the product needs: etcd-server and wrk from Debian, and
# benchmarks/requirements.txt (PySyncObj, matplotlib, py-spy) into .venv.
.PHONY: bench-deps
bench-deps: $(STAMP)
	@if ! command -v wrk >/dev/null || ! command -v etcd >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q etcd-server wrk; \
	fi
	$(PY) -m pip install -q -r benchmarks/requirements.txt

# BENCH_DURATION=10 BENCH_REPS=3 by default; BENCH_QUICK=1 for a smoke run of a few minutes.
bench: bench-deps
	$(PY) -m benchmarks.run

# Issue 14, alone: writes over G = 1, 2, 4, 16 data groups on 3 stores pinned to cores (≈ 3 min,
# results/scaling.*), and RSS per store with 1 M keys over 6 stores of 2 groups vs 3 one-group
# nodes (≈ 2 min, results/memory-shards.*). `make bench` runs the scaling section too.
.PHONY: bench-scaling bench-memory-shards
bench-scaling: bench-deps
	$(PY) -m benchmarks.scaling

bench-memory-shards: $(STAMP)
	$(PY) -m benchmarks.memory_shards

# Fault-injection soak on real processes: SOAK_SECONDS (600), SOAK_NODES (3), SOAK_SEED (random).
soak: $(STAMP)
	$(PY) -m raftcache.testing.soak --seconds $${SOAK_SECONDS:-600} --nodes $${SOAK_NODES:-3} $${SOAK_SEED:+--seed $$SOAK_SEED}

# The lease soak (issue 12): consistency=lease reads checked strictly (no clock jumps), under
# transfer, transfer-partition, transfer-pause, clock-drift(-leader), peers(-leader), partition,
# isolate-leader, kill(-leader), pause(-leader); half the windows mix two faults. Same knobs;
# test-tools brings libfaketime (the drift nemeses are left out without it).
.PHONY: soak-lease
soak-lease: $(STAMP) test-tools
	$(PY) -m raftcache.testing.soak --seconds $${SOAK_SECONDS:-600} --nodes $${SOAK_NODES:-3} $${SOAK_SEED:+--seed $$SOAK_SEED} --nemeses lease --clock off --mix-ratio 0.5

# The dashboard in headless Chromium (tests/dashboard/test_browser.py). Installs Debian's chromium
# when missing (never a browser download of playwright's own), and playwright into .venv while
# the dev extra lacks it; RAFTCACHE_REQUIRE_BROWSER=1 makes a missing browser a failure, not a
# skip. Screenshots land in tests/dashboard/artifacts/.
.PHONY: browser-test
browser-test: $(STAMP)
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; \
	fi
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install -q 'playwright==1.65.2'
	RAFTCACHE_REQUIRE_BROWSER=1 RAFTCACHE_ARTIFACTS_DIR=tests/dashboard/artifacts \
		$(PY) -m pytest -q tests/dashboard/test_browser.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
