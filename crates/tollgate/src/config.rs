//! Configuration, layered lowest priority first: built-in defaults, a TOML file, `TOLLGATE_*`
//! environment variables, then command-line flags. This is the only module that reads the
//! environment (and it does so only through the variables handed to [`Config::load`]).
//!
//! The file has two sections, `[worker]` (with `[worker.topics]` and `[worker.librdkafka]`)
//! and `[telemetry]`; see `deploy/tollgate.toml` and the README's configuration reference.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use tollgate_worker::TopicKind;
use tollgate_worker::{ProcessingGuarantee, WorkerConfig};

/// Everything the binary is configured with.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Worker and Kafka settings.
    pub worker: WorkerConfig,
    /// Logs and metrics.
    pub telemetry: Telemetry,
}

/// Logs and metrics.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Telemetry {
    /// Where `/metrics` is served (Prometheus text format); empty disables it.
    pub metrics_listen: String,
    /// Log filter (`tracing` env-filter syntax): `info`, `tollgate_worker=debug`, ...
    pub log: String,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry { metrics_listen: "127.0.0.1:9464".into(), log: "info".into(), log_format: LogFormat::Text }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only at a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's
    /// fields), for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<Self> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("log format must be text or json, got {other:?}"),
        }
    }
}

/// Connection flags shared by the subcommands that talk to Kafka.
#[derive(Clone, Debug, Default, clap::Args)]
///
/// Global: accepted before or after a nested subcommand (`tollgate admin fund
/// --bootstrap-servers ...` as well as `tollgate admin --bootstrap-servers ... fund`).
pub struct KafkaFlags {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the file and TOLLGATE_BOOTSTRAP_SERVERS).
    #[arg(long, value_name = "HOST:PORT,...", global = true)]
    pub bootstrap_servers: Option<String>,
    /// Consumer group id.
    #[arg(long, global = true)]
    pub group_id: Option<String>,
    /// A librdkafka setting, repeatable: `-X security.protocol=SASL_SSL`.
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    pub librdkafka: Vec<String>,
}

/// Flags of `tollgate run`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RunFlags {
    /// `at_least_once` or `exactly_once`.
    #[arg(long, value_name = "GUARANTEE")]
    pub processing_guarantee: Option<String>,
    /// Address for `/metrics`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Log filter.
    #[arg(long)]
    pub log: Option<String>,
    /// `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// Whether `TOLLGATE_<name>` is one of the variables Kubernetes injects into every pod for a
