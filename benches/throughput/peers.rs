//! `--peers`: the same NDJSON fleet through posledger's CLI (whole processes) and through two peers a
//! processor would pick instead, SQLite and PostgreSQL in the Message DB layout, in one run.
//!
//! - posledger: `posledger append --dir NEW FILE`, `replay fleet DIR --format json`, `replay verify DIR
//!   --json`, the release binaries next to this bench executable, wall time of each process.
//! - SQLite (`rusqlite`, bundled): WAL, `synchronous=FULL`, one transaction per 10,000 events, table
//!   `events(position INTEGER PRIMARY KEY, stream, version, type, time, data, UNIQUE(stream, version))`.
//! - PostgreSQL (the server binaries on this machine; skipped with a message where there are none): a
//!   server of its own (initdb in a temporary folder, 127.0.0.1, `fsync=on`, `synchronous_commit=on`),
//!   Message DB's `messages` table, and a `write_message` function that checks the expected version under
//!   `pg_advisory_xact_lock(hashtext(stream_name))`, one call per event, committed every 1,000 events.
//!
//! Each peer reads the NDJSON file and parses every line (serde_json, typed: stream, type, time) as it
//! inserts; a stream is the terminal's SN or the directive's id, its version the count of the stream's
//! earlier events (0, 1, 2, …). Reads (status, verify) keep the fastest of several runs, as the rest of
//! the harness; appends run once.

use posledger::sim;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Latest event type per stream → number of streams (the peers' fleet status).
type TypeCounts = BTreeMap<String, i64>;

type Result<T> = std::result::Result<T, String>;

/// Events per SQLite transaction.
const SQLITE_TX: u64 = 10_000;
/// Events per PostgreSQL transaction (Message DB writes one message per call; the client commits).
const PG_TX: u64 = 1_000;

/// The three operations compared, in the table's order.
const OPS: [&str; 3] = ["append", "fleet status", "verify"];

/// The seconds of each operation (`OPS`) one system took, `None` where it has none or failed.
type Column = [Option<f64>; 3];

/// The fields a peer needs from a line; the rest of the line is checked as JSON and stored as it is.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default)]
    device: Option<&'a str>,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    at: &'a str,
}

impl<'a> Head<'a> {
    fn parse(line: &'a str, number: u64) -> Result<Self> {
        let head: Head = serde_json::from_str(line).map_err(|e| format!("NDJSON line {number}: {e}"))?;
        if head.device.is_none() && head.id.is_none() {
            return Err(format!("NDJSON line {number}: neither `device` nor `id`"));
        }
        Ok(head)
    }

    /// The terminal's SN, or the directive's id.
    fn stream(&self) -> &'a str {
        self.device.or(self.id).unwrap_or_default()
    }
}

