//! `--scale`: the whole commands a processor and a regulator run, as processes of their own, at growing
//! sizes (10^6, 10^7 and 10^8 events by default; `--events N` replaces the list), to show whether the
//! cost per event stays flat and what memory a terminal costs.
//!
//! For each size, on a fresh folder under `--dir`:
//! - `posledger simulate --dir D --devices K --seed 1 [--shape S]`: the writer (simulation plus durable
//!   append, index included) — K is the size over the shape's events per terminal;
//! - `replay fleet D --format json` (the fleet rebuild, start-up and output included; its JSON gives the
//!   terminal count), `replay verify D --json`, `replay audit D --format json`: best of two runs each.
//!
//! Each row gives the wall time, events per second, nanoseconds of wall time per event and that cost
//! against the smallest size's (the flatness the issue asks for: within 1.5×), and the process's peak
//! resident memory, also per terminal. Peak memory is read from `/proc/PID/status` (`VmHWM`, which only
//! grows) every 5 ms while the process runs; a process's last few milliseconds are not seen, which
//! understates a peak reached only then (a fold reaches its peak well before it prints).
//!
//! A 10^8-event run writes about 6 GB (standard shape) and needs about 11 GB of memory for the writer;
//! the folder is removed after each size.

use posledger::sim;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

/// What one process took.
struct Measured {
    seconds: f64,
    peak_rss_kib: u64,
    stdout: Vec<u8>,
}

/// `VmHWM` of a running process, in KiB (`None` once it has exited).
fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `command` to its end, sampling its peak memory; fails on a non-zero exit.
fn measure(command: &mut Command) -> Result<Measured> {
    let described = format!("{command:?}");
    let start = Instant::now();
    let mut child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("{described}: {e}"))?;
    let pid = child.id();
    // Drain the pipes on threads of their own, so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let mut peak = 0;
    let status = loop {
        if let Some(rss) = peak_rss_of(pid) {
            peak = peak.max(rss);
        }
        match child.try_wait().map_err(|e| format!("{described}: {e}"))? {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{described}: {status}: {}", String::from_utf8_lossy(&stderr).trim()));
    }
    Ok(Measured { seconds, peak_rss_kib: peak, stdout })
}

/// The better (faster) of two runs, with the larger of their peaks.
fn best_of_two(mut run: impl FnMut() -> Result<Measured>) -> Result<Measured> {
    let a = run()?;
    let b = run()?;
    let peak = a.peak_rss_kib.max(b.peak_rss_kib);
    let mut best = if a.seconds <= b.seconds { a } else { b };
    best.peak_rss_kib = peak;
    Ok(best)
}

fn json_u64(stdout: &[u8], pointer: &str) -> Result<u64> {
    let value: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| format!("not JSON: {e}"))?;
    value.pointer(pointer).and_then(serde_json::Value::as_u64).ok_or_else(|| format!("no {pointer} in the output"))
}

/// One size: the four processes on one fresh ledger; returns its rows (`events` in each is the log's
/// size as `replay verify` counted it).
fn one_size(base: &Path, size: u64, shape: sim::Shape) -> Result<Vec<Row>> {
    let (posledger, replay) = super::peers::binaries()?;
    let dir = super::fresh(&base.join(format!("scale-{size}")));
    let devices = (size / shape.events_per_device()).max(1);
    let shape_name = super::shape_name(shape);
    println!("\n== scale: {size} events ({devices} devices, {shape_name}) in {} ==", dir.display());
    let simulate = measure(Command::new(&posledger).args(["simulate", "--dir"]).arg(&dir).args([
        "--devices",
        &devices.to_string(),
        "--seed",
        "1",
        "--shape",
        shape_name,
    ]))?;
    let verify = best_of_two(|| measure(Command::new(&replay).arg("verify").arg(&dir).arg("--json")))?;
    let n = json_u64(&verify.stdout, "/records")?;
    let fleet = best_of_two(|| measure(Command::new(&replay).arg("fleet").arg(&dir).args(["--format", "json"])))?;
    let terminals = json_u64(&fleet.stdout, "/devices")?;
    let audit = best_of_two(|| measure(Command::new(&replay).arg("audit").arg(&dir).args(["--format", "json"])))?;
    let disk = super::dir_bytes(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{n} events, {terminals} terminals, {:.1} bytes on disk per event ({:.2} GB)",
        disk as f64 / n as f64,
        disk as f64 / 1e9
    );
    let row = |name: &str, m: &Measured| Row {
        name: format!("scale: {name}"),
        events: n,
        terminals,
        seconds: m.seconds,
        peak_rss_kib: m.peak_rss_kib,
    };
    Ok(vec![
        row("posledger simulate (write, durable)", &simulate),
        row("replay fleet", &fleet),
        row("replay verify", &verify),
        row("replay audit", &audit),
    ])
}

struct Row {
    name: String,
    events: u64,
    terminals: u64,
    seconds: f64,
    peak_rss_kib: u64,
}

impl Row {
    fn ns_per_event(&self) -> f64 {
        self.seconds * 1e9 / self.events as f64
    }
}

/// `--scale`: every size, then the table; returns the JSON rows (`baseline` is the same command at the
/// smallest size, `ratio_to_baseline` its events/s over the baseline's: 1.0 is a flat cost).
pub(super) fn run(dir: &Path, sizes: &[u64], shape: sim::Shape) -> Vec<serde_json::Value> {
    if let Err(e) = super::peers::binaries() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let mut rows: Vec<Row> = Vec::new();
    for &size in sizes {
        match one_size(dir, size, shape) {
            Ok(more) => rows.extend(more),
            Err(e) => {
                eprintln!("scale run at {size} events failed: {e}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "\n{:<40} {:>12} {:>10} {:>9} {:>12} {:>8} {:>7} {:>10} {:>11}",
        "command (whole process)",
        "events",
        "terminals",
        "seconds",
        "events/s",
        "ns/event",
        "vs first",
        "peak MiB",
        "B/terminal"
    );
    let mut json = Vec::new();
    for row in &rows {
        let first = rows.iter().find(|r| r.name == row.name).unwrap_or(row);
        let flat = row.ns_per_event() / first.ns_per_event();
        println!(
            "{:<40} {:>12} {:>10} {:>9.2} {:>12.0} {:>8.0} {:>6.2}× {:>10.0} {:>11.0}",
            row.name,
            row.events,
            row.terminals,
            row.seconds,
            row.events as f64 / row.seconds,
            row.ns_per_event(),
            flat,
            row.peak_rss_kib as f64 / 1024.0,
            row.peak_rss_kib as f64 * 1024.0 / row.terminals.max(1) as f64
        );
        json.push(serde_json::json!({
            "name": row.name,
            "events": row.events,
            "seconds": row.seconds,
            "events_per_s": row.events as f64 / row.seconds,
            "baseline": (first.events != row.events).then(|| format!("{} at {} events", first.name, first.events)),
            "ratio_to_baseline": (first.events != row.events).then_some(1.0 / flat),
            "terminals": row.terminals,
            "peak_rss_kib": row.peak_rss_kib,
        }));
    }
    json
}
