//! Replays the fuzz targets' seeds (`fuzz/seeds/`: the sample, the hostile cases, any crash
//! once found) and corpus (`fuzz/corpus/`: what the fuzzers kept) through the targets' own
//! harness on stable, so that every one is checked on every `cargo test`, without nightly or
//! libFuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code, reason = "the harness's constants are for the fuzz targets")]
mod harness;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Runs every seed and corpus input of `target`; returns how many of each there were.
fn replay(target: &str, run: fn(&[u8])) -> (usize, usize) {
    let (seeds, corpus) = (inputs("seeds", target), inputs("corpus", target));
    for file in seeds.iter().chain(&corpus) {
        let data = std::fs::read(file).unwrap();
        // A panic names the input; the harness's own assertions say what broke.
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} fails its fuzz target", file.display());
    }
    (seeds.len(), corpus.len())
}

#[test]
fn every_protobuf_seed_and_corpus_input_is_decoded_or_refused_with_a_code() {
    let (seeds, corpus) = replay("protobuf", harness::protobuf);
    assert!(seeds >= 25 && corpus >= 1000, "{seeds} seeds, {corpus} corpus inputs");
}

#[test]
fn every_json_seed_and_corpus_input_is_parsed_or_refused_with_a_code() {
    let (seeds, corpus) = replay("json", harness::json);
    assert!(seeds >= 9 && corpus >= 1000, "{seeds} seeds, {corpus} corpus inputs");
}