/// Service named `tollgate` (`TOLLGATE_SERVICE_HOST`, `TOLLGATE_SERVICE_PORT[_<NAME>]`,
/// `TOLLGATE_PORT`, `TOLLGATE_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`): not settings, so not
/// refused. Every other unknown `TOLLGATE_*` variable still is, so typos fail fast.
fn injected_by_kubernetes(name: &str) -> bool {
    name.starts_with("SERVICE_HOST")
        || name.starts_with("SERVICE_PORT")
        || name == "PORT"
        || name.strip_prefix("PORT_").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

impl Config {
    /// Layers defaults, `file`, the `TOLLGATE_*` variables among `env`, and the flags.
    pub fn load(
        kafka: &KafkaFlags,
        run: &RunFlags,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut config = match &kafka.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        for (key, value) in env {
            if let Some(name) = key.strip_prefix("TOLLGATE_").filter(|name| !injected_by_kubernetes(name)) {
                config.set_env(name, &value).with_context(|| format!("invalid environment variable {key}"))?;
            }
        }
        let w = &mut config.worker;
        if let Some(v) = &kafka.bootstrap_servers {
            w.bootstrap_servers.clone_from(v);
        }
        if let Some(v) = &kafka.group_id {
            w.group_id.clone_from(v);
        }
        for setting in &kafka.librdkafka {
            let Some((k, v)) = setting.split_once('=') else { bail!("-X takes KEY=VALUE, got {setting:?}") };
            w.librdkafka.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        if let Some(v) = &run.processing_guarantee {
            w.processing_guarantee = parse_guarantee(v)?;
        }
        if let Some(v) = &run.metrics_listen {
            config.telemetry.metrics_listen.clone_from(v);
        }
        if let Some(v) = &run.log {
            config.telemetry.log.clone_from(v);
        }
        if let Some(v) = &run.log_format {
            config.telemetry.log_format = v.parse()?;
        }
        config.worker.validate().context("invalid worker configuration")?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("failed to read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("failed to parse config file {}", path.display()))
    }

    /// Applies one `TOLLGATE_<NAME>` variable.
    fn set_env(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let w = &mut self.worker;
        let number = |v: &str| v.parse::<u64>().with_context(|| format!("{v:?} is not a number"));
        match name {
            "CONFIG" => {} // read by the caller as the file path
            "BOOTSTRAP_SERVERS" => w.bootstrap_servers = value.to_owned(),
            "GROUP_ID" => w.group_id = value.to_owned(),
            "TRANSACTIONAL_ID_PREFIX" => w.transactional_id_prefix = value.to_owned(),
            "PROCESSING_GUARANTEE" => w.processing_guarantee = parse_guarantee(value)?,
            "BATCH_SIZE" => w.batch_size = number(value)? as usize,
            "COMMIT_INTERVAL_MS" => w.commit_interval_ms = number(value)?,
            "RETENTION_SECONDS" => w.retention_seconds = u32::try_from(number(value)?)?,
            "KAFKA_TIMEOUT_MS" => w.kafka_timeout_ms = number(value)?,
            "LEDGER_MOVEMENTS" => w.ledger_movements = value.parse().with_context(|| format!("{value:?} is not true or false"))?,
            "METRICS_LISTEN" => self.telemetry.metrics_listen = value.to_owned(),
            "LOG" => self.telemetry.log = value.to_owned(),
            "LOG_FORMAT" => self.telemetry.log_format = value.parse()?,
            other => {
                if let Some(key) = other.strip_prefix("LIBRDKAFKA_") {
                    // TOLLGATE_LIBRDKAFKA_SASL_MECHANISM -> sasl.mechanism
                    w.librdkafka.insert(key.to_ascii_lowercase().replace('_', "."), value.to_owned());
                } else if let Some(topic) = other.strip_prefix("TOPIC_") {
                    let kind = TopicKind::from_key(&topic.to_ascii_lowercase()).context("unknown topic variable")?;
                    w.topics[kind] = value.to_owned();
                } else {
                    bail!("unknown setting");
                }
            }
        }
        Ok(())
    }
}

fn parse_guarantee(value: &str) -> anyhow::Result<ProcessingGuarantee> {
    match value {
        "at_least_once" => Ok(ProcessingGuarantee::AtLeastOnce),
        "exactly_once" | "exactly_once_v2" => Ok(ProcessingGuarantee::ExactlyOnce),
        other => bail!("processing guarantee must be at_least_once or exactly_once, got {other:?}"),
    }
}

/// The logging of `tollgate demo`, which takes no configuration file: `TOLLGATE_LOG` (`warn`
/// by default, so that the progress bars stay readable) and `TOLLGATE_LOG_FORMAT`.
pub fn demo_logs(env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Telemetry> {
    let mut telemetry = Telemetry { log: "warn".into(), ..Telemetry::default() };
    for (key, value) in env {
        match key.as_str() {
            "TOLLGATE_LOG" => telemetry.log = value,
            "TOLLGATE_LOG_FORMAT" => {
                telemetry.log_format = value.parse().with_context(|| format!("invalid environment variable {key}"))?;
            }
            _ => {}
        }
    }
    Ok(telemetry)
}

/// The config file named by `--config`, else by `TOLLGATE_CONFIG`.
pub fn config_path(flag: Option<PathBuf>, env: impl IntoIterator<Item = (String, String)>) -> Option<PathBuf> {
    flag.or_else(|| env.into_iter().find(|(k, _)| k == "TOLLGATE_CONFIG").map(|(_, v)| PathBuf::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn layers_defaults_file_environment_and_flags_in_that_order() {
        let dir = std::env::temp_dir().join(format!("tollgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tollgate.toml");
        std::fs::write(
            &file,
            r#"
[worker]
bootstrap_servers = "file:9092"
group_id = "from-file"
batch_size = 100
processing_guarantee = "exactly_once"
[worker.topics]
call_legs = "legs.from.file"
[worker.librdkafka]
"security.protocol" = "SASL_SSL"
[telemetry]
log = "debug"
"#,
        )
        .unwrap();
        let kafka =
            KafkaFlags { config: Some(file), bootstrap_servers: Some("flag:9092".into()), ..Default::default() };
        let run = RunFlags { metrics_listen: Some("127.0.0.1:1".into()), ..Default::default() };
        let config = Config::load(
            &kafka,
            &run,
            env(&[
                ("TOLLGATE_BOOTSTRAP_SERVERS", "env:9092"),
                ("TOLLGATE_GROUP_ID", "from-env"),
                ("TOLLGATE_LIBRDKAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("TOLLGATE_TOPIC_RATED_USAGE", "usage.from.env"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        let w = &config.worker;
        assert_eq!(w.bootstrap_servers, "flag:9092");
        assert_eq!(w.group_id, "from-env");
        assert_eq!(w.batch_size, 100);
        assert_eq!(w.commit_interval_ms, 100); // default
        assert_eq!(w.processing_guarantee, ProcessingGuarantee::ExactlyOnce);
        assert_eq!(w.topics[TopicKind::CallLegs], "legs.from.file");
        assert_eq!(w.topics[TopicKind::RatedUsage], "usage.from.env");
        assert_eq!(w.topics[TopicKind::State], "tollgate.state.v1");
        assert_eq!(w.librdkafka["security.protocol"], "SASL_SSL");
        assert_eq!(w.librdkafka["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(config.telemetry.log, "debug");
        assert_eq!(config.telemetry.metrics_listen, "127.0.0.1:1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_the_log_format_from_the_file_the_environment_and_the_flag() {
        let none = KafkaFlags::default();
        let parsed: Config = toml::from_str("[telemetry]\nlog_format = \"json\"\n").unwrap();
        assert_eq!(parsed.telemetry.log_format, LogFormat::Json);
        let config = Config::load(&none, &RunFlags::default(), env(&[])).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Text);
        let config = Config::load(&none, &RunFlags::default(), env(&[("TOLLGATE_LOG_FORMAT", "json")])).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
        let flag = RunFlags { log_format: Some("text".into()), ..RunFlags::default() };
        let config = Config::load(&none, &flag, env(&[("TOLLGATE_LOG_FORMAT", "json")])).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Text);
        let err = Config::load(&none, &RunFlags::default(), env(&[("TOLLGATE_LOG_FORMAT", "yaml")])).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid environment variable TOLLGATE_LOG_FORMAT: log format must be text or json, got \"yaml\""
        );
        let err = toml::from_str::<Config>("[telemetry]\nlog_format = \"JSON\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown variant `JSON`"), "{err}");
    }

    #[test]
    fn refuses_unknown_settings_and_bad_values() {
        let none = KafkaFlags::default();
        let run = RunFlags::default();
        let err = Config::load(&none, &run, env(&[("TOLLGATE_BATCH_SIZ", "1")])).unwrap_err();
        assert_eq!(format!("{err:#}"), "invalid environment variable TOLLGATE_BATCH_SIZ: unknown setting");
        let err = Config::load(&none, &run, env(&[("TOLLGATE_PROCESSING_GUARANTEE", "maybe")])).unwrap_err();
        assert!(format!("{err:#}").contains("must be at_least_once or exactly_once"), "{err:#}");
        let err = Config::load(&none, &run, env(&[("TOLLGATE_BATCH_SIZE", "0")])).unwrap_err();
        assert!(format!("{err:#}").contains("batch_size must be > 0"), "{err:#}");
        let err: Result<Config, _> = toml::from_str("[worker]\nbatch = 3\n");
        assert!(err.unwrap_err().to_string().contains("unknown field `batch`"));
        let err = Config::load(&none, &run, env(&[("TOLLGATE_PORTS", "1")])).unwrap_err();
        assert_eq!(format!("{err:#}"), "invalid environment variable TOLLGATE_PORTS: unknown setting");
    }

    /// A Service named `tollgate` makes Kubernetes inject these into every pod of the
    /// namespace: they must not crash-loop the worker.
    #[test]
    fn ignores_the_variables_kubernetes_injects_for_a_service() {
        let injected = [
            ("TOLLGATE_SERVICE_HOST", "10.0.0.7"),
            ("TOLLGATE_SERVICE_PORT", "9464"),
            ("TOLLGATE_SERVICE_PORT_METRICS", "9464"),
            ("TOLLGATE_PORT", "tcp://10.0.0.7:9464"),
            ("TOLLGATE_PORT_9464_TCP", "tcp://10.0.0.7:9464"),
            ("TOLLGATE_PORT_9464_TCP_PROTO", "tcp"),
            ("TOLLGATE_PORT_9464_TCP_PORT", "9464"),
            ("TOLLGATE_PORT_9464_TCP_ADDR", "10.0.0.7"),
            ("TOLLGATE_GROUP_ID", "billing"),
        ];
        let config = Config::load(&KafkaFlags::default(), &RunFlags::default(), env(&injected)).unwrap();
        assert_eq!(config.worker.group_id, "billing");
    }
}
