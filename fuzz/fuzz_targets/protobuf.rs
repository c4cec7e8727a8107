//! Protobuf values of every topic the worker reads: the first byte picks the topic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::protobuf(data));
