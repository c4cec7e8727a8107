//! The metrics port's HTTP server: `/metrics` for Prometheus, `/health` and `/ready` for
//! orchestrators.
//!
//! - `/metrics`: the Prometheus text format.
//! - `/health`: 200 while the process runs (liveness: a hung process stops answering).
//! - `/ready`: 200 once every worker of the process is ready to rate (reference data caught
//!   up, in the consumer group, every owned partition restored), else 503; the body says, one
//!   line per worker, what it is waiting for.
//!
//! Requests are routed through [`ROUTES`], a table of paths and handlers: a new endpoint is one
//! more row.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tollgate_worker::Readiness;

/// What the endpoints read.
#[derive(Debug)]
pub struct Endpoints {
    /// Renders the metrics registry.
    pub metrics: PrometheusHandle,
    /// The process's workers (none for a process that rates nothing).
    pub workers: Vec<Arc<Readiness>>,
}

/// A handler: the whole response to a GET of its path.
type Handler = fn(&Endpoints) -> Response<Full<Bytes>>;

/// Every path served, with its handler.
const ROUTES: &[(&str, Handler)] = &[("/metrics", metrics), ("/health", health), ("/ready", ready)];

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves the endpoints on the current Tokio runtime until the process ends.
/// Binding happens now, so a port in use fails the start-up rather than a later scrape.
pub fn serve(addr: SocketAddr, endpoints: Endpoints) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("failed to listen on {addr}"))?;
    let local = listener.local_addr().context("failed to read the listening address")?;
    listener.set_nonblocking(true).context("failed to make the listener non-blocking")?;
    let listener = tokio::net::TcpListener::from_std(listener).context("failed to hand the listener to Tokio")?;
    tokio::spawn(accept(listener, Arc::new(endpoints)));
    Ok(local)
}

async fn accept(listener: tokio::net::TcpListener, endpoints: Arc<Endpoints>) {
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
        let endpoints = Arc::clone(&endpoints);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&endpoints, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics port: connection ended with an error");
            }
        });
    }
}

/// Routes one request.
fn respond(endpoints: &Endpoints, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let Some((_, handler)) = ROUTES.iter().find(|(route, _)| *route == path) else {
        return text(StatusCode::NOT_FOUND, PLAIN_TEXT, format!("no such endpoint: {path}\n"));
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN_TEXT, "GET or HEAD only\n".into());
        response.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    handler(endpoints)
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
        Endpoints { metrics: recorder.handle(), workers }
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
