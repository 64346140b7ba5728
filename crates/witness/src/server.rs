//! The HTTP side of the witness (c2sp.org/tlog-witness): `POST /add-checkpoint` and the monitoring
//! `GET /<origin hash>/checkpoint`, on hyper's HTTP/1.1 server.
//!
//! Every request is bounded: headers must arrive within [`REQUEST_TIMEOUT`] (or the witness's own
//! bound), the body within as long again and [`tlog::witness::MAX_REQUEST_BYTES`], and at most [`MAX_CONNECTIONS`]
//! connections are served at once (more wait in the kernel's backlog). The decision and the state
//! write run under one lock, so that checking the old size and persisting the new checkpoint are
//! atomic, and the state is durable before the answer is sent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tlog::witness::{decide, LogPolicy, Refusal, MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE};
use tlog::SigningKey;

use crate::state::State;

/// Longest wait for a request's headers, and then for its body, by default (`--timeout-seconds`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// A running witness's configuration and state.
pub struct Witness {
    logs: Vec<LogPolicy>,
    key: SigningKey,
    state: Mutex<State>,
    timeout: Duration,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness").field("key", &self.key).field("logs", &self.logs.len()).finish()
    }
}

impl Witness {
    /// A witness cosigning for `logs` with `key`, on `state`.
    pub fn new(logs: Vec<LogPolicy>, key: SigningKey, state: State) -> Witness {
        Witness { logs, key, state: Mutex::new(state), timeout: REQUEST_TIMEOUT }
    }

    /// The same witness with another bound on the time a request's headers and body may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Witness {
        self.timeout = timeout;
        self
    }

    /// Handles one `add-checkpoint` body: the decision and, when accepted, the durable state update,
    /// under the state lock. Returns the status, content type and body of the answer.
    pub fn add_checkpoint(&self, body: &[u8]) -> (StatusCode, &'static str, String) {
        let Ok(mut state) = self.state.lock() else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "the witness's state lock is poisoned\n".into());
        };
        let now_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match decide(&self.logs, &|origin| state.latest(origin), body, &self.key, now_s) {
            Ok(accepted) => match state.persist(&accepted) {
                Ok(()) => (StatusCode::OK, "text/plain; charset=utf-8", accepted.body()),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            },
            Err(refusal) => {
                let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let content_type = if matches!(refusal, Refusal::Conflict(_)) {
                    SIZE_CONTENT_TYPE
                } else {
                    "text/plain; charset=utf-8"
                };
                (status, content_type, refusal.body())
            }
        }
    }

    /// The stored checkpoint of the origin whose hex SHA-256 is `hash`.
    pub fn checkpoint(&self, hash: &str) -> Option<Vec<u8>> {
        self.state.lock().ok()?.note_by_hash(hash).map(<[u8]>::to_vec)
    }
}

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn handle(
    witness: Arc<Witness>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if path == "/add-checkpoint" {
        if method != Method::POST {
            return Ok(answer(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "add-checkpoint takes a POST\n"));
        }
        let limited = Limited::new(request.into_body(), MAX_REQUEST_BYTES);
        let body = match tokio::time::timeout(witness.timeout, limited.collect()).await {
            Err(_) => return Ok(answer(StatusCode::REQUEST_TIMEOUT, "text/plain", "the request body took too long\n")),
            Ok(Err(_)) => {
                return Ok(answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    format!("the request body is larger than {MAX_REQUEST_BYTES} bytes or was cut\n"),
                ))
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let decided = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body)).await;
        return Ok(match decided {
            Ok((status, content_type, text)) => answer(status, content_type, text),
            Err(_) => answer(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "the witness failed\n"),
        });
    }
    let monitored = path.strip_prefix('/').and_then(|p| p.strip_suffix("/checkpoint"));
    if let (Some(hash), true) = (monitored, method == Method::GET) {
        let hash = hash.to_owned();
        let found = tokio::task::spawn_blocking(move || witness.checkpoint(&hash)).await.ok().flatten();
        return Ok(match found {
            Some(note) => answer(StatusCode::OK, "text/plain; charset=utf-8", note),
            None => answer(StatusCode::NOT_FOUND, "text/plain", "no checkpoint cosigned for that origin\n"),
        });
    }
    Ok(answer(StatusCode::NOT_FOUND, "text/plain", "not found\n"))
}

/// Serves `witness` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, witness: Arc<Witness>) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots.clone().acquire_owned().await.map_err(std::io::Error::other)?;
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // A failed accept (a connection reset before it was taken, too many open files) ends that
            // connection, not the witness.
            Err(_) => continue,
        };
        let witness = witness.clone();
        tokio::spawn(async move {
            let timeout = witness.timeout;
            let service = hyper::service::service_fn(move |request| handle(witness.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}
