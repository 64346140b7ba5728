//! For tests only (feature `testing`): a static file server on 127.0.0.1 for tests of published logs
//! (docs/TILES.md). It serves a folder as any static server would, except for the paths a test tells it
//! to answer otherwise (missing, other bytes, a stall, a body without end).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers one path instead of serving the file.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 404.
    Missing,
    /// 200 with these bytes.
    Bytes(Vec<u8>),
    /// Accepts the request and sends nothing for a minute.
    Stall,
    /// 200 with no length, then this many bytes of zeros.
    Flood(usize),
}

/// A running server; it stops when the test process ends.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    overrides: Arc<Mutex<HashMap<String, Reply>>>,
}

impl Server {
    /// Serves `root`.
    pub fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let overrides: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let shared = Arc::clone(&overrides);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, shared) = (root.clone(), Arc::clone(&shared));
                std::thread::spawn(move || {
                    let _ = answer(stream, &root, &shared);
                });
            }
        });
        Server { url, overrides }
    }

    /// Answers `path` (relative, e.g. `tile/0/000`) with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.overrides.lock().unwrap().insert(path.to_owned(), reply);
    }

    /// Serves every path from the folder again.
    pub fn clear(&self) {
        self.overrides.lock().unwrap().clear();
    }
}

fn answer(stream: TcpStream, root: &std::path::Path, overrides: &Mutex<HashMap<String, Reply>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
        }
        let path = request.split(' ').nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
        let reply = overrides.lock().unwrap().get(&path).cloned();
        let reply = reply.unwrap_or_else(|| match std::fs::read(root.join(&path)) {
            Ok(bytes) => Reply::Bytes(bytes),
            Err(_) => Reply::Missing,
        });
        match reply {
            Reply::Missing => stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?,
            Reply::Bytes(bytes) => {
                stream.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", bytes.len()).as_bytes())?;
                stream.write_all(&bytes)?;
            }
            Reply::Stall => {
                std::thread::sleep(Duration::from_secs(60));
                return Ok(());
            }
            Reply::Flood(n) => {
                stream.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")?;
                let zeros = vec![0u8; 64 * 1024];
                let mut sent = 0;
                while sent < n {
                    let take = zeros.len().min(n - sent);
                    stream.write_all(&zeros[..take])?;
                    sent += take;
                }
                return Ok(());
            }
        }
    }
}
