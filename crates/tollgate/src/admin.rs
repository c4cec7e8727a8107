//! `tollgate admin`: create the topics, publish reference data, fund a tenant.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use tollgate_proto::v1;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::topics;

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
    /// Fund a tenant's credits with a new lot.
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
        /// Lot id (also the command id, so re-running the same funding is a no-op).
        #[arg(long)]
        lot_id: Option<String>,
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
        AdminCommand::Fund { tenant, amount, currency, lot_id } => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
            let at = tollgate_proto::Timestamp { seconds: now.as_secs() as i64, nanos: 0 };
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
            tollgate_core::Input::try_from(record.clone()).context("invalid fund command")?;
            let publisher = Publisher::new(worker)?;
            let keyed = publish::input(&worker.topics, &record).context("no record")?;
            publisher.send(&keyed)?;
            publisher.flush().context("the fund command was not acknowledged by Kafka")?;
            println!("funded {tenant}: lot {lot_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails with a message naming the cause (and an exit code of its own, see
/// `tollgate_worker::access`) when no broker answers within the Kafka timeout (15 s at most),
/// the TLS handshake fails or the credentials are refused.
pub fn ensure_reachable(config: &Config) -> anyhow::Result<()> {
    let timeout = config.worker.kafka_timeout().min(Duration::from_secs(15));
    Ok(tollgate_worker::access::probe(&config.worker, timeout)?)
}
