# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(CURDIR)/node_modules/.bin:$(PATH)

PORT ?= 8080
# The browser tests' mock server; any free port.
TEST_PORT ?= 18181
WASM := pkg/runflow_kontext_bg.wasm
# The server build (feature `server`), which the Node entry loads: the browser's client plus
# what only servers need (verifyCallbackSignature).
SERVER_WASM := pkg/server/runflow_kontext_server_bg.wasm
# Debian's binaryen is too old for the reference-types code rustc emits; npm's is current.
WASM_OPT_FLAGS := -Oz --converge --enable-bulk-memory --enable-reference-types --enable-nontrapping-float-to-int \
	--enable-sign-ext --enable-mutable-globals --enable-multivalue --strip-debug --strip-producers
# A budget the CI holds, in gzip bytes of the .wasm + the JS (glue and snippets) bundled and
# minified (1 KB = 1000 bytes): 60 KB from issue 7; 62 KB with waiting by push (issue 13, 3.4 KB:
# the EventSource edge, the relay's discovery, events taken into the run); 66.5 KB with issue 14's
# outputs that expire and download() (2.0 KB), runMany, watch and the run store (JS, 1.0 KB), the
# shared 429 backoff (0.3 KB) and uploading a local image once (0.9 KB); 69 KB with one poller
# per run across tabs and `persist` (JS, js/durable.js: +2.9 KB; the upload table moved from the
# wasm to js/edge.js: -0.4 KB). Measured each time: see README, "Size".
SIZE_BUDGET ?= 69000
# Seconds each fuzz target runs in `make fuzz`.
FUZZ_SECONDS ?= 30

.PHONY: setup pkg devserver demo demo-push test test-native test-browser test-node test-package test-e2e test-matrix soak lint size clean bench fuzz

setup:
	@scripts/setup.sh

pkg: setup
	rm -rf pkg
	wasm-pack build --release --target web --out-dir pkg --no-pack
	wasm-opt $(WASM_OPT_FLAGS) $(WASM) -o $(WASM)
	wasm-pack build --release --target web --out-dir pkg/server --out-name runflow_kontext_server --no-pack -- --features server
	wasm-opt $(WASM_OPT_FLAGS) $(SERVER_WASM) -o $(SERVER_WASM)
	node scripts/package.mjs

devserver: setup
	cargo build --release -p runflow-devserver

demo: pkg devserver
	PORT=$(PORT) target/release/devserver

# The demo with the callback relay on (embedded mock): each run's end is pushed to the page,
# which says it waits by push and makes one GET per run instead of polling (docs/callbacks.md).
demo-push: pkg devserver
	PORT=$(PORT) PUBLIC_URL=http://127.0.0.1:$(PORT) RUNFLOW_CALLBACK_SECRETS=whsec_demo_local target/release/devserver

test: setup lint test-native test-browser test-node test-package size test-e2e test-matrix

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p runflow-kontext --target wasm32-unknown-unknown --all-targets -- -D warnings
	cargo clippy -p runflow-kontext --target wasm32-unknown-unknown --features server --all-targets -- -D warnings

test-native:
	cargo test --workspace

# MOCK_CORS=1: wasm-pack serves the test page from another port, so the mock must allow it.
test-browser: devserver
	MOCK_CORS=1 scripts/with-devserver.sh $(TEST_PORT) -- env MOCK_URL=http://127.0.0.1:$(TEST_PORT) \
		WASM_BINDGEN_TEST_TIMEOUT=300 wasm-pack test --headless --chrome --release

test-node: pkg devserver
	scripts/with-devserver.sh $(TEST_PORT) -- env MOCK_URL=http://127.0.0.1:$(TEST_PORT) node --test tests/node/

# npm pack, then the examples installed from the tarball, type-checked, built and run.
test-package: pkg devserver
	node --test tests/package/

size: pkg
	@node scripts/size.mjs $(SIZE_BUDGET)

test-e2e: pkg devserver
	node --test tests/e2e/

# The fault matrix: every operation × fault × upstream of tests/matrix/cells.json in headless
# Chromium (docs/reliability.md is rendered from the same data: `node tests/matrix/render.mjs`).
test-matrix: pkg devserver
	node --test --test-reporter=spec tests/matrix/

# The soak (issue 11, not part of `make test`): SOAK_RUNS runs (default 1000) through one client in
# headless Chromium, 8 at a time, 5 % of them with a seeded fault of the matrix's kinds; asserts every
# call settles, no duplicate run, no page error, wasm memory flat. SOAK_SEED (default 11) picks the
# faults. Report: target/soak/report.json. See tests/soak/soak.mjs.
soak: pkg devserver
	node tests/soak/soak.mjs

clean:
	cargo clean
	rm -rf pkg node_modules

# Size and speed against the peers and a hand-written fetch loop: target/bench/report.{md,json}.
bench: pkg devserver
	@command -v twiggy >/dev/null || cargo install --locked twiggy
	node benches/run.mjs

# libFuzzer over the core and the proxy rules, on nightly (its only use here): FUZZ_SECONDS per
# target (default 30), then the corpus minimised into fuzz/corpus/, which `make test-native`
# replays on stable. Crashes land in fuzz/artifacts/. See fuzz/run.sh.
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh
