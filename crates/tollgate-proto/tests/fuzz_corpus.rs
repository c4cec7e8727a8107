//! Replays the fuzz corpus (`fuzz/corpus/`) through the fuzz targets' own harness on stable,
//! so that every input the fuzzers kept (a crash once found among them) is checked on every
//! `cargo test`, without nightly or libFuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code, reason = "the harness's constants are for the fuzz targets")]
mod harness;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let files = corpus(target);
    for file in &files {
        let data = std::fs::read(file).unwrap();
        // A panic names the input; the harness's own assertions say what broke.
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} fails its fuzz target", file.display());
    }
    files.len()
}

#[test]
fn every_protobuf_corpus_input_is_decoded_or_refused_with_a_code() {
    assert!(replay("protobuf", harness::protobuf) >= 20, "the corpus lost its seeds");
}

#[test]
fn every_json_corpus_input_is_parsed_or_refused_with_a_code() {
    assert!(replay("json", harness::json) >= 9, "the corpus lost its seeds");
}
