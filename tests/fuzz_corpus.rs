//! Replays every input of the fuzz seeds and corpus (`fuzz/{seeds,corpus}/<target>/`) through the same harness the
//! libFuzzer targets run (`fuzz/harness.rs`), on stable, so `cargo test` keeps each regression
//! and seed input passing without a nightly toolchain.
#![cfg(not(target_arch = "wasm32"))]

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

/// Runs every file of `fuzz/seeds/<target>/` (hand-written) and `fuzz/corpus/<target>/` (what
/// `make fuzz` found, minimised) through `run`, naming the file that failed.
fn replay(target: &str, run: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in [
        fuzz.join("seeds").join(target),
        fuzz.join("corpus").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<_> = entries
            .map(|entry| entry.expect("a corpus entry").path())
            .filter(|path| path.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    assert!(!files.is_empty(), "no seeds nor corpus for {target}");
    for path in files {
        let data = std::fs::read(&path).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails ({} bytes: {:?})",
            path.display(),
            data.len(),
            String::from_utf8_lossy(&data)
        );
    }
}

#[test]
fn run_parsing() {
    replay("run_parsing", harness::run_parsing);
}

#[test]
fn error_envelope() {
    replay("error_envelope", harness::error_envelope);
}

#[test]
fn retry_after() {
    replay("retry_after", harness::retry_after);
}

#[test]
fn signature_header() {
    replay("signature_header", harness::signature_header);
}

#[test]
fn input_validation() {
    replay("input_validation", harness::input_validation);
}

#[test]
fn proxy_rules() {
    replay("proxy_rules", harness::proxy_rules);
}
