//! Fixtures shared by this crate's unit tests and the end-to-end tests (`tests/`), so that both
//! rate against the same data. Built for `cargo test` and with the `test-support` feature only.

use tollgate_proto::v1;

/// A small reference data set: two USD tenants (acme warned below 5.00) and one EUR tenant, a
/// rate card per currency; acme's `dom` may dial out domestically only.
pub const REFERENCE: &str = r#"{
  "tenants": [
    {"tenantId": "acme", "currency": "USD", "creditsEnabled": true, "rateCardId": "usd", "lowBalanceThresholds": ["5.00"]},
    {"tenantId": "globex", "currency": "USD", "creditsEnabled": true, "rateCardId": "usd"},
    {"tenantId": "initech", "currency": "EUR", "creditsEnabled": true, "rateCardId": "eur"}
  ],
  "users": [
    {"tenantId": "acme", "userId": "ann", "usageLocation": "US", "licence": "LICENCE_MODEL_PAY_PER_MINUTE"},
    {"tenantId": "acme", "userId": "dom", "usageLocation": "US", "dialoutPolicy": "DIALOUT_POLICY_CPC_AND_PSTN_DOMESTIC"},
    {"tenantId": "globex", "userId": "gus", "usageLocation": "US"},
    {"tenantId": "initech", "userId": "ines", "usageLocation": "DE"}
  ],
  "rateCards": [
    {"rateCardId": "usd", "currency": "USD", "versions": [{"version": "v1", "effectiveFrom": "2026-01-01T00:00:00Z",
      "dialIn": [{"prefix": "1", "numberType": "NUMBER_TYPE_TOLL", "price": {"perMinute": "0.01"}}],
      "dialOut": [{"prefix": "1", "price": {"perMinute": "0.02"}}, {"prefix": "44", "price": {"perMinute": "0.04"}}]}]},
    {"rateCardId": "eur", "currency": "EUR", "versions": [{"version": "e1", "effectiveFrom": "2026-01-01T00:00:00Z",
      "dialOut": [{"prefix": "49", "price": {"perMinute": "0.03"}}, {"prefix": "44", "price": {"perMinute": "0.05"}}]}]}
  ]
}"#;

/// A US number (New York).
pub const US: &str = "+12128675309";
/// A UK number (London).
pub const GB: &str = "+442071838750";
/// A German number (Berlin).
pub const DE: &str = "+4930901820";

/// An acme credit event with `sequence` that moves no money (a low-balance warning): what a
/// test publishes to leave a gap in the sequence the checker expects.
pub fn acme_credit_event(sequence: u64) -> v1::CreditEvent {
    v1::CreditEvent {
        credit_event_id: format!("acme/credit/{sequence}"),
        tenant_id: "acme".into(),
        sequence,
        kind: v1::credit_event::Kind::LowBalance as i32,
        amount: "5.00".into(),
        currency: "USD".into(),
        balance_after: "4.99".into(),
        ..Default::default()
    }
}

/// The first id `<prefix>-<n>` that murmur2 puts on `partition` of `partitions`: a tenant (a
/// key) on a partition of a test's choosing.
pub fn key_on(prefix: &str, partition: i32, partitions: i32) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|key| crate::partitioner::partition_for(key.as_bytes(), partitions) == partition)
        .expect("murmur2 reaches every partition")
}