/// Streams the NDJSON file line by line: `each(line, head, version)`, where version is the number of
/// earlier events of the stream. Returns the number of events (blank lines skipped).
fn each_event(ndjson: &Path, mut each: impl FnMut(&str, &Head, i64) -> Result<()>) -> Result<u64> {
    let file = std::fs::File::open(ndjson).map_err(|e| format!("{}: {e}", ndjson.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut versions: HashMap<String, i64> = HashMap::new();
    let mut line = String::new();
    let (mut events, mut number) = (0u64, 0u64);
    loop {
        line.clear();
        number += 1;
        if reader.read_line(&mut line).map_err(|e| format!("{}: {e}", ndjson.display()))? == 0 {
            return Ok(events);
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        let head = Head::parse(text, number)?;
        let version = match versions.get_mut(head.stream()) {
            Some(v) => {
                *v += 1;
                *v
            }
            None => {
                versions.insert(head.stream().to_owned(), 0);
                0
            }
        };
        each(text, &head, version)?;
        events += 1;
    }
}

/// What a peer's writer is asked to do next.
enum Step<'l, 'h> {
    /// Write one event: its line, its head, its version (the stream's earlier events).
    Event(&'l str, &'l Head<'h>, i64),
    /// Commit the open transaction, and open the next one unless this is the last.
    Commit { last: bool },
}

/// A peer's append: streams the NDJSON file into `step`, a commit after every `per_tx` events and after
/// the last; returns the seconds from the first read to the last commit.
fn timed_write(
    name: &str,
    ndjson: &Path,
    n: u64,
    per_tx: u64,
    mut step: impl FnMut(Step) -> Result<()>,
) -> Result<f64> {
    let start = Instant::now();
    let mut in_tx = 0u64;
    let written = each_event(ndjson, |line, head, version| {
        step(Step::Event(line, head, version))?;
        in_tx += 1;
        if in_tx == per_tx {
            step(Step::Commit { last: false })?;
            in_tx = 0;
        }
        Ok(())
    })?;
    step(Step::Commit { last: true })?;
    let seconds = start.elapsed().as_secs_f64();
    if written != n {
        return Err(format!("{name} wrote {written} events, not {n}"));
    }
    Ok(seconds)
}

/// The streams of the simulated fleet, counted from the events themselves: (terminals, directives).
fn fleet_streams(events: &[(chrono::DateTime<chrono::Utc>, ledger::AppendEvent)]) -> (u64, u64) {
    let mut terminals = HashSet::new();
    let mut directives = HashSet::new();
    for (_, e) in events {
        match &e.event {
            ledger::Event::Terminal(d) => terminals.insert(d.device.as_str().to_owned()),
            ledger::Event::Directive(d) => directives.insert(d.id.as_str().to_owned()),
        };
    }
    (terminals.len() as u64, directives.len() as u64)
}

// ---------------------------------------------------------------------------------------------------
// posledger, as whole processes

/// The `posledger` and `replay` release binaries: beside this bench executable (`target/release/deps/..`
/// → `target/release/`), or in `$CARGO_TARGET_DIR/release`.
pub(super) fn binaries() -> Result<(PathBuf, PathBuf)> {
    let mut dirs = Vec::new();
    if let Some(release) = std::env::current_exe().ok().and_then(|e| e.parent()?.parent().map(Path::to_owned)) {
        dirs.push(release);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(target).join("release"));
    }
    for dir in &dirs {
        let (posledger, replay) = (dir.join("posledger"), dir.join("replay"));
        if posledger.is_file() && replay.is_file() {
            return Ok((posledger, replay));
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "the release binaries `posledger` and `replay` are not in {}: run `cargo build --release -p posledger -p posledger-replay` first",
        looked.join(" or ")
    ))
}

/// Runs a command to its end; returns its wall time and its standard output.
fn run_process(command: &mut Command) -> Result<(f64, Vec<u8>)> {
    let start = Instant::now();
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("{command:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok((seconds, out.stdout))
}

fn json_field(stdout: &[u8], field: &str) -> Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| format!("not JSON: {e}"))?;
    value.get(field).cloned().ok_or_else(|| format!("no `{field}` in {value}"))
}

/// posledger's three CLI paths on the NDJSON file; prints what `replay fleet` and `replay verify` found.
fn posledger_column(base: &Path, ndjson: &Path, n: u64, terminals: u64, problems: &mut Vec<String>) -> Result<Column> {
    let (posledger, replay) = binaries()?;
    let dir = super::fresh(&base.join("posledger"));
    let (append, _) = run_process(Command::new(&posledger).arg("append").arg("--dir").arg(&dir).arg(ndjson))?;
    let (fleet, out) = super::best_of(|| {
        run_process(Command::new(&replay).arg("fleet").arg(&dir).args(["--format", "json"])).map(|(_, out)| out)
    });
    let out = out?;
    let devices = json_field(&out, "devices")?;
    println!("posledger  `replay fleet`: {devices} terminals, by status {}", json_field(&out, "status")?);
    if devices.as_u64() != Some(terminals) {
        problems.push(format!("replay fleet counted {devices} terminals, the fleet has {terminals}"));
    }
    let (verify, out) =
        super::best_of(|| run_process(Command::new(&replay).arg("verify").arg(&dir).arg("--json")).map(|(_, out)| out));
    let records = json_field(&out?, "records")?;
    println!("posledger  `replay verify`: {records} records");
    if records.as_u64() != Some(n) {
        problems.push(format!("replay verify counted {records} records, the fleet has {n}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok([Some(append), Some(fleet), Some(verify)])
}

// ---------------------------------------------------------------------------------------------------
// SQLite

const SQLITE_SCHEMA: &str = "CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    time TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE(stream, version)
)";

/// The fleet status (latest event per stream, counted by type) in the forms SQLite can run it; the
/// harness times each and keeps the fastest (all must agree).
const SQLITE_STATUS: [(&str, &str); 3] = [
    (
        "correlated max(version)",
        "SELECT type, count(*) FROM events e \
         WHERE version = (SELECT max(version) FROM events WHERE stream = e.stream) GROUP BY type",
    ),
    (
        "window row_number()",
        "SELECT type, count(*) FROM (SELECT type, row_number() OVER \
         (PARTITION BY stream ORDER BY version DESC) AS r FROM events) WHERE r = 1 GROUP BY type",
    ),
    (
        "join on GROUP BY max(version)",
        "SELECT e.type, count(*) FROM (SELECT stream, max(version) AS v FROM events GROUP BY stream) l \
         JOIN events e ON e.stream = l.stream AND e.version = l.v GROUP BY e.type",
    ),
];

fn sql_err(what: &str) -> impl Fn(rusqlite::Error) -> String + '_ {
    move |e| format!("SQLite peer, {what}: {e}")
}

fn sqlite_open(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path).map_err(sql_err("open"))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sql_err("journal_mode"))?;
    if mode != "wal" {
        return Err(format!("SQLite peer: journal_mode is {mode}, not wal"));
    }
    conn.execute_batch("PRAGMA synchronous=FULL").map_err(sql_err("synchronous"))?;
    Ok(conn)
}

/// Reads, parses and inserts every event; returns the seconds.
fn sqlite_append(conn: &rusqlite::Connection, ndjson: &Path, n: u64) -> Result<f64> {
    conn.execute_batch(SQLITE_SCHEMA).map_err(sql_err("schema"))?;
    let mut insert = conn
        .prepare("INSERT INTO events (stream, version, type, time, data) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sql_err("prepare"))?;
    conn.execute_batch("BEGIN").map_err(sql_err("begin"))?;
    timed_write("SQLite peer", ndjson, n, SQLITE_TX, |step| match step {
        Step::Event(line, head, version) => {
            insert.execute((head.stream(), version, head.kind, head.at, line)).map(drop).map_err(sql_err("insert"))
        }
        Step::Commit { last } => {
            conn.execute_batch(if last { "COMMIT" } else { "COMMIT; BEGIN" }).map_err(sql_err("commit"))
        }
    })
}

fn sqlite_status(conn: &rusqlite::Connection, sql: &str) -> Result<TypeCounts> {
    let mut statement = conn.prepare_cached(sql).map_err(sql_err("status query"))?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql_err("status query"))?;
    rows.collect::<std::result::Result<_, _>>().map_err(sql_err("status query"))
}

/// SQLite's nearest to `replay verify`: `PRAGMA integrity_check` (pages, b-trees, indexes, UNIQUE).
fn sqlite_integrity(conn: &rusqlite::Connection) -> Result<()> {
    let verdict: String =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(sql_err("integrity_check"))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(format!("SQLite integrity_check: {verdict}"))
    }
}

