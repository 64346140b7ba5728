//! `posledger-witness`: serve a C2SP tlog-witness (docs/CHECKPOINTS.md).
//! Exit codes: 0 success; 1 the state is damaged; 2 usage or I/O error.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tlog::witness::LogPolicy;
use tlog::{keyfile, KeyType, SigningKey};
use witness::server::{serve, Witness};
use witness::state::{State, StateError};

/// A C2SP tlog-witness for posledger logs (and any log that signs C2SP checkpoints with Ed25519).
#[derive(Parser)]
#[command(name = "posledger-witness", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST /add-checkpoint and GET /<origin hash>/checkpoint.
    #[command(
        after_help = "Example:\n  posledger-witness generate-key --name regulator.example/witness --out w.key\n  posledger-witness serve --state /var/lib/witness --key w.key --log acquirer.vkey --listen 127.0.0.1:7380\n\nEach --log is a log's verifier key; its name is the origin of the checkpoints it signs.\nPrints `listening on ADDR` once it accepts connections (with port 0, the port chosen)."
    )]
    Serve(ServeArgs),
    /// Generate the witness's cosignature key: FILE (mode 0600) and FILE.vkey.
    GenerateKey(GenerateArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The state folder (created if missing): the latest cosigned checkpoint per log.
    #[arg(long)]
    state: PathBuf,
    /// The witness's private cosignature key file (mode 0600).
    #[arg(long)]
    key: PathBuf,
    /// A log's verifier key, a file or the vkey text (repeatable).
    #[arg(long = "log", required = true)]
    logs: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7380")]
    listen: String,
    /// Longest a request's headers, and then its body, may take to arrive (seconds).
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
}

#[derive(Args)]
struct GenerateArgs {
    /// The witness's name, e.g. regulator.example/witness.
    #[arg(long)]
    name: String,
    /// The private key file to create (FILE.vkey gets the verifier key).
    #[arg(long)]
    out: PathBuf,
}

fn generate(args: GenerateArgs) -> Result<(), (u8, String)> {
    let key = SigningKey::generate(&args.name, KeyType::Cosignature).map_err(|e| (2, format!("--name: {e}")))?;
    let mut vkey = args.out.clone().into_os_string();
    vkey.push(".vkey");
    let vkey = PathBuf::from(vkey);
    if vkey.exists() {
        return Err((2, format!("{}: already exists (a key file is never overwritten)", vkey.display())));
    }
    keyfile::create_private(&args.out, &key).map_err(|e| (2, e.to_string()))?;
    keyfile::create_public(&vkey, &key.verifier_key()).map_err(|e| (2, e.to_string()))?;
    println!("{}", key.verifier_key());
    Ok(())
}

fn run_serve(args: ServeArgs) -> Result<(), (u8, String)> {
    let key = keyfile::load_signing_key(&args.key).map_err(|e| (2, e.to_string()))?;
    if key.key_type() != KeyType::Cosignature {
        return Err((2, format!("{}: not a cosignature key (make one with generate-key)", args.key.display())));
    }
    let mut logs: Vec<LogPolicy> = Vec::new();
    for text in &args.logs {
        let vkey = keyfile::load_verifier_key(text).map_err(|e| (2, format!("--log: {e}")))?;
        if vkey.key_type() != KeyType::Note {
            return Err((2, format!("--log {vkey}: not a log's note key (type 0x01)")));
        }
        match logs.iter_mut().find(|l| l.origin == vkey.name()) {
            Some(policy) => policy.keys.push(vkey),
            None => logs.push(LogPolicy { origin: vkey.name().to_owned(), keys: vec![vkey] }),
        }
    }
    let state = State::open(&args.state, &logs, &key.verifier_key()).map_err(|e| match e {
        StateError::Damaged { .. } => (1, e.to_string()),
        _ => (2, e.to_string()),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| (2, e.to_string()))?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| (2, format!("{}: {e}", args.listen)))?;
        let addr = listener.local_addr().map_err(|e| (2, e.to_string()))?;
        println!("listening on {addr}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let timeout = std::time::Duration::from_secs(args.timeout_seconds.clamp(1, 3600));
        serve(listener, Arc::new(Witness::new(logs, key, state).with_timeout(timeout)))
            .await
            .map_err(|e| (2, e.to_string()))
    })
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => run_serve(args),
        Command::GenerateKey(args) => generate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, why)) => {
            eprintln!("posledger-witness: {why}");
            ExitCode::from(code)
        }
    }
}
