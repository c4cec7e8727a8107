//! The metrics port's HTTP server: `/metrics` for Prometheus, `/health` and `/ready` for
//! orchestrators, and the tenant API for operators.
//!
//! - `/metrics`: the Prometheus text format.
//! - `/health`: 200 while the process runs (liveness: a hung process stops answering).
//! - `/ready`: 200 once every worker of the process is ready to rate (reference data caught
//!   up, in the consumer group, every owned partition restored), else 503; the body says, one
//!   line per worker, what it is waiting for.
//! - `/v1/tenants/{tenant}`: the tenant's committed credit position as JSON
//!   (`docs/openapi.yaml`), from whichever worker owns it: answered here when a worker of this
//!   process owns the tenant's partition, else forwarded once to the owner the ownership topic
//!   names (`tollgate_worker::view::answer`); 404 for an unknown tenant, 503 with
//!   `Retry-After` while the partition restores or changes hands.
//!
//! Requests are routed through [`ROUTES`], a table of paths and handlers: a new endpoint is one
//! more row. The client side ([`get`]) forwards, and is what `tollgate balance` asks with.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tollgate_worker::Readiness;
use tollgate_worker::view::{Answer, TenantApi};

/// What the endpoints read.
#[derive(Debug)]
pub struct Endpoints {
    /// Renders the metrics registry.
    pub metrics: PrometheusHandle,
    /// The process's workers (none for a process that rates nothing).
    pub workers: Vec<Arc<Readiness>>,
    /// The same workers' side of the tenant API.
    pub tenants: Vec<Arc<TenantApi>>,
    /// This process's own address as announced to the other workers: never forwarded to.
    pub advertised: Option<String>,
}

/// One GET: the endpoints, the path's `{tenant}` segment (percent-decoded) if its route has
/// one, and whether another worker forwarded it.
struct Call<'a> {
    endpoints: &'a Endpoints,
    tenant: &'a str,
    forwarded: bool,
}

/// What a handler answers: a response, or where to forward the request to.
enum Reply {
    Now(Response<Full<Bytes>>),
    Forward { address: String },
}

/// A handler: the whole response to a GET of its path.
type Handler = fn(&Call<'_>) -> Reply;

/// Every path served, with its handler; `{tenant}` matches one path segment.
const ROUTES: &[(&str, Handler)] = &[
    ("/metrics", |c| Reply::Now(metrics(c.endpoints))),
    ("/health", |c| Reply::Now(health(c.endpoints))),
    ("/ready", |c| Reply::Now(ready(c.endpoints))),
    ("/v1/tenants/{tenant}", tenant),
];

/// Marks a request one worker forwarded to another: the owner answers it or says 503, it
/// never forwards it again.
const FORWARDED: HeaderName = HeaderName::from_static("x-tollgate-forwarded");
/// How long a client should wait before asking again while a partition restores or moves.
const RETRY_SECONDS: &str = "1";
const JSON: &str = "application/json";
/// How long forwarding to the owner may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection is served: then it is closed once the response in progress is
/// written, or [`CLOSING_GRACE`] later whatever it is doing. hyper has no timeout while it
/// writes a response: a client that asks for `/metrics` (megabytes with many tenants) and
/// never reads would hold the connection and the response for ever. Prometheus, probes and
/// the tenant API open a new connection when one is closed.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// See [`CONNECTION_LIFETIME`].
const CLOSING_GRACE: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed as they are accepted (each can hold a
/// rendered `/metrics`; a flood of them would otherwise take the worker's memory, or the file
/// descriptors its Kafka clients need).
const MAX_CONNECTIONS: usize = 256;

/// Binds `addr` and serves the endpoints on the current Tokio runtime until the process ends.
/// Binding happens now, so a port in use fails the start-up rather than a later scrape.
/// Returns the address bound and this process's advertised address: the one given, else one
/// derived from the address bound ([`reachable`]).
pub fn serve(addr: SocketAddr, mut endpoints: Endpoints) -> anyhow::Result<(SocketAddr, String)> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("failed to listen on {addr}"))?;
    let local = listener.local_addr().context("failed to read the listening address")?;
    let advertised = endpoints.advertised.get_or_insert_with(|| reachable(local)).clone();
    listener.set_nonblocking(true).context("failed to make the listener non-blocking")?;
    let listener = tokio::net::TcpListener::from_std(listener).context("failed to hand the listener to Tokio")?;
    tokio::spawn(accept(listener, Arc::new(endpoints)));
    Ok((local, advertised))
}

