//! Where a published log is read from: a folder, or an `http(s)://` prefix. Every read is bounded in
//! size; every request in time.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Longest a whole HTTP request may take, connection to last byte.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the connection to the server may take.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a resource could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// It is not there (a missing file, HTTP 404 or 410).
    #[error("{location}: missing")]
    Missing {
        /// The file or URL.
        location: String,
    },
    /// It is larger than the reader accepts.
    #[error("{location}: larger than {limit} bytes")]
    TooLarge {
        /// The file or URL.
        location: String,
        /// The bound.
        limit: u64,
    },
    /// The server answered with another status.
    #[error("{location}: the server answered {status}")]
    Status {
        /// The URL.
        location: String,
        /// The HTTP status.
        status: u16,
    },
    /// The OS or the network failed (a timeout, a refused connection, a read error).
    #[error("{location}: {reason}")]
    Io {
        /// The file or URL.
        location: String,
        /// What failed.
        reason: String,
    },
}

/// Reads the resources of a published log by their path relative to its prefix.
pub trait Fetch: Sync {
    /// The bytes at `path`, at most `limit` of them.
    fn fetch(&self, path: &str, limit: u64) -> Result<Vec<u8>, FetchError>;
    /// The file or URL that `path` names, for messages.
    fn location(&self, path: &str) -> String;
}

/// A published log in a folder.
#[derive(Clone, Debug)]
pub struct DirFetch {
    root: PathBuf,
}

impl DirFetch {
    /// The log published in `root`.
    pub fn new(root: impl Into<PathBuf>) -> DirFetch {
        DirFetch { root: root.into() }
    }
}

impl Fetch for DirFetch {
    fn fetch(&self, path: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let location = self.location(path);
        let file = std::fs::File::open(self.root.join(path)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::Missing { location: location.clone() },
            _ => FetchError::Io { location: location.clone(), reason: e.to_string() },
        })?;
        read_bounded(file, limit, &location)
    }

    fn location(&self, path: &str) -> String {
        self.root.join(path).display().to_string()
    }
}

fn read_bounded(reader: impl Read, limit: u64, location: &str) -> Result<Vec<u8>, FetchError> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FetchError::Io { location: location.to_owned(), reason: e.to_string() })?;
    if bytes.len() as u64 > limit {
        return Err(FetchError::TooLarge { location: location.to_owned(), limit });
    }
    Ok(bytes)
}

/// A published log served over HTTP(S) under a URL prefix.
#[derive(Clone, Debug)]
pub struct HttpFetch {
    prefix: String,
    agent: ureq::Agent,
}

impl HttpFetch {
    /// The log served under `prefix` (`http://` or `https://`), with [`HTTP_TIMEOUT`] per request.
    pub fn new(prefix: &str) -> HttpFetch {
        HttpFetch::with_timeout(prefix, HTTP_TIMEOUT)
    }

    /// With another bound on each request's time.
    pub fn with_timeout(prefix: &str, timeout: Duration) -> HttpFetch {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(HTTP_CONNECT_TIMEOUT.min(timeout)))
            .http_status_as_error(false)
            .max_redirects(3)
            .user_agent(concat!("posledger-tiles/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        HttpFetch { prefix: prefix.trim_end_matches('/').to_owned(), agent }
    }
}

impl Fetch for HttpFetch {
    fn fetch(&self, path: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let location = self.location(path);
        let io = |e: ureq::Error| match e {
            ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge { location: location.clone(), limit },
            other => FetchError::Io { location: location.clone(), reason: other.to_string() },
        };
        let mut response = self.agent.get(&location).header("accept-encoding", "identity").call().map_err(io)?;
        match response.status().as_u16() {
            200 => {}
            404 | 410 => return Err(FetchError::Missing { location }),
            status => return Err(FetchError::Status { location, status }),
        }
        let bytes = response.body_mut().with_config().limit(limit).read_to_vec().map_err(io)?;
        Ok(bytes)
    }

    fn location(&self, path: &str) -> String {
        format!("{}/{path}", self.prefix)
    }
}

/// Whether `source` names a log served over HTTP(S).
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The reader for `source`: an `http(s)://` prefix or a folder.
pub fn open(source: &str) -> Box<dyn Fetch> {
    if is_url(source) {
        Box::new(HttpFetch::new(source))
    } else {
        Box::new(DirFetch::new(source))
    }
}
