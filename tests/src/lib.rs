//! Test support for tollgate's end-to-end scenarios (the scenarios themselves are in `tests/`).
//!
//! - [`broker`]: a real Apache Kafka broker (KRaft, one node) started from cached Maven Central
//!   jars, with fault injection and Kafka's own console consumer.

pub mod broker;
