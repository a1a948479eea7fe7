# roomrec — the two commands of the quick start are `make demo` and `make test`.
# Both install what they need: hack/testbed.sh builds the pinned Kubernetes components, etcd,
# helm and the S3 server from Go modules (cached in ~/.cache/roomrec, keyed by version) and
# installs ffmpeg, nginx-rtmp and Prometheus from Debian.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: help testbed test test-testbed lint demo bench testbed-up clean-cache

help:
	@echo "make demo         a RecordingJob end to end on the local test bed (operator, worker, S3)"
	@echo "make test         install the test bed, then run every test and the linters"
	@echo "make testbed      only install/build the test bed's pinned components"
	@echo "make testbed-up   keep a test bed running for development (see docs/testing.md)"
	@echo "make bench        run the benchmarks (results go to docs/benchmarks.md)"
	@echo "make lint         cargo fmt --check and clippy -D warnings over the workspace"
	@echo "make test-testbed only the test bed's own smoke tests"
	@echo "make clean-cache  remove ~/.cache/roomrec (the test bed's builds, CI's cargo target)"

# Prints nothing but the bin directory on stdout; progress goes to stderr.
testbed:
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup" >&2; exit 1; }
	@command -v go >/dev/null || { echo "go is missing: the test bed builds Kubernetes from Go modules" >&2; exit 1; }
	@bash hack/testbed.sh >/dev/null

TESTBED_ENV = ROOMREC_TESTBED_BIN="$$(bash hack/testbed.sh --print)"

test: testbed lint
	$(TESTBED_ENV) $(CARGO) test --workspace --all-targets --locked

# One test target against the bed, e.g. `make test-testbed`.
test-testbed: testbed
	$(TESTBED_ENV) $(CARGO) test --locked -p roomrec-testbed --test testbed

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

testbed-up: testbed
	$(TESTBED_ENV) $(CARGO) run --locked -p roomrec-testbed -- up

demo:
	bash hack/demo.sh

bench: testbed
	python3 hack/bench.py $(BENCH_ARGS)
	python3 hack/bench_cluster.py $(BENCH_CLUSTER_ARGS)
	python3 hack/bench_long.py $(BENCH_LONG_ARGS)

clean-cache:
	rm -rf "$${ROOMREC_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/roomrec}"