/// The SQLite peer; returns its column and its fleet status.
fn sqlite_column(base: &Path, ndjson: &Path, n: u64) -> Result<(Column, TypeCounts)> {
    let dir = super::fresh(&base.join("sqlite"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let conn = sqlite_open(&dir.join("events.db"))?;
    let append = sqlite_append(&conn, ndjson, n)?;
    conn.execute_batch("ANALYZE").map_err(sql_err("analyze"))?;
    let mut best: Option<(f64, TypeCounts)> = None;
    for (name, sql) in SQLITE_STATUS {
        let (seconds, counts) = super::best_of(|| sqlite_status(&conn, sql));
        let counts = counts?;
        println!("SQLite     status as {name:<30} {seconds:>8.3} s");
        if let Some((_, first)) = &best {
            if *first != counts {
                return Err(format!("SQLite status forms disagree: {first:?} and {counts:?} ({name})"));
            }
        }
        if best.as_ref().is_none_or(|(b, _)| seconds < *b) {
            best = Some((seconds, counts));
        }
    }
    let (status, counts) = best.ok_or("no SQLite status query")?;
    let (verify, verdict) = super::best_of(|| sqlite_integrity(&conn));
    verdict?;
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(([Some(append), Some(status), Some(verify)], counts))
}

// ---------------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL server of the harness's own, in a temporary folder; stopped and removed on drop.
struct PgServer {
    bin: PathBuf,
    root: PathBuf,
    /// Run the server's programs as this user (initdb refuses root).
    run_as: Option<String>,
    port: u16,
    /// `pg_ctl start` was run (so drop stops the server).
    started: bool,
}

/// The folder holding `initdb` and `pg_ctl`: on PATH, in /usr/local/bin, or the newest
/// /usr/lib/postgresql/*/bin.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.push("/usr/local/bin".into());
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()));
    dirs.extend(versions.into_iter().rev());
    dirs.into_iter().find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// (uid, gid) of a user, from /etc/passwd.
fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.split(':').next() == Some(user))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("a free port: {e}"))
}

impl PgServer {
    /// Starts a server, or says why not (`Ok(None)`: skipped, with the reason printed).
    fn start(root: &Path) -> Result<Option<PgServer>> {
        use std::os::unix::fs::MetadataExt;
        let Some(bin) = pg_bin() else {
            println!(
                "PostgreSQL peer skipped: no initdb and pg_ctl on PATH, in /usr/local/bin or /usr/lib/postgresql/*/bin"
            );
            return Ok(None);
        };
        let root = super::fresh(root);
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let is_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        let run_as = if is_root {
            let Some((uid, gid)) = passwd_ids("postgres") else {
                println!(
                    "PostgreSQL peer skipped: running as root (initdb refuses it) and there is no `postgres` user"
                );
                return Ok(None);
            };
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", root.display()))?;
            Some("postgres".to_owned())
        } else {
            None
        };
        let mut server = PgServer { bin, root, run_as, port: free_port()?, started: false };
        server.run(
            "initdb",
            &["-D", "data", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
        )?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on",
            server.port,
            server.root.display()
        );
        server.started = true;
        server.run("pg_ctl", &["-D", "data", "-l", "server.log", "-w", "-o", &options, "start"])?;
        Ok(Some(server))
    }

    /// Runs one of the server's programs in its folder, as `run_as` where set.
    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        command.args(args).current_dir(&self.root);
        run_process(&mut command).map(|_| ()).map_err(|e| {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            format!("PostgreSQL peer: {e}\n{log}")
        })
    }

    fn connect(&self) -> Result<postgres::Client> {
        let config = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port);
        postgres::Client::connect(&config, postgres::NoTls).map_err(|e| format!("PostgreSQL peer, connect: {e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let stopped = if self.started { self.run("pg_ctl", &["-D", "data", "-m", "fast", "stop"]) } else { Ok(()) };
        if let Err(e) = stopped {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Message DB's table and indexes (its `category` index left out: these streams have no categories,
/// and nothing here reads by category), and its `write_message` with the expected-version check under
/// the stream's advisory lock.
const PG_SCHEMA: &str = "
CREATE TABLE messages (
    global_position bigserial PRIMARY KEY,
    position bigint NOT NULL,
    time timestamp NOT NULL,
    stream_name text NOT NULL,
    type text NOT NULL,
    data jsonb,
    metadata jsonb,
    id uuid NOT NULL DEFAULT gen_random_uuid()
);
CREATE UNIQUE INDEX messages_id ON messages (id);
CREATE UNIQUE INDEX messages_stream ON messages (stream_name, position);
CREATE FUNCTION write_message(_stream_name text, _type text, _time text, _data text, _expected_version bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    _stream_version bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(_stream_name));
    SELECT max(position) INTO _stream_version FROM messages WHERE stream_name = _stream_name;
    IF _stream_version IS NULL THEN
        _stream_version := -1;
    END IF;
    IF _expected_version IS NOT NULL AND _expected_version <> _stream_version THEN
        RAISE EXCEPTION 'Wrong expected version: % (Stream: %, Stream Version: %)',
            _expected_version, _stream_name, _stream_version;
    END IF;
    INSERT INTO messages (position, time, stream_name, type, data)
        VALUES (_stream_version + 1, _time::timestamptz AT TIME ZONE 'UTC', _stream_name, _type, _data::jsonb);
    RETURN _stream_version + 1;
END;
$$;
";

const PG_STATUS: &str = "SELECT type, count(*) FROM (SELECT DISTINCT ON (stream_name) stream_name, type \
    FROM messages ORDER BY stream_name, position DESC) latest GROUP BY type";

/// PostgreSQL's nearest to `replay verify` (amcheck): every heap page, and every index against the heap.
const PG_VERIFY: &str = "SELECT (SELECT count(*) FROM verify_heapam('messages')), \
    bt_index_check('messages_pkey', true)::text, bt_index_check('messages_id', true)::text, \
    bt_index_check('messages_stream', true)::text";

fn pg_err(what: &str) -> impl Fn(postgres::Error) -> String + '_ {
    move |e| format!("PostgreSQL peer, {what}: {e}")
}

fn pg_append(client: &mut postgres::Client, ndjson: &Path, n: u64) -> Result<f64> {
    use postgres::types::Type;
    client.batch_execute(PG_SCHEMA).map_err(pg_err("schema"))?;
    let write = client
        .prepare_typed(
            "SELECT write_message($1, $2, $3, $4, $5)",
            &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8],
        )
        .map_err(pg_err("prepare"))?;
    client.batch_execute("BEGIN").map_err(pg_err("begin"))?;
    timed_write("PostgreSQL peer", ndjson, n, PG_TX, |step| match step {
        Step::Event(line, head, version) => client
            .execute(&write, &[&head.stream(), &head.kind, &head.at, &line, &(version - 1)])
            .map(drop)
            .map_err(pg_err("write_message")),
        Step::Commit { last } => {
            client.batch_execute(if last { "COMMIT" } else { "COMMIT; BEGIN" }).map_err(pg_err("commit"))
        }
    })
}

fn pg_status(client: &mut postgres::Client) -> Result<TypeCounts> {
    let rows = client.query(PG_STATUS, &[]).map_err(pg_err("status query"))?;
    Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect())
}

