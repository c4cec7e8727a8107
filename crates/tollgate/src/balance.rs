//! `tollgate balance TENANT`: a tenant's committed credit position, asked of any worker's
//! tenant API (`GET /v1/tenants/{tenant}`, which forwards to the owner): human-readable, or
//! the API's JSON as it is with `--json`.
//!
//! Exit codes: 0 answered, 1 unknown tenant or a failure, 3 the answer is not available yet
//! (the tenant's partition is restoring or changing hands: try again after `Retry-After`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hyper::StatusCode;
use tollgate_worker::view::CreditPosition;

use crate::http;
use crate::out::Stdout;

/// Arguments of `tollgate balance`.
#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    /// The tenant id.
    tenant: String,
    /// Any worker's metrics port (`http://host:port` or `host:port`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9464")]
    api: String,
    /// Print the API's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

/// The exit code when nothing answers at `--api`: the one every command gives when Kafka
/// cannot be reached.
const UNREACHABLE: u8 = 10;

/// How long `balance` waits for the tenant API's answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the API and prints the answer.
pub fn run(args: &BalanceArgs) -> anyhow::Result<ExitCode> {
    let address = args.api.trim_start_matches("http://").trim_end_matches('/').to_owned();
    if address.is_empty() || address.contains('/') {
        bail!("--api takes http://host:port, got {:?}", args.api);
    }
    let path = format!("/v1/tenants/{}", percent_encode(&args.tenant));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    // Bounded: a worker that took the connection but does not answer (paused, say) is no
    // answer, not a wait for ever.
    let asked = runtime.block_on(async {
        tokio::time::timeout(ANSWER_TIMEOUT, http::get(&address, &path, false))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {} s", ANSWER_TIMEOUT.as_secs())))
    });
    let (status, headers, body) = match asked {
        Ok(answer) => answer,
        // Not an unknown tenant (1): no worker answered there.
        Err(error) => {
            eprintln!("tollgate balance: cannot reach the tenant API at {address}: {error:#}");
            return Ok(ExitCode::from(UNREACHABLE));
        }
    };
    let text = String::from_utf8_lossy(&body);
    match status {
        StatusCode::OK if args.json => write!(Stdout, "{text}")?,
        StatusCode::OK => {
            let position: CreditPosition = serde_json::from_slice(&body).context("unreadable answer")?;
            write!(Stdout, "{}", human(&position))?;
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            let retry = headers.get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).unwrap_or("1");
            eprintln!("tollgate balance: not available yet ({}); retry after {retry} s", error_text(&text));
            return Ok(ExitCode::from(3));
        }
        StatusCode::NOT_FOUND => {
            eprintln!("tollgate balance: {}", error_text(&text));
            return Ok(ExitCode::FAILURE);
        }
        other => bail!("{address} answered {other}: {}", text.trim()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The `error` of a JSON error body, or the body.
fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// Everything but unreserved characters escaped (a tenant id is one path segment).
fn percent_encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The position for a person.
fn human(p: &CreditPosition) -> String {
    let mut out = String::new();
    let c = &p.currency;
    let _ = writeln!(out, "{}: balance {} {c}{}", p.tenant_id, p.balance, if p.depleted { " (depleted)" } else { "" });
    let offsets: Vec<String> = p.committed.input_offsets.iter().map(|(t, o)| format!("{t} {o}")).collect();
    let _ = writeln!(
        out,
        "  committed state of partition {} (inputs up to {}), {}",
        p.committed.partition,
        if offsets.is_empty() { "unknown offsets".to_owned() } else { offsets.join(", ") },
        p.event_time.as_ref().map_or_else(|| "no event applied yet".to_owned(), |at| format!("events up to {at}"))
    );
    if p.lots.is_empty() {
        let _ = writeln!(out, "  lots: none");
    }
    for lot in &p.lots {
        let bought = lot.purchased.as_ref().map_or_else(String::new, |amount| format!(" of {amount} {c}"));
        let _ = writeln!(
            out,
            "  lot {}: {} {c} left{bought}, purchased {}, expires {}",
            lot.lot_id, lot.remaining, lot.purchased_at, lot.expires_at
        );
    }
    let _ = writeln!(out, "  debt: {} {c}", p.debt);
    let t = &p.totals;
    let _ = writeln!(
        out,
        "  totals: funded {}, adjusted {}, usage charges {}, forfeited {}",
        t.funded, t.adjusted, t.usage_charges, t.forfeited
    );
    let pool = &p.pool;
    if pool.allowance_minutes > 0 || pool.used_minutes > 0 {
        let _ = writeln!(
            out,
            "  pool {}: {} of {} minutes used, {} left",
            pool.month.as_deref().unwrap_or("(not used yet)"),
            pool.used_minutes,
            pool.allowance_minutes,
            pool.left_minutes
        );
    }
    for threshold in &p.low_balance_thresholds {
        let state = if threshold.armed { "armed" } else { "fired, re-armed by funding" };
        let _ = writeln!(out, "  low-balance threshold {} {c}: {state}", threshold.amount);
    }
    if let Some(r) = &p.auto_recharge {
        let _ = writeln!(out, "  auto-recharge: {} {c} below {} {c}: {}", r.amount, r.trigger, r.state);
    }
    let _ = writeln!(out, "  open legs: {}", p.open_legs.count);
    for leg in &p.open_legs.legs {
        let _ = writeln!(
            out,
            "    {} ({}, {}) since {}: {} s, {} {c} debited",
            leg.leg_id, leg.call_type, leg.capability, leg.started_at, leg.elapsed_seconds, leg.debited
        );
    }
    if p.open_legs.legs.len() < p.open_legs.count {
        let _ = writeln!(out, "    ... and {} more", p.open_legs.count - p.open_legs.legs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_id_is_one_escaped_path_segment() {
        assert_eq!(percent_encode("acme"), "acme");
        assert_eq!(percent_encode("a b/c%"), "a%20b%2Fc%25");
    }

    #[test]
    fn shows_the_position_line_by_line() {
        let json = r#"{"tenantId":"acme","currency":"USD","balance":"9.94","debt":"0.00","depleted":false,
          "lots":[{"lotId":"f1","purchasedAt":"2026-11-02T08:00:00Z","purchased":"10.00","remaining":"9.94","expiresAt":"2027-11-02T08:00:00Z"}],
          "totals":{"funded":"10.00","adjusted":"0.00","usageCharges":"0.06","forfeited":"0.00"},
          "pool":{"month":null,"allowanceMinutes":0,"usedMinutes":0,"leftMinutes":0},
          "lowBalanceThresholds":[{"amount":"5.00","armed":true}],"autoRecharge":null,
          "openLegs":{"count":0,"legs":[]},"parkedEnds":0,"creditSequence":1,"eventTime":"2026-11-02T09:00:00Z",
          "committed":{"partition":1,"inputOffsets":{"tollgate.call-legs.v1":4}}}"#;
        let position: CreditPosition = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            human(&position),
            "acme: balance 9.94 USD\n  committed state of partition 1 (inputs up to tollgate.call-legs.v1 4), events up to \
             2026-11-02T09:00:00Z\n  lot f1: 9.94 USD left of 10.00 USD, purchased 2026-11-02T08:00:00Z, expires \
             2027-11-02T08:00:00Z\n  debt: 0.00 USD\n  totals: funded 10.00, adjusted 0.00, usage charges 0.06, \
             forfeited 0.00\n  low-balance threshold 5.00 USD: armed\n  open legs: 0\n"
        );
    }
}
