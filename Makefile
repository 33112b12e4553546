# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(CURDIR)/node_modules/.bin:$(PATH)

PORT ?= 8080
# The browser tests' mock server; any free port.
TEST_PORT ?= 18181
WASM := pkg/runflow_kontext_bg.wasm
# Debian's binaryen is too old for the reference-types code rustc emits; npm's is current.
WASM_OPT_FLAGS := -Oz --converge --enable-bulk-memory --enable-reference-types --enable-nontrapping-float-to-int \
	--enable-sign-ext --enable-mutable-globals --enable-multivalue --strip-debug --strip-producers
# A budget the CI holds: 60 KB (as issue 7 and the reports count: 1 KB = 1000 bytes) of gzip of the
# .wasm + the JS (glue and snippets) bundled and minified.
SIZE_BUDGET ?= 60000

.PHONY: setup pkg devserver demo test test-native test-browser test-node test-package test-e2e test-matrix lint size clean bench fuzz

setup:
	@scripts/setup.sh

pkg: setup
	rm -rf pkg
	wasm-pack build --release --target web --out-dir pkg --no-pack
	wasm-opt $(WASM_OPT_FLAGS) $(WASM) -o $(WASM)
	node scripts/package.mjs

devserver: setup
	cargo build --release -p runflow-devserver

demo: pkg devserver
	PORT=$(PORT) target/release/devserver

test: setup lint test-native test-browser test-node test-package size test-e2e test-matrix

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p runflow-kontext --target wasm32-unknown-unknown --all-targets -- -D warnings

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

clean:
	cargo clean
	rm -rf pkg node_modules

# Size and speed against the peers and a hand-written fetch loop: target/bench/report.{md,json}.
bench: pkg devserver
	@command -v twiggy >/dev/null || cargo install --locked twiggy
	node benches/run.mjs

# libFuzzer over the core and the proxy rules, on nightly (the only use of it): each target runs
# FUZZ_SECONDS from fuzz/seeds/ (hand-written, kept as they are) and fuzz/corpus/ (minimised),
# then the corpus is minimised again with `cargo fuzz cmin` into fuzz/corpus/<target>/, which
# `make test-native` replays on stable (tests/fuzz_corpus.rs). Crashes land in fuzz/artifacts/.
FUZZ_SECONDS ?= 30
FUZZ_MAX_LEN ?= 4096
FUZZ_TARGETS := run_parsing error_envelope retry_after signature_header input_validation proxy_rules
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@cd fuzz && failed=""; for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target target/corpus/$$target; \
		echo "[fuzz] $$target for $(FUZZ_SECONDS) s"; \
		cargo +nightly fuzz run $$target target/corpus/$$target corpus/$$target seeds/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) -print_final_stats=1 \
			2>&1 | tee target/$$target.log | grep -E '^#[0-9]+ +(INITED|DONE)|^(==|SUMMARY|artifact_prefix|Test unit written)|stat::number_of_executed_units' \
			|| true; \
		grep -q 'Test unit written' target/$$target.log && failed="$$failed $$target"; \
		cp target/corpus/$$target/* corpus/$$target/ 2>/dev/null || true; \
		cargo +nightly fuzz cmin $$target corpus/$$target -- -max_len=$(FUZZ_MAX_LEN) >target/$$target.cmin.log 2>&1 \
			|| { echo "[fuzz] cmin of $$target failed: fuzz/target/$$target.cmin.log"; failed="$$failed $$target"; }; \
		echo "[fuzz] $$target: corpus $$(ls corpus/$$target | wc -l) files, $$(du -sk corpus/$$target | cut -f1) KB"; \
	done; \
	if [ -n "$$failed" ]; then echo "[fuzz] crashes in:$$failed (fuzz/artifacts/)"; exit 1; fi