fn pg_verify(client: &mut postgres::Client) -> Result<()> {
    let row = client.query_one(PG_VERIFY, &[]).map_err(pg_err("amcheck"))?;
    match row.get::<_, i64>(0) {
        0 => Ok(()),
        bad => Err(format!("PostgreSQL amcheck: verify_heapam reported {bad} problems")),
    }
}

/// The PostgreSQL peer; `Ok(None)` where it was skipped.
fn pg_column(base: &Path, ndjson: &Path, n: u64) -> Result<Option<(Column, TypeCounts)>> {
    let Some(server) = PgServer::start(&base.join("postgres"))? else { return Ok(None) };
    let mut client = server.connect()?;
    let version: String = client.query_one("SHOW server_version", &[]).map_err(pg_err("version"))?.get(0);
    println!("PostgreSQL {version} on 127.0.0.1:{}, data in {}", server.port, server.root.display());
    let append = pg_append(&mut client, ndjson, n)?;
    client.batch_execute("VACUUM ANALYZE messages").map_err(pg_err("vacuum analyze"))?;
    let (status, counts) = super::best_of(|| pg_status(&mut client));
    let counts = counts?;
    let verify = match client.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck") {
        Ok(()) => {
            let (seconds, verdict) = super::best_of(|| pg_verify(&mut client));
            verdict?;
            Some(seconds)
        }
        Err(e) => {
            println!("PostgreSQL peer: no amcheck ({e}), no verify row");
            None
        }
    };
    drop(client);
    drop(server);
    Ok(Some(([Some(append), Some(status), verify], counts)))
}

// ---------------------------------------------------------------------------------------------------
// The run and its table

/// One system's results, or why it has none.
fn report<T>(name: &str, result: Result<T>) -> Option<T> {
    result.map_err(|e| println!("{name}: {e}")).ok()
}

/// Checks a peer's fleet status against the fleet: one count per stream.
fn check_streams(name: &str, counts: &TypeCounts, streams: u64, problems: &mut Vec<String>) {
    let total: i64 = counts.values().sum();
    println!("{name:<10} latest event per stream: {total} streams, by type {counts:?}");
    if total as u64 != streams {
        problems.push(format!("{name} counted {total} streams, the fleet has {streams}"));
    }
}

fn rate(n: u64, seconds: Option<f64>) -> String {
    seconds.map_or("–".into(), |s| format!("{:.0} ev/s ({s:.3} s)", n as f64 / s))
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(o), Some(t)) => format!("{:.2}x", t / o),
        _ => "–".into(),
    }
}

