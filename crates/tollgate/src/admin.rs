//! `tollgate admin`: create the topics, publish reference data, fund a tenant.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use tollgate_proto::Message as _;
use tollgate_proto::v1;
use tollgate_worker::client::TopicReader;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::{TopicKind, WorkerConfig, topics};

use crate::config::{Config, KafkaFlags, RunFlags};

/// Arguments of `tollgate admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    kafka: KafkaFlags,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create every tollgate topic (inputs, outputs and changelog share one partition count;
    /// changelog and reference topics are compacted). Existing topics are left alone.
    CreateTopics {
        /// Partitions of the inputs, outputs and changelog.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Publish tenants, users and rate cards from a `tollgate.v1.ReferenceData` JSON file.
    PublishReference {
        /// The JSON file (e.g. examples/reference.json).
        #[arg(long)]
        file: PathBuf,
    },
    /// Fund a tenant's credits with a new lot. Checked first against the tenant in the
    /// reference data, as a worker will check it (a tenant that exists, uses credits, in its
    /// currency, an amount in whole minor units): what a worker would refuse is not sent.
    Fund {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Decimal amount, e.g. 100.00.
        #[arg(long)]
        amount: String,
        /// ISO 4217 currency (must be the tenant's).
        #[arg(long)]
        currency: String,
        /// Lot id, also the command id: give one (the payment's id, say) so that running the
        /// command again never funds twice. Without one, each run is a new lot.
        #[arg(long)]
        lot_id: Option<String>,
        /// When the lot was bought (RFC 3339), also the command's time: with `--lot-id`, a
        /// retry is then the same command and changes nothing (one sent again with another
        /// time is dead-lettered as `duplicate_conflict`). Default: now.
        #[arg(long)]
        purchased_at: Option<String>,
    },
}

/// Runs an admin command.
pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    ensure_reachable(&config)?;
    let worker = &config.worker;
    match args.command {
        AdminCommand::CreateTopics { partitions, replication } => {
            if partitions < 1 || replication < 1 {
                bail!("partitions and replication must be at least 1");
            }
            // The admin call is asynchronous (librdkafka's threads resolve it): a runtime to
            // drive it.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            let specs = topics::specs(worker, partitions);
            for (name, created) in runtime.block_on(topics::create(worker, &specs, replication))? {
                println!("{name}: {}", if created { "created" } else { "already exists" });
            }
        }
        AdminCommand::PublishReference { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("failed to read {}", file.display()))?;
            // Refuse what the workers would refuse, before anything is published.
            let (data, _) = crate::rate::parse_reference(&text, &file)?;
            let publisher = Publisher::new(worker)?;
            let records = publish::reference(&worker.topics, &data);
            for record in &records {
                publisher.send(record)?;
            }
            publisher.flush().context("not every record was acknowledged by Kafka")?;
            println!(
                "published {} tenants, {} users, {} rate cards",
                data.tenants.len(),
                data.users.len(),
                data.rate_cards.len()
            );
        }
        AdminCommand::Fund { tenant, amount, currency, lot_id, purchased_at } => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
            let at = match purchased_at {
                Some(text) => tollgate_proto::Timestamp::parse_rfc3339(&text)
                    .map_err(|error| anyhow::anyhow!("--purchased-at: {error}"))?,
                None => tollgate_proto::Timestamp { seconds: now.as_secs() as i64, nanos: 0 },
            };
            let lot_id = lot_id.unwrap_or_else(|| format!("admin-{tenant}-{}", now.as_nanos()));
            let command = v1::CreditCommand {
                command_id: lot_id.clone(),
                tenant_id: tenant.clone(),
                occurred_at: Some(at),
                body: Some(v1::credit_command::Body::Fund(v1::FundLot {
                    lot_id: lot_id.clone(),
                    amount,
                    currency,
                    purchased_at: Some(at),
                })),
            };
            let record = v1::InputRecord { record: Some(v1::input_record::Record::CreditCommand(command)) };
            let input = tollgate_core::Input::try_from(record.clone()).context("invalid fund command")?;
            check_funding(worker, &tenant, &input)?;
            let publisher = Publisher::new(worker)?;
            let keyed = publish::input(&worker.topics, &record).context("no record")?;
            publisher.send(&keyed)?;
            publisher.flush().context("the fund command was not acknowledged by Kafka")?;
            println!("funded {tenant}: lot {lot_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a funding a worker would dead-letter, read against the tenant as the reference
/// data has it now (the tenants topic, read to its end).
fn check_funding(worker: &WorkerConfig, tenant: &str, input: &tollgate_core::Input) -> anyhow::Result<()> {
    let tollgate_core::Input::Credit(command) = input else { bail!("not a credit command") };
    let tollgate_core::event::CreditBody::Fund(lot) = &command.body else { bail!("not a funding") };
    let topic = &worker.topics[TopicKind::Tenants];
    let reader = TopicReader::from_beginning(worker, "admin-fund", &[topic])?;
    let mut latest = None;
    reader.read_to_end(worker.kafka_timeout() * 3, |record| {
        if record.key.as_deref() == Some(tenant.as_bytes()) {
            latest = Some(record.payload);
        }
    })?;
    let Some(bytes) = latest.flatten() else {
        bail!(
            "tenant {tenant} is not in the reference data ({topic}): a worker would refuse the funding (unknown_tenant)"
        )
    };
    let known = v1::Tenant::decode(bytes.as_slice())
        .map_err(anyhow::Error::from)
        .and_then(|t| tollgate_core::Tenant::try_from(t).map_err(anyhow::Error::from))
        .with_context(|| format!("tenant {tenant}'s record in {topic} is unreadable"))?;
    if !known.credits_enabled {
        bail!("tenant {tenant} does not use credits: a worker would refuse the funding (credits_disabled)");
    }
    if lot.currency != known.currency {
        bail!(
            "tenant {tenant} is billed in {}, not {}: a worker would refuse the funding (currency_mismatch)",
            known.currency,
            lot.currency
        );
    }
    if !lot.amount.is_positive() || !known.currency.is_whole_minor_units(lot.amount) {
        bail!(
            "the amount {} must be > 0 in whole {} minor units: a worker would refuse the funding (invalid)",
            lot.amount,
            known.currency
        );
    }
    Ok(())
}

/// Fails with a message naming the cause (and an exit code of its own, see
/// `tollgate_worker::access`) when no broker answers within the Kafka timeout (15 s at most),
/// the TLS handshake fails or the credentials are refused.
pub fn ensure_reachable(config: &Config) -> anyhow::Result<()> {
    let timeout = config.worker.kafka_timeout().min(Duration::from_secs(15));
    Ok(tollgate_worker::access::probe(&config.worker, timeout)?)
}