/// The address the other workers can reach a port bound to `addr` at: itself, or for a port
/// bound to every interface (`0.0.0.0`, as in a container) the host's name, which container
/// networks resolve (Kubernetes sets `advertised_address` to the pod's IP instead).
fn reachable(addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    match std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()) {
        Ok(host) if !host.is_empty() => format!("{host}:{}", addr.port()),
        _ => {
            tracing::warn!(%addr, "no advertised_address: other workers cannot forward tenant questions here");
            addr.to_string()
        }
    }
}

async fn accept(listener: tokio::net::TcpListener, endpoints: Arc<Endpoints>) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, typically: wait rather than spin.
                tracing::warn!(%error, "metrics port: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::debug!("metrics port: {MAX_CONNECTIONS} connections open already: one closed as accepted");
            continue;
        };
        let endpoints = Arc::clone(&endpoints);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: Request<Incoming>| {
                let forwarded = request.headers().contains_key(FORWARDED);
                let path = request.uri().path().to_owned();
                let reply = respond(&endpoints, request.method(), &path, forwarded);
                async move { Ok::<_, Infallible>(reply_with(reply, &path).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let ended = match tokio::time::timeout(CONNECTION_LIFETIME, connection.as_mut()).await {
                Ok(ended) => ended,
                Err(_) => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(CLOSING_GRACE, connection.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "metrics port: connection ended with an error");
            }
        });
    }
}

/// The response to a reply: as it is, or the owner's response to the forwarded request.
async fn reply_with(reply: Reply, path: &str) -> Response<Full<Bytes>> {
    let address = match reply {
        Reply::Now(response) => return response,
        Reply::Forward { address } => address,
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, get(&address, path, true)).await {
        Ok(Ok((status, headers, body))) => {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            for name in [CONTENT_TYPE, RETRY_AFTER] {
                if let Some(value) = headers.get(&name) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Ok(Err(error)) => unavailable(&format!("the tenant's owner at {address} did not answer: {error:#}")),
        Err(_) => unavailable(&format!("the tenant's owner at {address} did not answer in time")),
    }
}

/// Routes one request.
fn respond(endpoints: &Endpoints, method: &Method, path: &str, forwarded: bool) -> Reply {
    let Some((handler, tenant)) = ROUTES.iter().find_map(|(route, handler)| Some((handler, matches(route, path)?)))
    else {
        return Reply::Now(text(StatusCode::NOT_FOUND, PLAIN_TEXT, format!("no such endpoint: {path}\n")));
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN_TEXT, "GET or HEAD only\n".into());
        response.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Reply::Now(response);
    }
    handler(&Call { endpoints, tenant: &tenant, forwarded })
}

/// Whether `path` matches `route`, and the value of its `{tenant}` segment (percent-decoded;
/// empty for a route without one).
fn matches(route: &str, path: &str) -> Option<String> {
    match route.strip_suffix("{tenant}") {
        None => (route == path).then(String::new),
        Some(prefix) => {
            let segment = path.strip_prefix(prefix).filter(|s| !s.is_empty() && !s.contains('/'))?;
            percent_decode(segment)
        }
    }
}

/// `%XX` escapes decoded; `None` when they do not make UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn tenant(call: &Call<'_>) -> Reply {
    let endpoints = call.endpoints;
    match tollgate_worker::view::answer(
        &endpoints.tenants,
        call.tenant,
        call.forwarded,
        endpoints.advertised.as_deref(),
    ) {
        Answer::Found(position) => {
            let body = serde_json::to_string_pretty(&position).unwrap_or_default() + "\n";
            Reply::Now(text(StatusCode::OK, JSON, body))
        }
        Answer::Unknown => {
            let body = serde_json::json!({ "error": format!("unknown tenant {:?}", call.tenant) }).to_string() + "\n";
            Reply::Now(text(StatusCode::NOT_FOUND, JSON, body))
        }
        Answer::Unavailable(why) => Reply::Now(unavailable(why)),
        Answer::Elsewhere { address } => Reply::Forward { address },
    }
}

/// 503 with `Retry-After`: the answer exists, just not here yet.
fn unavailable(why: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": why }).to_string() + "\n";
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, JSON, body);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(RETRY_SECONDS));
    response
}

