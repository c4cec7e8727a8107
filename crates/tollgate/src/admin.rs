//! `tollgate admin`: create the topics, publish reference data, fund a tenant or adjust its balance.

use std::io::Write as _;
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
use crate::out::Stdout;

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
        /// Replication factor (3 or more also sets `min.insync.replicas=2`). Without it, the
        /// cluster's `default.replication.factor`.
        #[arg(long)]
        replication: Option<i32>,
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
    /// Adjust a tenant's balance by an amount, up or down: a correction, and the way to settle
    /// the debt of a tenant without credits, which a funding cannot pay. Checked against the
    /// tenant in the reference data as `fund` is.
    Adjust {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Signed decimal amount: 0.42 credits the balance, -5.00 debits it.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        /// ISO 4217 currency (must be the tenant's).
        #[arg(long)]
        currency: String,
        /// Why: kept in the `adjusted` credit event.
        #[arg(long)]
        reason: String,
        /// The adjustment's id, also the command id: running the command again with the same
        /// id and `--at` changes nothing.
        #[arg(long)]
        adjustment_id: String,
        /// When (RFC 3339). Default: now.
        #[arg(long)]
        at: Option<String>,
    },
}

/// What an admin command does, once everything it can check without Kafka was checked.
enum Action {
    CreateTopics {
        partitions: i32,
        replication: Option<i32>,
    },
    PublishReference {
        data: v1::ReferenceData,
    },
    /// A funding or an adjustment: the command, read as a worker reads it, and what to say
    /// once it is acknowledged.
    Credit {
        record: Box<v1::InputRecord>,
        input: Box<tollgate_core::Input>,
        tenant: String,
        done: String,
        /// The flags that make a re-run send the same command (its id and its time), for
        /// when it is not known whether it was written.
        again: String,
    },
}

