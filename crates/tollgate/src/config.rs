//! Configuration, layered lowest priority first: built-in defaults, a TOML file, `TOLLGATE_*`
//! environment variables, then command-line flags. This is the only module that reads the
//! environment (the variables handed to [`Config::load`], and `TOLLGATE_CONFIG` through clap's
//! `env` on `--config`).
//!
//! The layering is figment's: each layer is a provider named after its source (so an error
//! says which file or variable it came from), merged in order and extracted into [`Config`],
//! whose `deny_unknown_fields` refuses unknown keys from every layer alike. The environment
//! needs no table of its own: `TOLLGATE_<KEY>` is the key of `[telemetry]` if that section has
//! it, else of `[worker]`; `TOLLGATE_TOPIC_<KEY>` a key of `[worker.topics]` (the topic
//! registry's); `TOLLGATE_LIBRDKAFKA_<KEY>` a librdkafka property (`_` for `.`). A value is
//! read as the type of the key's default (number, boolean, or string, verbatim).
//!
//! The file has two sections, `[worker]` (with `[worker.topics]` and `[worker.librdkafka]`)
//! and `[telemetry]`; see `deploy/tollgate.toml` and the README's configuration reference.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};
use tollgate_worker::{ProcessingGuarantee, WorkerConfig};

/// Everything the binary is configured with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Worker and Kafka settings.
    pub worker: WorkerConfig,
    /// Logs and metrics.
    pub telemetry: Telemetry,
}

/// Logs and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Telemetry {
    /// Where `/metrics` is served (Prometheus text format); empty disables it.
    pub metrics_listen: String,
    /// `host:port` at which the other workers reach this one's metrics port: announced with
    /// its partitions on the ownership topic, so that the tenant API forwards there. Empty:
    /// the address the port is bound to, or the host's name with the port when it is bound to
    /// every interface (0.0.0.0), which container networks resolve.
    pub advertised_address: String,
    /// Log filter (`tracing` env-filter syntax): `info`, `tollgate_worker=debug`, ...
    pub log: String,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
}

