//! The Kafka side of tollgate: consumer-group workers that rate call legs with
//! `tollgate-core`, keep per-tenant state in a compacted changelog, and commit with
//! at-least-once or exactly-once guarantees.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration ([`WorkerConfig`], topic names, guarantee).
//! - [`client`]: Kafka for the binary's commands (reachability, topic readers, an embedded
//!   cluster), so that the binary itself speaks none.
//! - [`kafka`]: librdkafka client settings, with the ones correctness depends on re-asserted.
//! - [`access`]: why Kafka cannot be used (unreachable, TLS, authentication, authorization),
//!   named, with an exit code per cause.
//! - [`partitioner`]: the Java client's murmur2 partitioner.
//! - [`record`]: consumed records as plain data.
//! - [`codec`]: protobuf and changelog encodings.
//! - [`batch`]: what a batch is made of and the order it is rated in.
//! - [`cancel`]: the token that ends a task's retries and backoffs at shutdown.
//! - [`reference`]: live reference tables and their loader.
//! - [`changelog`]: restoring a partition's state.
//! - [`states`]: the tenant states a partition owns, idle ones dormant as their record.
//! - [`partition`]: the single writer of one partition: batches, transactions, rollback.
//! - [`worker`]: group membership, rebalances, graceful shutdown.
//! - [`readiness`]: whether a worker is ready to rate (reference data, group, restored state).
//! - [`view`]: the committed state of the owned partitions, what the tenant API answers.
//! - [`ownership`]: the ownership topic: which worker owns which partition, at which address.
//! - [`secret`]: which settings hold secrets; the configuration's `Debug` and dump redact them.
//! - [`publish`]: producing inputs and reference data keyed and partitioned correctly.
//! - [`topics`]: the topic layout (`tollgate admin create-topics`).
//! - [`telemetry`]: metrics and logs, one function per event.
//! - [`verify`]: the invariant checker behind `tollgate verify`.
//! - `testing` (tests and the `test-support` feature): fixtures the end-to-end tests share.
//!
//! # Invariants
//!
//! - One partition task owns partition *p* of both input topics and of the changelog; only it
//!   reads or writes the state of the tenants that hash to *p*.
//! - No record is rated before the reference tables caught up with their topics, and no
//!   partition before its state was restored.
//! - A batch's changelog records and input offsets commit in one transaction of the
//!   partition's transactional id, in both guarantees (with the outputs under exactly-once;
//!   after the outputs were acknowledged under at-least-once); a failed batch is aborted,
//!   rolled back in memory and rated again from the same records.
//! - A new owner fences the previous one before restoring; a fenced task stops rating.
//! - Under at-least-once a batch's composition is in the changelog before its outputs, so a
//!   batch rated again gives byte-identical outputs.
//! - Bad input never stops a partition: it goes to the dead-letter topic.

pub mod access;
pub mod batch;
pub mod cancel;
pub mod catch_up;
pub mod changelog;
pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod ownership;
pub mod partition;
pub mod partitioner;
pub mod publish;
pub mod readiness;
pub mod record;
pub mod reference;
pub mod secret;
pub mod states;
pub mod telemetry;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod topics;
pub mod verify;
pub mod view;
pub mod worker;

pub use cancel::Cancel;
pub use config::{ProcessingGuarantee, WorkerConfig};
pub use error::Error;
pub use readiness::{Readiness, Status};
pub use reference::Tables;
pub use topics::{TopicKind, Topics};
pub use worker::{Assignment, Worker};