/// Runs an admin command.
pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    // What can be checked here (the arguments, the file) is checked before Kafka is asked: a
    // mistake is said at once, not after a wait for the broker that ends in "cannot reach".
    let action = prepare(args.command)?;
    ensure_reachable(&config)?;
    let worker = &config.worker;
    match action {
        Action::CreateTopics { partitions, replication } => {
            // The admin call is asynchronous (librdkafka's threads resolve it): a runtime to
            // drive it.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            let specs = topics::specs(worker, partitions);
            let replication = replication.unwrap_or(topics::BROKER_DEFAULT_REPLICATION);
            for (name, created) in runtime.block_on(topics::create(worker, &specs, replication))? {
                writeln!(Stdout, "{name}: {}", if created { "created" } else { "already exists" })?;
            }
        }
        Action::PublishReference { data } => {
            let records = publish::reference(&worker.topics, &data);
            let publisher = Publisher::new(worker)?;
            // A record a worker would refuse for its size (a rate card holds every version:
            // tens of thousands of rows) is refused here, before anything is sent: sent after
            // the others, it would leave tenants naming a card that never arrives.
            let most = publisher.largest_record();
            if let Some(record) = records.iter().find(|r| r.value.len() > most) {
                bail!(
                    "{} {}: {} bytes encoded, more than the {most} a record may have (max_record_bytes, or the \
                     producer's message.max.bytes): nothing was published; split it, or drop old versions",
                    kind_of(worker, &record.topic),
                    record.key,
                    record.value.len()
                );
            }
            // Each topic acknowledged before the next: rate cards, users, then the tenants that
            // name them.
            let mut topic = None;
            for record in &records {
                if topic.is_some_and(|t| t != &record.topic) {
                    publisher.flush().context("not every record was acknowledged by Kafka")?;
                }
                topic = Some(&record.topic);
                publisher.send(record)?;
            }
            publisher.flush().context("not every record was acknowledged by Kafka")?;
            writeln!(
                Stdout,
                "published {} tenants, {} users, {} rate cards",
                data.tenants.len(),
                data.users.len(),
                data.rate_cards.len()
            )?;
        }
        Action::Credit { record, input, tenant, done, again } => {
            check_credit(worker, &tenant, &input)?;
            let publisher = Publisher::new(worker)?;
            let keyed = publish::input(&worker.topics, &record).context("no record")?;
            // Once sent, a failure does not say whether Kafka wrote it (an acknowledgement lost
            // on the way back, say): a re-run must send the same id and time, or a funding
            // would be applied twice under two lot ids.
            let unknown = || {
                format!(
                    "the credit command was not acknowledged by Kafka, and may have been written all the same: to try \
                     again, run the same command with {again} (a copy of a command changes nothing)"
                )
            };
            publisher.send(&keyed).with_context(unknown)?;
            publisher.flush().with_context(unknown)?;
            writeln!(Stdout, "{done}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a reference topic holds, for a message.
fn kind_of(worker: &WorkerConfig, topic: &str) -> &'static str {
    match worker.topics.kind_of(topic) {
        Some(TopicKind::RateCards) => "rate card",
        Some(TopicKind::Users) => "user",
        Some(TopicKind::Tenants) => "tenant",
        _ => "record",
    }
}

/// Checks what `command` can be checked for without Kafka, and says what it will do.
fn prepare(command: AdminCommand) -> anyhow::Result<Action> {
    Ok(match command {
        AdminCommand::CreateTopics { partitions, replication } => {
            if partitions < 1 || replication.is_some_and(|r| r < 1) {
                bail!("partitions and replication must be at least 1");
            }
            Action::CreateTopics { partitions, replication }
        }
        AdminCommand::PublishReference { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("failed to read {}", file.display()))?;
            // Refuse what the workers would refuse, before anything is published.
            let (data, _) = crate::rate::parse_reference(&text, &file)?;
            Action::PublishReference { data }
        }
        AdminCommand::Fund { tenant, amount, currency, lot_id, purchased_at } => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
            let at = time_or_now("--purchased-at", purchased_at.as_deref())?;
            let lot_id = lot_id.unwrap_or_else(|| format!("admin-{tenant}-{}", now.as_nanos()));
            let dated = at.to_rfc3339().unwrap_or_else(|_| at.to_string());
            let again = format!("--lot-id {lot_id} --purchased-at {dated}");
            let sent = format!("funding sent for {tenant}: lot {lot_id} of {amount} {currency} dated {dated}");
            let command = v1::CreditCommand {
                command_id: lot_id.clone(),
                tenant_id: tenant.clone(),
                occurred_at: Some(at),
                body: Some(v1::credit_command::Body::Fund(v1::FundLot {
                    lot_id,
                    amount,
                    currency,
                    purchased_at: Some(at),
                })),
            };
            credit(command, &sent, again)?
        }
        AdminCommand::Adjust { tenant, amount, currency, reason, adjustment_id, at } => {
            let at = time_or_now("--at", at.as_deref())?;
            let dated = at.to_rfc3339().unwrap_or_else(|_| at.to_string());
            let again = format!("--adjustment-id {adjustment_id} --at {dated}");
            let sent =
                format!("adjustment sent for {tenant}: {amount} {currency}, adjustment {adjustment_id} dated {dated}");
            let command = v1::CreditCommand {
                command_id: adjustment_id,
                tenant_id: tenant,
                occurred_at: Some(at),
                body: Some(v1::credit_command::Body::Adjustment(v1::ManualAdjustment { amount, currency, reason })),
            };
            credit(command, &sent, again)?
        }
    })
}

/// A credit command read as a worker reads it ([`check_credit`] then checks it against the
/// tenant, with Kafka).
fn credit(command: v1::CreditCommand, sent: &str, again: String) -> anyhow::Result<Action> {
    let done = format!(
        "{sent}, acknowledged by Kafka (a worker applies a command id once: running this again with {again} changes \
         nothing; with another amount it is refused as duplicate_conflict)"
    );
    let tenant = command.tenant_id.clone();
    let record = v1::InputRecord { record: Some(v1::input_record::Record::CreditCommand(command)) };
    // Its message only: it already says the cause, which its source would say again.
    let input = tollgate_core::Input::try_from(record.clone())
        .map_err(|error| anyhow::anyhow!("invalid credit command: {error}"))?;
    Ok(Action::Credit { record: Box::new(record), input: Box::new(input), tenant, done, again })
}