/// GETs `path` from the HTTP server at `address` (`host:port`) over HTTP/1.1: the status, the
/// headers and the whole body. `forwarded` marks a request one worker forwards to another.
pub async fn get(address: &str, path: &str, forwarded: bool) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    let stream =
        tokio::net::TcpStream::connect(address).await.with_context(|| format!("failed to connect to {address}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake failed")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "HTTP client connection ended with an error");
        }
    });
    let mut request = Request::get(path).header(hyper::header::HOST, address);
    if forwarded {
        request = request.header(FORWARDED, "1");
    }
    let request = request.body(http_body_util::Empty::<Bytes>::new()).context("invalid request")?;
    let response = sender.send_request(request).await.context("HTTP request failed")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("failed to read the HTTP body")?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

fn metrics(endpoints: &Endpoints) -> Response<Full<Bytes>> {
    tollgate_worker::telemetry::scraped();
    text(StatusCode::OK, PROMETHEUS_TEXT, endpoints.metrics.render())
}

fn health(_: &Endpoints) -> Response<Full<Bytes>> {
    text(StatusCode::OK, PLAIN_TEXT, "ok\n".into())
}

fn ready(endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let statuses: Vec<tollgate_worker::Status> = endpoints.workers.iter().map(|w| w.status()).collect();
    let ready = !statuses.is_empty() && statuses.iter().all(tollgate_worker::Status::is_ready);
    let mut body: String = statuses.iter().map(|s| format!("{s}\n")).collect();
    if statuses.is_empty() {
        body.push_str("not ready: no worker in this process\n");
    }
    text(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, PLAIN_TEXT, body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(workers: Vec<Arc<Readiness>>) -> Endpoints {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        Endpoints { metrics: recorder.handle(), workers, tenants: Vec::new(), advertised: None }
    }

    fn respond(endpoints: &Endpoints, method: &Method, path: &str) -> Response<Full<Bytes>> {
        match super::respond(endpoints, method, path, false) {
            Reply::Now(response) => response,
            Reply::Forward { address } => panic!("forwarded to {address}"),
        }
    }

    /// The status and body (`Full` holds its bytes: read back without an executor).
    fn body(response: Response<Full<Bytes>>) -> (StatusCode, String) {
        use hyper::body::Body;
        let status = response.status();
        let mut body = std::pin::pin!(response.into_body());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut out = Vec::new();
        while let std::task::Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
            if let Ok(data) = frame.into_data() {
                out.extend_from_slice(&data);
            }
        }
        (status, String::from_utf8(out).unwrap_or_default())
    }

    #[test]
    fn routes_known_paths_and_refuses_the_rest() {
        let endpoints = endpoints(Vec::new());
        assert_eq!(body(respond(&endpoints, &Method::GET, "/health")), (StatusCode::OK, "ok\n".into()));
        assert_eq!(
            body(respond(&endpoints, &Method::GET, "/nope")),
            (StatusCode::NOT_FOUND, "no such endpoint: /nope\n".into())
        );
        let refused = respond(&endpoints, &Method::POST, "/ready");
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[hyper::header::ALLOW], "GET, HEAD");
        let metrics = respond(&endpoints, &Method::GET, "/metrics");
        assert_eq!(metrics.headers()[CONTENT_TYPE], PROMETHEUS_TEXT);
        // Before any worker knows the partition count, a tenant's owner is unknown.
        let tenant = respond(&endpoints, &Method::GET, "/v1/tenants/acme");
        assert_eq!(
            (tenant.status(), tenant.headers()[RETRY_AFTER].to_str().ok()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        for path in ["/v1/tenants/", "/v1/tenants/a/b", "/v1/tenants/%zz"] {
            assert_eq!(respond(&endpoints, &Method::GET, path).status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn a_tenant_segment_is_percent_decoded() {
        assert_eq!(matches("/v1/tenants/{tenant}", "/v1/tenants/a%20b%2Fc"), Some("a b/c".to_owned()));
        assert_eq!(matches("/ready", "/ready"), Some(String::new()));
        assert_eq!(matches("/ready", "/ready/"), None);
    }

    #[test]
    fn is_not_ready_without_workers_or_before_they_are() {
        let (status, text) = body(respond(&endpoints(Vec::new()), &Method::GET, "/ready"));
        assert_eq!(
            (status, text.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: no worker in this process\n")
        );
        let worker = Arc::new(Readiness::new(Arc::new(tollgate_worker::Assignment::new("w1"))));
        let (status, text) = body(respond(&endpoints(vec![worker]), &Method::GET, "/ready"));
        assert_eq!((status, text.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "w1 not ready: starting\n"));
    }
}
