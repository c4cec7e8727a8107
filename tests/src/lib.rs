//! Test support for tollgate's end-to-end scenarios (the scenarios themselves are in `tests/`).
//!
//! - [`broker`]: a real Apache Kafka broker (KRaft, one node) started from cached Maven Central
//!   jars, with fault injection and Kafka's own console consumer.
//! - [`interop`]: tollgate's inputs produced by a client tollgate did not write (Python,
//!   confluent-kafka).

pub mod broker;
pub mod interop;
