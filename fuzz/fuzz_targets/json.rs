//! The offline rater's JSON: an events line or a reference document, by the first byte.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::json(data));
