//! The log's side of c2sp.org/tlog-witness: submits a signed checkpoint with its consistency proof to
//! a witness's `add-checkpoint`, follows a 409 to the witness's size once, and checks the returned
//! cosignatures against the witness's key. Every request is bounded in time and every response in size.

use std::time::Duration;

use ledger::Ledger;
use tlog::note::Signature;
use tlog::witness::{AddCheckpoint, SIZE_CONTENT_TYPE};
use tlog::VerifierKey;

use crate::checkpoints::{verify_cosignatures, Signed};

/// Longest a whole request to a witness may take, connection to last byte.
pub const WITNESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read from a witness (bytes).
pub const MAX_WITNESS_RESPONSE_BYTES: u64 = 64 * 1024;
/// Most requests per submission (the first, and one resend from the witness's size after a 409).
pub const MAX_WITNESS_ATTEMPTS: usize = 2;

/// Why a witness did not cosign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The request failed on the network or timed out.
    #[error("{url}: {reason}")]
    Network {
        /// The witness URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The witness refused, with its status and the first line of its answer.
    #[error("{url}: the witness answered {status}: {message}")]
    Refused {
        /// The witness URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The first line of its body (bounded, control characters removed).
        message: String,
    },
    /// The witness holds a larger tree than the log: the log lost records it had submitted.
    #[error("{url}: the witness holds size {witness}, more than the log's {log}: records the witness saw are gone")]
    WitnessAhead {
        /// The witness URL.
        url: String,
        /// The witness's size.
        witness: u64,
        /// The log's size.
        log: u64,
    },
    /// The witness's answer did not verify with its key.
    #[error("{url}: the witness's answer does not verify: {source}")]
    BadCosignature {
        /// The witness URL.
        url: String,
        /// Why.
        #[source]
        source: tlog::NoteError,
    },
    /// The proof for the witness's size could not be read from the log.
    #[error(transparent)]
    Read(#[from] ledger::ReadError),
}

/// Submits `signed` to the witness at `url` (its submission prefix) and returns its verified
/// cosignatures. `old_size` is the size the log believes the witness holds.
pub fn submit(
    ledger: &Ledger,
    signed: &Signed,
    url: &str,
    witness: &VerifierKey,
    mut old_size: u64,
) -> Result<Vec<Signature>, SubmitError> {
    let endpoint = format!("{}/add-checkpoint", url.trim_end_matches('/'));
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(WITNESS_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let size = signed.checkpoint.size;
    for _ in 0..MAX_WITNESS_ATTEMPTS {
        old_size = old_size.min(size);
        let proof = if old_size == 0 { Vec::new() } else { ledger.consistency_proof(old_size, size)? };
        let body = AddCheckpoint { old_size, proof, checkpoint: signed.note.clone() }.to_bytes();
        let network = |e: ureq::Error| SubmitError::Network { url: endpoint.clone(), reason: e.to_string() };
        let mut response =
            agent.post(&endpoint).content_type("text/plain; charset=utf-8").send(&body[..]).map_err(network)?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let answer =
            response.body_mut().with_config().limit(MAX_WITNESS_RESPONSE_BYTES).read_to_vec().map_err(network)?;
        match status {
            200 => {
                return verify_cosignatures(signed, &answer, witness)
                    .map_err(|source| SubmitError::BadCosignature { url: endpoint.clone(), source });
            }
            409 if content_type.starts_with(SIZE_CONTENT_TYPE) => {
                let held = std::str::from_utf8(&answer)
                    .ok()
                    .and_then(|t| t.strip_suffix('\n'))
                    .and_then(tlog::checkpoint::parse_size)
                    .ok_or_else(|| refused(&endpoint, status, &answer))?;
                if held > size {
                    return Err(SubmitError::WitnessAhead { url: endpoint, witness: held, log: size });
                }
                old_size = held;
            }
            _ => return Err(refused(&endpoint, status, &answer)),
        }
    }
    Err(SubmitError::Refused { url: endpoint, status: 409, message: "the witness's size kept changing".into() })
}

fn refused(url: &str, status: u16, body: &[u8]) -> SubmitError {
    let text = String::from_utf8_lossy(body);
    let first: String = text.lines().next().unwrap_or_default().chars().filter(|c| !c.is_control()).take(200).collect();
    SubmitError::Refused { url: url.to_owned(), status, message: first }
}