impl Telemetry {
    /// Refuses a log filter that would log less than asked without a word: the env-filter
    /// takes a bare word that is not a level for a target (`inof` logs only a target of that
    /// name, so nothing), and falls back on `info` for what it cannot parse.
    pub fn validate(&self) -> anyhow::Result<()> {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        for directive in self.log.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            // Levels by name or number (0 to 5), and span directives (`[span]`), stand alone.
            let level = LEVELS.contains(&directive.to_ascii_lowercase().as_str())
                || matches!(directive, "0" | "1" | "2" | "3" | "4" | "5");
            if !directive.contains('=') && !level && !directive.starts_with('[') {
                bail!(
                    "invalid log filter {:?}: {directive:?} is neither a level ({}) nor a target=level directive",
                    self.log,
                    LEVELS.join(", ")
                );
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map(drop)
            .map_err(|error| anyhow::anyhow!("invalid log filter {:?}: {error}", self.log))
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            metrics_listen: "127.0.0.1:9464".into(),
            advertised_address: String::new(),
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LogFormat {
    /// Human-readable lines (coloured only at a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's
    /// fields), for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be text or json, got {other:?}")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

tollgate_worker::serde_as_text!(LogFormat);

/// Connection flags shared by the subcommands that talk to Kafka.
#[derive(Clone, Debug, Default, clap::Args)]
///
/// Global: accepted before or after a nested subcommand (`tollgate admin fund
/// --bootstrap-servers ...` as well as `tollgate admin --bootstrap-servers ... fund`).
pub struct KafkaFlags {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE", global = true, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the file and TOLLGATE_BOOTSTRAP_SERVERS).
    #[arg(long, value_name = "HOST:PORT,...", global = true)]
    pub bootstrap_servers: Option<String>,
    /// The workers' consumer group (overrides the file and TOLLGATE_GROUP_ID): `run` joins it,
    /// `verify` reads its committed offsets, and every command that reads a topic names its own
    /// group after it (`<group>-<purpose>`, which ACLs may need); `produce` does not use it.
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
    pub processing_guarantee: Option<ProcessingGuarantee>,
    /// Address for `/metrics`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Log filter.
    #[arg(long)]
    pub log: Option<String>,
    /// `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Whether `TOLLGATE_<name>=<value>` is one of the variables Kubernetes injects into every pod
/// for a Service named `tollgate` (`TOLLGATE_SERVICE_HOST`, `TOLLGATE_SERVICE_PORT[_<NAME>]`,
/// `TOLLGATE_PORT`, `TOLLGATE_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`), or `tollgate-<x>`
/// (the same after `TOLLGATE_<X>_`: a Service `tollgate-api`, a Kafka cluster named
/// `tollgate`): not settings, so not refused. The value must look like what Kubernetes
/// writes there (an address, a port number, `tcp://…`, a protocol), so that a misspelt
/// setting of those shapes (`TOLLGATE_METRICS_PORT=0.0.0.0:9464`, say) is still refused, as
/// is every other unknown `TOLLGATE_*` variable: typos fail fast.
fn injected_by_kubernetes(name: &str, value: &str) -> bool {
    let address = || value.parse::<std::net::IpAddr>().is_ok();
    let port = || value.parse::<u16>().is_ok();
    let url = || ["tcp://", "udp://", "sctp://"].iter().any(|scheme| value.starts_with(scheme));
    let of_service = |rest: &str| match rest {
        "SERVICE_HOST" => address(),
        "PORT" => url(),
        _ if rest.starts_with("SERVICE_PORT") => port(),
        _ => rest.strip_prefix("PORT_").is_some_and(|tail| {
            let Some((number, proto)) = tail.split_once('_') else { return false };
            let proto_and_field = proto.split_once('_');
            number.parse::<u16>().is_ok()
                && match proto_and_field.map(|(_, field)| field) {
                    None => url(),
                    Some("PROTO") => ["tcp", "udp", "sctp"].contains(&value),
                    Some("PORT") => port(),
                    Some("ADDR") => address(),
                    Some(_) => false,
                }
        }),
    };
    // The service's own name may hold underscores (`tollgate-kafka-bootstrap`): each suffix
    // after one is tried.
    of_service(name) || name.match_indices('_').any(|(at, _)| of_service(&name[at + 1..]))
}

/// The variables the project's own test harness reads (the Kafka jars' cache, keeping a test
/// broker's directory, the long soak, the Python interop test's virtual environment; README,
/// "Tests"): not settings either, and a developer who exported one must still be able to run
/// the binary in the same shell.
const TEST_HARNESS: [&str; 4] = ["KAFKA_LIBS", "KEEP_BROKER", "SOAK", "INTEROP_VENV"];

/// One layer of the configuration: values at their paths, and where they came from.
struct Layer {
    source: String,
    values: Dict,
}

impl Layer {
    fn new(source: impl Into<String>) -> Layer {
        Layer { source: source.into(), values: Dict::new() }
    }

    /// Sets the value at `path` (`["worker", "librdkafka", "sasl.mechanism"]`).
    fn set(&mut self, path: &[&str], value: Value) {
        let Some((last, parents)) = path.split_last() else { return };
        let mut dict = &mut self.values;
        for key in parents {
            let entry = dict.entry((*key).to_owned()).or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            let Value::Dict(_, next) = entry else { return };
            dict = next;
        }
        dict.insert((*last).to_owned(), value);
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.source.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

impl Config {
    /// Layers defaults, the file, the process's `TOLLGATE_*` variables, and the flags.
    pub fn load(kafka: &KafkaFlags, run: &RunFlags) -> anyhow::Result<Config> {
        Config::load_with_env(kafka, run, std::env::vars())
    }

    /// Layers defaults, the file, the `TOLLGATE_*` variables among `env`, and the flags.
    pub fn load_with_env(
        kafka: &KafkaFlags,
        run: &RunFlags,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut figment = Figment::from(defaults()?);
        if let Some(path) = &kafka.config {
            figment = figment.merge(file(path)?);
        }
        figment = environment(figment, env)?.merge(flags(kafka, run)?);
        let config: Config = figment.extract().map_err(describe)?;
        config.worker.validate().map_err(invalid_worker)?;
        config.telemetry.validate()?;
        Ok(config)
    }
}

/// The built-in defaults as a layer.
fn defaults() -> anyhow::Result<Layer> {
    let mut layer = Layer::new("built-in defaults");
    let Value::Dict(_, values) = Value::serialize(Config::default()).context("unserializable defaults")? else {
        bail!("the defaults are not a table")
    };
    layer.values = values;
    Ok(layer)
}

/// A TOML file as a layer.
fn file(path: &Path) -> anyhow::Result<Layer> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("failed to parse config file {}", path.display()))?;
    let mut layer = Layer::new(format!("config file {}", path.display()));
    if let Value::Dict(_, values) = Value::serialize(table).context("unrepresentable TOML")? {
        layer.values = values;
    }
    Ok(layer)
}

/// One layer per `TOLLGATE_*` variable (so that an error names the variable), merged over
/// `figment`.
fn environment(mut figment: Figment, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Figment> {
    let defaults = Value::serialize(Config::default()).context("unserializable defaults")?;
    let mut variables: Vec<(String, String)> =
        env.into_iter().filter(|(key, _)| key.starts_with("TOLLGATE_")).collect();
    variables.sort();
    for (key, value) in variables {
        let name = &key["TOLLGATE_".len()..];
        // CONFIG names the file (clap reads it for --config).
        if name == "CONFIG" || injected_by_kubernetes(name, &value) || TEST_HARNESS.contains(&name) {
            continue;
        }
        let path: Vec<String> = if let Some(property) = name.strip_prefix("LIBRDKAFKA_") {
            // TOLLGATE_LIBRDKAFKA_SASL_MECHANISM -> sasl.mechanism
            vec!["worker".into(), "librdkafka".into(), property.to_ascii_lowercase().replace('_', ".")]
        } else if let Some(topic) = name.strip_prefix("TOPIC_") {
            vec!["worker".into(), "topics".into(), topic.to_ascii_lowercase()]
        } else {
            let key = name.to_ascii_lowercase();
            let section = if defaults.find_ref(&format!("telemetry.{key}")).is_some() { "telemetry" } else { "worker" };
            vec![section.into(), key]
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let default = defaults.find_ref(&path.join("."));
        let mut layer = Layer::new(format!("environment variable {key}"));
        layer.set(&path, typed_like(default, value));
        figment = figment.merge(layer);
    }
    Ok(figment)
}

/// An environment value as the type of the key's default: a number or a boolean when the
/// default is one and the text parses as one; otherwise the text itself (so `group_id=007`
/// stays `007`, and `batch_size=many` is reported as not a number). A key whose default is
/// unset (`commit_interval_ms`: the guarantee decides) holds a number when set: its text is
/// read as one when it is one.
fn typed_like(default: Option<&Value>, text: String) -> Value {
    match default {
        Some(Value::Num(..) | Value::Empty(..)) => text.parse::<u64>().map_or_else(|_| Value::from(text), Value::from),
        Some(Value::Bool(..)) => text.parse::<bool>().map_or_else(|_| Value::from(text), Value::from),
        _ => Value::from(text),
    }
}

/// The flags that were given, as the last layer.
fn flags(kafka: &KafkaFlags, run: &RunFlags) -> anyhow::Result<Layer> {
    let mut layer = Layer::new("command-line flags");
    let text = |v: &String| Value::from(v.clone());
    let given = [
        (&["worker", "bootstrap_servers"][..], kafka.bootstrap_servers.as_ref().map(text)),
        (&["worker", "group_id"], kafka.group_id.as_ref().map(text)),
        (&["worker", "processing_guarantee"], run.processing_guarantee.map(|g| Value::from(g.to_string()))),
        (&["telemetry", "metrics_listen"], run.metrics_listen.as_ref().map(text)),
        (&["telemetry", "log"], run.log.as_ref().map(text)),
        (&["telemetry", "log_format"], run.log_format.map(|f| Value::from(f.to_string()))),
    ];
    for (path, value) in given {
        if let Some(value) = value {
            layer.set(path, value);
        }
    }
    let mut librdkafka = BTreeMap::new();
    for setting in &kafka.librdkafka {
        let Some((k, v)) = setting.split_once('=') else { bail!("-X takes KEY=VALUE, got {setting:?}") };
        librdkafka.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    for (k, v) in librdkafka {
        layer.set(&["worker", "librdkafka", &k], Value::from(v));
    }
    Ok(layer)
}

/// A figment error as one line naming its source: `invalid environment variable
/// TOLLGATE_BATCH_SIZ: unknown setting `batch_siz` (the settings here: ...)`.
fn describe(error: figment::Error) -> anyhow::Error {
    let source = error.metadata.as_ref().map_or_else(|| "configuration".to_owned(), |m| m.name.to_string());
    let key = error.path.join(".");
    // serde's own wording nests its quotes in figment's ("expected `one of `a`, `b``").
    let what = match &error.kind {
        figment::error::Kind::UnknownField(found, known) => {
            format!("unknown setting `{found}` (the settings here: {})", known.join(", "))
        }
        kind => kind.to_string(),
    };
    if source.starts_with("environment variable") || key.is_empty() {
        anyhow::anyhow!("invalid {source}: {what}")
    } else {
        anyhow::anyhow!("invalid {source}: {key}: {what}")
    }
}

/// A worker setting's refusal, said once: its error already says "invalid configuration".
pub(crate) fn invalid_worker(error: tollgate_worker::Error) -> anyhow::Error {
    match error {
        tollgate_worker::Error::Config(why) => anyhow::anyhow!("invalid worker configuration: {why}"),
        other => anyhow::Error::from(other).context("invalid worker configuration"),
    }
}

/// The logging of `tollgate demo`, which takes no configuration file: `TOLLGATE_LOG` (`warn`
/// by default, so that the progress bars stay readable) and `TOLLGATE_LOG_FORMAT`.
pub fn demo_logs() -> anyhow::Result<Telemetry> {
    let logs = std::env::vars().filter(|(key, _)| key == "TOLLGATE_LOG" || key == "TOLLGATE_LOG_FORMAT");
    let mut quiet = Layer::new("the demo's defaults");
    quiet.set(&["telemetry", "log"], Value::from("warn".to_owned()));
    let figment = environment(Figment::from(defaults()?).merge(quiet), logs)?;
    let config: Config = figment.extract().map_err(describe)?;
    config.telemetry.validate()?;
    Ok(config.telemetry)
}

#[cfg(test)]
mod tests {
    use tollgate_worker::TopicKind;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// A file in a directory of its own (removed by the test).
    fn temp_file(name: &str, text: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tollgate-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    #[test]
    fn layers_defaults_file_environment_and_flags_in_that_order() {
        let (dir, file) = temp_file(
            "tollgate.toml",
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
        );
        let kafka =
            KafkaFlags { config: Some(file), bootstrap_servers: Some("flag:9092".into()), ..Default::default() };
        let run = RunFlags { metrics_listen: Some("127.0.0.1:1".into()), ..Default::default() };
        let config = Config::load_with_env(
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
        // Not set: exactly-once's own.
        assert_eq!((w.commit_interval_ms, w.commit_interval()), (None, std::time::Duration::from_millis(100)));
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
        let config = Config::load_with_env(&none, &RunFlags::default(), env(&[])).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Text);
        let config =
            Config::load_with_env(&none, &RunFlags::default(), env(&[("TOLLGATE_LOG_FORMAT", "json")])).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
        let flag = RunFlags { log_format: Some(LogFormat::Text), ..RunFlags::default() };
        let config = Config::load_with_env(&none, &flag, env(&[("TOLLGATE_LOG_FORMAT", "json")])).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Text);
        let err =
            Config::load_with_env(&none, &RunFlags::default(), env(&[("TOLLGATE_LOG_FORMAT", "yaml")])).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid environment variable TOLLGATE_LOG_FORMAT: log format must be text or json, got \"yaml\""
        );
        let err = toml::from_str::<Config>("[telemetry]\nlog_format = \"JSON\"\n").unwrap_err();
        assert!(err.to_string().contains("log format must be text or json, got \"JSON\""), "{err}");
    }

    #[test]
    fn refuses_unknown_settings_and_bad_values() {
        let none = KafkaFlags::default();
        let run = RunFlags::default();
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_BATCH_SIZ", "1")])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(
                "invalid environment variable TOLLGATE_BATCH_SIZ: unknown setting `batch_siz` (the settings here: \
                 bootstrap_servers, group_id,"
            ),
            "{err:#}"
        );
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_PROCESSING_GUARANTEE", "maybe")])).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid environment variable TOLLGATE_PROCESSING_GUARANTEE: \
             processing guarantee must be at_least_once or exactly_once, got \"maybe\""
        );
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_BATCH_SIZE", "0")])).unwrap_err();
        assert_eq!(format!("{err:#}"), "invalid worker configuration: batch_size must be > 0");
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_MAX_FUTURE_SECONDS", "172800")])).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid worker configuration: max_future_seconds must be less than retention_seconds"
        );
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_BATCH_SIZE", "many")])).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid environment variable TOLLGATE_BATCH_SIZE: invalid type: found string \"many\", expected usize"
        );
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_TOPIC_CALL_LEG", "x")])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(
                "invalid environment variable TOLLGATE_TOPIC_CALL_LEG: unknown setting `call_leg` (the settings here:"
            ),
            "{err:#}"
        );
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_PORTS", "1")])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("invalid environment variable TOLLGATE_PORTS: unknown setting `ports`"),
            "{err:#}"
        );
        let (dir, file) = temp_file("unknown.toml", "[worker]\nbatch = 3\n");
        let with_file = KafkaFlags { config: Some(file.clone()), ..KafkaFlags::default() };
        let err = Config::load_with_env(&with_file, &run, env(&[])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!(
                "invalid config file {}: worker.batch: unknown setting `batch` (the settings here: bootstrap_servers,",
                file.display()
            )),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A misspelt secret setting is refused by name: librdkafka quotes the value of a setting
    /// it does not know, and `sasl.passwrod` is not known to hold a secret.
    #[test]
    fn refuses_an_unknown_librdkafka_setting_without_its_value() {
        let none = KafkaFlags::default();
        let run = RunFlags::default();
        let vars = env(&[("TOLLGATE_LIBRDKAFKA_SASL_PASSWROD", "hunter2-secret")]);
        let err = Config::load_with_env(&none, &run, vars).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid worker configuration: librdkafka setting sasl.passwrod: \
             No such configuration property: \"sasl.passwrod\""
        );
        let vars = env(&[("TOLLGATE_LIBRDKAFKA_LINGER_MS", "soon")]);
        let err = Config::load_with_env(&none, &run, vars).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid worker configuration: librdkafka setting linger.ms: \
             Invalid value for configuration property \"queue.buffering.max.ms\""
        );
    }

    /// A log filter with a word that is not a level is refused: the env-filter would take it
    /// for a target and log nothing else.
    #[test]
    fn refuses_a_log_filter_that_would_log_nothing() {
        let none = KafkaFlags::default();
        let run = RunFlags::default();
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_LOG", "inof")])).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid log filter \"inof\": \"inof\" is neither a level (trace, debug, info, warn, error, off) \
             nor a target=level directive"
        );
        let err = Config::load_with_env(&none, &run, env(&[("TOLLGATE_LOG", "info,tollgate=[[[")])).unwrap_err();
        assert!(format!("{err:#}").starts_with("invalid log filter \"info,tollgate=[[[\": "), "{err:#}");
        let ok = Config::load_with_env(&none, &run, env(&[("TOLLGATE_LOG", "WARN,tollgate_worker=debug")])).unwrap();
        assert_eq!(ok.telemetry.log, "WARN,tollgate_worker=debug");
        for filter in ["3", "[request]", "info,[batch]=debug"] {
            let ok = Config::load_with_env(&none, &run, env(&[("TOLLGATE_LOG", filter)])).unwrap();
            assert_eq!(ok.telemetry.log, filter);
        }
    }

    /// An environment value takes the type of its key's default: text stays text, verbatim.
    #[test]
    fn reads_environment_values_as_the_type_of_their_key() {
        let config = Config::load_with_env(
            &KafkaFlags::default(),
            &RunFlags::default(),
            env(&[
                ("TOLLGATE_GROUP_ID", "007"),
                ("TOLLGATE_LIBRDKAFKA_SASL_PASSWORD", "000123"),
                ("TOLLGATE_BATCH_SIZE", "250"),
                ("TOLLGATE_COMMIT_INTERVAL_MS", "25"),
                ("TOLLGATE_LEDGER_MOVEMENTS", "true"),
                ("TOLLGATE_PROCESSING_GUARANTEE", "exactly_once_v2"),
                ("TOLLGATE_CONFIG", "/read/by/clap/for/--config"),
            ]),
        )
        .unwrap();
        let w = &config.worker;
        assert_eq!((w.group_id.as_str(), w.librdkafka["sasl.password"].as_str()), ("007", "000123"));
        assert_eq!((w.batch_size, w.ledger_movements), (250, true));
        assert_eq!(w.processing_guarantee, ProcessingGuarantee::ExactlyOnce);
        // A key whose default is unset is a number when its text is one.
        assert_eq!((w.commit_interval_ms, w.commit_interval()), (Some(25), std::time::Duration::from_millis(25)));
    }

    /// `deploy/tollgate.toml` is the configuration reference: it sets every key, each at its
    /// default (the Kubernetes ConfigMap carries the same text). A key whose default is unset
    /// (`commit_interval_ms`) is not serialized in the defaults, and the file leaves it
    /// commented out.
    #[test]
    fn the_reference_file_sets_every_key_at_its_default() {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/tollgate.toml"));
        let reference = KafkaFlags { config: Some(path.clone()), ..KafkaFlags::default() };
        let config = Config::load_with_env(&reference, &RunFlags::default(), env(&[])).unwrap();
        assert_eq!(config, Config::default());
        let text = std::fs::read_to_string(&path).unwrap();
        let file: toml::Table = toml::from_str(&text).unwrap();
        let defaults: toml::Table = toml::Table::try_from(Config::default()).unwrap();
        for (section, keys) in &defaults {
            for (key, value) in keys.as_table().unwrap() {
                match value.as_table() {
                    // [worker.librdkafka] is empty by default; [worker.topics] lists every topic.
                    Some(inner) => {
                        for topic in inner.keys() {
                            assert!(file[section][key].get(topic).is_some(), "{section}.{key}.{topic} missing");
                        }
                    }
                    None => assert!(file[section].get(key).is_some(), "{section}.{key} missing"),
                }
            }
        }
        let configmap = std::fs::read_to_string(path.with_file_name("k8s/configmap.yaml")).unwrap();
        let embedded: String = configmap
            .split_once("  tollgate.toml: |\n")
            .unwrap()
            .1
            .lines()
            .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
            .collect();
        assert_eq!(embedded, text, "deploy/k8s/configmap.yaml differs from deploy/tollgate.toml");
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
            // A Service `tollgate-api`, and the bootstrap Service of a Kafka cluster named
            // `tollgate` (`tollgate-kafka-bootstrap`).
            ("TOLLGATE_API_SERVICE_HOST", "10.0.0.8"),
            ("TOLLGATE_API_SERVICE_PORT_HTTP", "80"),
            ("TOLLGATE_API_PORT", "tcp://10.0.0.8:80"),
            ("TOLLGATE_API_PORT_80_TCP_ADDR", "10.0.0.8"),
            ("TOLLGATE_KAFKA_BOOTSTRAP_SERVICE_HOST", "10.0.0.9"),
            ("TOLLGATE_KAFKA_BOOTSTRAP_PORT_9092_TCP", "tcp://10.0.0.9:9092"),
            ("TOLLGATE_GROUP_ID", "billing"),
            // And those of the test harness, which a developer's shell may have exported.
            ("TOLLGATE_KAFKA_LIBS", "/tmp/libs"),
            ("TOLLGATE_KEEP_BROKER", "1"),
            ("TOLLGATE_SOAK", "1"),
            ("TOLLGATE_INTEROP_VENV", "/tmp/venv"),
        ];
        let config = Config::load_with_env(&KafkaFlags::default(), &RunFlags::default(), env(&injected)).unwrap();
        assert_eq!(config.worker.group_id, "billing");
        // A misspelt setting is still refused, those shaped like an injected variable too.
        for (typo, setting) in [
            ("TOLLGATE_GROUP", "group"),
            ("TOLLGATE_METRICS_PORT", "metrics_port"),
            ("TOLLGATE_API_SERVICE_HOST", "api_service_host"),
        ] {
            let loaded =
                Config::load_with_env(&KafkaFlags::default(), &RunFlags::default(), env(&[(typo, "0.0.0.0:9464")]));
            let error = loaded.unwrap_err().to_string();
            assert!(error.contains(&format!("unknown setting `{setting}`")), "{typo}: {error}");
        }
    }
}
