//! Test support for tollgate's end-to-end scenarios (the scenarios themselves are in `tests/`).
//!
//! - [`broker`]: a real Apache Kafka broker (KRaft, one node) started from cached Maven Central
//!   jars, with fault injection and Kafka's own console consumer.
//! - [`interop`]: tollgate's inputs produced by a client tollgate did not write (Python,
//!   confluent-kafka).
//! - [`fleet`]: `tollgate run` worker processes (kill -9, SIGSTOP, SIGTERM), their metrics,
//!   and the consumer group's progress.
//! - [`ports`]: loopback ports for the servers the tests start, leased across test processes.
//! - [`security`]: a broker with a SASL_SSL listener (SCRAM-SHA-512, a throwaway CA), the
//!   standard authorizer, and a principal with least-privilege ACLs per component.
//! - [`traffic`]: deterministic traffic for the fault suite, with the exact charges it must
//!   produce.

pub mod broker;
pub mod fleet;
pub mod interop;
pub mod ports;
pub mod security;
pub mod traffic;