fn print_table(n: u64, posledger: &Column, pg: &Column, sqlite: &Column) {
    println!(
        "\n{:<13} {:>26} {:>26} {:>26} {:>13} {:>17}",
        "",
        "posledger (CLI process)",
        "PostgreSQL (Message DB)",
        "SQLite (WAL, FULL)",
        "posledger/PG",
        "posledger/SQLite"
    );
    for (i, op) in OPS.iter().enumerate() {
        println!(
            "{op:<13} {:>26} {:>26} {:>26} {:>13} {:>17}",
            rate(n, posledger[i]),
            rate(n, pg[i]),
            rate(n, sqlite[i]),
            ratio(posledger[i], pg[i]),
            ratio(posledger[i], sqlite[i])
        );
    }
}

/// The rows of the `--json` output: posledger's, then each peer's with posledger's row as its baseline
/// (`ratio_to_baseline` = the peer's events/s over posledger's, as everywhere in the harness).
fn json_rows(n: u64, columns: &[(&str, &Column)]) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for (i, op) in OPS.iter().enumerate() {
        let ours = format!("peers: {op}, {}", columns[0].0);
        for (system, column) in columns {
            let Some(seconds) = column[i] else { continue };
            let name = format!("peers: {op}, {system}");
            let (baseline, ratio) = match columns[0].1[i] {
                Some(o) if name != ours => (Some(ours.clone()), Some(o / seconds)),
                _ => (None, None),
            };
            rows.push(serde_json::json!({
                "name": name,
                "events": n,
                "seconds": seconds,
                "events_per_s": n as f64 / seconds,
                "baseline": baseline,
                "ratio_to_baseline": ratio,
            }));
        }
    }
    rows
}

/// `--peers`: for each size, the same NDJSON fleet through posledger and both peers; returns the JSON
/// rows. Exits non-zero if a system's counts do not match the fleet.
pub(super) fn run(dir: &Path, sizes: &[u64], shape: sim::Shape) -> Vec<serde_json::Value> {
    if let Err(e) = binaries() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for &size in sizes {
        let base = dir.join(format!("peers-{size}"));
        std::fs::create_dir_all(&base).expect("the harness folder");
        let events = super::simulate(size, shape);
        let n = events.len() as u64;
        let (terminals, directives) = fleet_streams(&events);
        let ndjson = base.join("fleet.ndjson");
        std::fs::write(&ndjson, super::render_ndjson(&events)).expect("write the NDJSON fleet");
        drop(events);
        println!(
            "\n== peers: {n} events as NDJSON ({:.0} MB), {terminals} terminals + {directives} directives = {} streams ==",
            std::fs::metadata(&ndjson).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
            terminals + directives
        );
        let streams = terminals + directives;
        let ours = report("posledger", posledger_column(&base, &ndjson, n, terminals, &mut problems));
        let pg = report("PostgreSQL peer", pg_column(&base, &ndjson, n)).flatten();
        let sqlite = report("SQLite peer", sqlite_column(&base, &ndjson, n));
        for (name, peer) in [("PostgreSQL", &pg), ("SQLite", &sqlite)] {
            if let Some((_, counts)) = peer {
                check_streams(name, counts, streams, &mut problems);
            }
        }
        if let (Some((_, a)), Some((_, b))) = (&pg, &sqlite) {
            if a != b {
                problems.push(format!("PostgreSQL and SQLite disagree on the status: {a:?} and {b:?}"));
            }
        }
        let none = [None; 3];
        let ours = ours.unwrap_or(none);
        let pg = pg.map_or(none, |(c, _)| c);
        let sqlite = sqlite.map_or(none, |(c, _)| c);
        print_table(n, &ours, &pg, &sqlite);
        rows.extend(json_rows(
            n,
            &[("posledger", &ours), ("PostgreSQL (Message DB layout)", &pg), ("SQLite (WAL, FULL)", &sqlite)],
        ));
        let _ = std::fs::remove_dir_all(&base);
    }
    for problem in &problems {
        println!("MISMATCH: {problem}");
    }
    if !problems.is_empty() {
        std::process::exit(1);
    }
    rows
}
