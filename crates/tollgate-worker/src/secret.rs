//! Secrets in the configuration: which pass-through librdkafka settings hold one (passwords,
//! SASL/OAuth secrets and tokens, private keys and their passphrases), and their values kept
//! out of the configuration's `Debug` output and serialised form. The binary also redacts
//! every secret value from its log output (`crates/tollgate/src/redact.rs`), which covers
//! librdkafka's own debug lines.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::WorkerConfig;

/// What a secret value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Whether a librdkafka setting holds a secret: `sasl.password`, `ssl.key.password`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`
/// (may embed a token), `ssl.key.pem` (a private key), `sasl.jaas.config`, ...
pub fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "passphrase", "jaas"].iter().any(|word| key.contains(word))
        || key == "ssl.key.pem"
        || key == "sasl.oauthbearer.config"
}

/// The settings with every secret value replaced by [`REDACTED`].
pub fn redacted(settings: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    settings.iter().map(|(k, v)| (k.as_str(), if is_sensitive(k) { REDACTED } else { v.as_str() })).collect()
}

/// The secret values among `settings` (non-empty), for redacting them from output.
pub fn values(settings: &BTreeMap<String, String>) -> Vec<String> {
    settings.iter().filter(|(k, v)| is_sensitive(k) && !v.is_empty()).map(|(_, v)| v.clone()).collect()
}

/// Serialises librdkafka settings with their secrets redacted (a configuration dump).
pub fn serialize_redacted<S: serde::Serializer>(
    settings: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&redacted(settings), serializer)
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("transactional_id_prefix", &self.transactional_id_prefix)
            .field("processing_guarantee", &self.processing_guarantee)
            .field("batch_size", &self.batch_size)
            .field("commit_interval_ms", &self.commit_interval_ms)
            .field("catch_up_wait_ms", &self.catch_up_wait_ms)
            .field("retention_seconds", &self.retention_seconds)
            .field("max_future_seconds", &self.max_future_seconds)
            .field("kafka_timeout_ms", &self.kafka_timeout_ms)
            .field("topics", &self.topics)
            .field("librdkafka", &redacted(&self.librdkafka))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secrets() -> WorkerConfig {
        let settings = [
            ("sasl.username", "worker"),
            ("sasl.password", "hunter2-password"),
            ("ssl.key.password", "hunter2-key"),
            ("sasl.oauthbearer.client.secret", "hunter2-client"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----hunter2"),
            ("security.protocol", "SASL_SSL"),
        ];
        WorkerConfig {
            librdkafka: settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..WorkerConfig::default()
        }
    }

    #[test]
    fn the_debug_output_and_the_dump_of_a_config_show_no_secret() {
        let config = with_secrets();
        for shown in [format!("{config:?}"), format!("{config:#?}"), serde_json::to_string(&config).unwrap()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("SASL_SSL") && shown.contains("worker"), "{shown}");
            assert_eq!(shown.matches(REDACTED).count(), 4, "{shown}");
        }
    }

    #[test]
    fn lists_the_secret_values_to_redact() {
        let mut values = values(&with_secrets().librdkafka);
        values.sort();
        assert_eq!(values, ["-----BEGIN PRIVATE KEY-----hunter2", "hunter2-client", "hunter2-key", "hunter2-password"]);
        assert!(!is_sensitive("sasl.username") && !is_sensitive("ssl.ca.location"));
    }
}