/// The time `flag` gives (RFC 3339), or now to the second.
fn time_or_now(flag: &str, text: Option<&str>) -> anyhow::Result<tollgate_proto::Timestamp> {
    match text {
        Some(text) => {
            tollgate_proto::Timestamp::parse_rfc3339(text).map_err(|error| anyhow::anyhow!("{flag}: {error}"))
        }
        None => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
            Ok(tollgate_proto::Timestamp { seconds: now.as_secs() as i64, nanos: 0 })
        }
    }
}

/// Refuses a funding or an adjustment a worker would dead-letter, read against the tenant as
/// the reference data has it now (the tenants topic, read to its end).
fn check_credit(worker: &WorkerConfig, tenant: &str, input: &tollgate_core::Input) -> anyhow::Result<()> {
    use tollgate_core::Error as CoreError;
    use tollgate_core::event::CreditBody;
    let tollgate_core::Input::Credit(command) = input else { bail!("not a credit command") };
    let (what, currency, amount) = match &command.body {
        CreditBody::Fund(lot) => ("funding", lot.currency, lot.amount),
        CreditBody::Adjust { amount, currency, .. } => ("adjustment", *currency, *amount),
        _ => bail!("neither a funding nor an adjustment"),
    };
    let topic = &worker.topics[TopicKind::Tenants];
    let reader = TopicReader::from_beginning(worker, "admin-credit", &[topic])?;
    let mut latest = None;
    reader.read_to_end(worker.kafka_timeout() * 3, |record| {
        if record.key.as_deref() == Some(tenant.as_bytes()) {
            latest = Some(record.payload);
        }
    })?;
    let Some(bytes) = latest.flatten() else {
        bail!(
            "tenant {tenant} is not in the reference data ({topic}): a worker would refuse the {what} (unknown_tenant)"
        )
    };
    let known = v1::Tenant::decode(bytes.as_slice())
        .map_err(anyhow::Error::from)
        .and_then(|t| tollgate_core::Tenant::try_from(t).map_err(anyhow::Error::from))
        .with_context(|| format!("tenant {tenant}'s record in {topic} is unreadable"))?;
    // The command's time is its event time: a worker refuses an input from before its
    // tenant's newest event minus the retention window (too late: its id may be forgotten),
    // or too far after its record's timestamp (future dated). Now stands for the newest.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_secs() as i64;
    let at = command.occurred_at.unix_seconds();
    // The newest may be up to `max_future_seconds` ahead of now (inputs dated after their
    // record): the window is counted from there.
    let earliest = now - worker.retention_seconds as i64 + worker.max_future_seconds as i64;
    if at < earliest || at > now + worker.max_future_seconds as i64 {
        bail!(
            "the {what}'s time {} is its event time, and more than {} h back (or {} s ahead) a worker would refuse it \
             (too_late, future_dated): leave the time out (now) or give one within that window",
            command.occurred_at,
            (worker.retention_seconds as i64 - worker.max_future_seconds as i64) / 3600,
            worker.max_future_seconds
        );
    }
    // The worker's own check decides; the message says it for an operator. The command's
    // time is also its lot's purchase, so an invalid one can only be its amount.
    match tollgate_core::rating::check_credit(&known, command) {
        Ok(()) => {}
        Err(CoreError::CreditsDisabled { .. }) => bail!(
            "tenant {tenant} does not use credits: a worker would refuse the funding (credits_disabled); \
             `tollgate admin adjust` settles its balance"
        ),
        Err(CoreError::CurrencyMismatch { .. }) => bail!(
            "tenant {tenant} is billed in {}, not {currency}: a worker would refuse the {what} (currency_mismatch)",
            known.currency
        ),
        Err(error) => {
            let sign = if matches!(command.body, CreditBody::Fund(_)) { "> 0" } else { "non-zero" };
            bail!(
                "the amount {amount} must be {sign} in whole {} minor units: a worker would refuse the {what} ({})",
                known.currency,
                error.code()
            )
        }
    }
    Ok(())
}

/// Fails with a message naming the cause (and an exit code of its own, see
/// `tollgate_worker::access`) when no broker answers within the Kafka timeout (15 s at most),
/// the TLS handshake fails or the credentials are refused.
pub fn ensure_reachable(config: &Config) -> anyhow::Result<()> {
    let timeout = config.worker.kafka_timeout().min(Duration::from_secs(15));
    Ok(tollgate_worker::access::probe(&config.worker, timeout, &tollgate_worker::Cancel::default())?)
}
