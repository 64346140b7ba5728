//! `replay export --format parquet`: the log as Parquet tables that DuckDB, Spark and Trino read.
//!
//! Four tables under the `--out` folder (docs/PARQUET.md has every column):
//!
//! - `events/provider=<p>/month=<YYYY-MM>/part-<n>.parquet`: one row per terminal event, Hive-style
//!   partitions by provider and by the month of the event's own time **in China Standard Time**
//!   (UTC+8, the regulator's calendar). `model`, `provider`, `merchant` and `region` are filled on every
//!   row from the terminal's `issued` event.
//! - `directives/part-<n>.parquet`: one row per directive event. Directives belong to no terminal and
//!   no provider, so they are a table of their own: the positions of `events` and `directives`
//!   together are exactly `0..log_size`, each once.
//! - `directive_models/part-<n>.parquet`: one row per (directive, model it lists).
//! - `terminals/part-<n>.parquet`: the fleet projection at the head, one row per terminal, folded by
//!   `projections` (the ledger's own lifecycle rules, not a second copy of them).
//!
//! Every file carries key-value metadata `posledger.ledger_id`, `posledger.log_size`,
//! `posledger.merkle_root` (hex), `posledger.format_version` and `posledger.table`, so any row traces
//! back to `replay prove SOURCE --position N`.
//!
//! ## Bounded memory
//! Rows are buffered column by column per partition; a partition's buffer is written as one row group
//! when it holds [`ParquetOptions::row_group_rows`] rows, and whenever all buffers together exceed
//! [`ParquetOptions::buffer_bytes`] the largest buffer is written (a smaller row group). At most
//! [`ParquetOptions::open_files`] files are open at once; opening one more closes the least recently
//! written (its partition continues in `part-<n+1>`). So memory is the buffers, the fleet projection
//! (about 100 bytes a terminal) and one row group being encoded, whatever the log's length.
//!
//! ## All or nothing
//! Everything is written into a temporary sibling folder `.NAME.tmp-PID`, every file and folder is
//! fsynced, and the folder is renamed to `--out` at the end (an existing empty folder is replaced; a
//! non-empty one is refused before anything is read). A failed export removes the temporary folder, so
//! no partial table is ever found under the output's name.

use crate::error::{output, Error, Failure};
use crate::output::OutputDir;
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use log::{Event, Record, Source, TerminalEvent};
use parquet::basic::{Compression, Encoding, LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{WriterProperties, WriterPropertiesPtr, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, Type, TypePtr};
use projections::{Cut, Options};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The version of the table layout written here (`posledger.format_version`).
pub const FORMAT_VERSION: &str = "1";

/// The partition value of `month`: the event time in this offset (China Standard Time, UTC+8).
pub const MONTH_OFFSET_SECONDS: i32 = 8 * 3_600;

/// A column's value type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// INT64 (signed).
    Int64,
    /// INT64 with logical type TIMESTAMP(MICROS, isAdjustedToUTC = true).
    Timestamp,
    /// BYTE_ARRAY with logical type STRING (UTF-8).
    Utf8,
    /// BOOLEAN.
    Bool,
}

/// How a column is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enc {
    /// DELTA_BINARY_PACKED: positions and times, which grow slowly along the log.
    Delta,
    /// A dictionary (falling back to plain when it outgrows its page): low-cardinality strings.
    Dictionary,
    /// The writer's default without a dictionary.
    Plain,
}

/// One column of a table.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// The column's name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// REQUIRED (never null) or OPTIONAL.
    pub required: bool,
    /// Its encoding.
    pub encoding: Enc,
}

const fn col(name: &'static str, kind: Kind, required: bool, encoding: Enc) -> Column {
    Column { name, kind, required, encoding }
}

use Enc::{Delta, Dictionary, Plain};
use Kind::{Bool, Int64, Timestamp, Utf8};

/// The `events` table: one row per terminal event.
pub const EVENT_COLUMNS: [Column; 25] = [
    col("position", Int64, true, Delta),
    col("version", Int64, true, Delta),
    col("recorded_at", Timestamp, true, Delta),
    col("occurred_at", Timestamp, true, Delta),
    col("month", Utf8, true, Dictionary),
    col("commit", Bool, true, Plain),
    col("event_id", Utf8, false, Plain),
    col("type", Utf8, true, Dictionary),
    col("device", Utf8, true, Dictionary),
    col("model", Utf8, true, Dictionary),
    col("provider", Utf8, true, Dictionary),
    col("merchant", Utf8, true, Dictionary),
    col("region", Utf8, true, Dictionary),
    col("amount_fen", Int64, false, Plain),
    col("transactions", Int64, false, Plain),
    col("reason", Utf8, false, Dictionary),
    col("note", Utf8, false, Dictionary),
    col("directive", Utf8, false, Dictionary),
    col("replaces", Utf8, false, Plain),
    col("replaced_by", Utf8, false, Plain),
    col("contract_id", Utf8, false, Plain),
    col("contract_start", Timestamp, false, Plain),
    col("contract_end", Timestamp, false, Plain),
    col("issued_at", Timestamp, true, Plain),
    col("ledger_id", Utf8, true, Dictionary),
];

/// The `directives` table: one row per directive event.
pub const DIRECTIVE_COLUMNS: [Column; 10] = [
    col("position", Int64, true, Delta),
    col("version", Int64, true, Delta),
    col("recorded_at", Timestamp, true, Delta),
    col("occurred_at", Timestamp, true, Delta),
    col("commit", Bool, true, Plain),
    col("event_id", Utf8, false, Plain),
    col("directive", Utf8, true, Plain),
    col("deadline", Timestamp, false, Plain),
    col("reason", Utf8, true, Dictionary),
    col("model_count", Int64, true, Plain),
];

/// The `directive_models` table: one row per model a directive lists.
pub const DIRECTIVE_MODEL_COLUMNS: [Column; 5] = [
    col("directive", Utf8, true, Dictionary),
    col("model", Utf8, true, Dictionary),
    col("position", Int64, true, Delta),
    col("occurred_at", Timestamp, true, Delta),
    col("deadline", Timestamp, false, Dictionary),
];

/// The `terminals` table: the fleet projection at the head, one row per terminal.
pub const TERMINAL_COLUMNS: [Column; 15] = [
    col("device", Utf8, true, Plain),
    col("model", Utf8, true, Dictionary),
    col("provider", Utf8, true, Dictionary),
    col("merchant", Utf8, true, Dictionary),
    col("region", Utf8, true, Dictionary),
    col("status", Utf8, true, Dictionary),
    col("contract", Utf8, true, Dictionary),
    col("flow_fen", Int64, true, Plain),
    col("open_flags", Utf8, false, Dictionary),
    col("issued_at", Timestamp, true, Plain),
    col("contract_end", Timestamp, true, Plain),
    col("last_position", Int64, true, Plain),
    col("replaces", Utf8, false, Plain),
    col("replaced_by", Utf8, false, Plain),
    col("ledger_id", Utf8, true, Dictionary),
];

/// Limits of a Parquet export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParquetOptions {
    /// Rows in a full row group (131,072 by default; a partition's last row group, or one written to
    /// keep within `buffer_bytes`, is smaller).
    pub row_group_rows: usize,
    /// The most bytes all partition buffers may hold together before the largest is written (256 MiB).
    pub buffer_bytes: usize,
    /// The most files open for writing at once (64).
    pub open_files: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions { row_group_rows: 131_072, buffer_bytes: 256 << 20, open_files: 64 }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParquetSummary {
    /// Rows of `events`.
    pub events: u64,
    /// Rows of `directives`.
    pub directives: u64,
    /// Rows of `directive_models`.
    pub directive_models: u64,
    /// Rows of `terminals`.
    pub terminals: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes of all files.
    pub bytes: u64,
}

/// One value of a row.
#[derive(Clone, Debug)]
enum Cell<'a> {
    Null,
    Int(i64),
    Str(Cow<'a, str>),
    Bool(bool),
}

fn text(s: &str) -> Cell<'_> {
    Cell::Str(Cow::Borrowed(s))
}

fn opt_text(s: Option<&str>) -> Cell<'_> {
    s.map_or(Cell::Null, text)
}

fn int(n: u64) -> Cell<'static> {
    // Every u64 of the log (positions, versions, fen) is far below i64::MAX; saturate rather than wrap.
    Cell::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn micros(at: &DateTime<Utc>) -> Cell<'static> {
    Cell::Int(at.timestamp_micros())
}

/// One column's values of the rows buffered: definition levels and the non-null values.
#[derive(Default)]
struct ColumnBuf {
    defs: Vec<i16>,
    ints: Vec<i64>,
    bools: Vec<bool>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl ColumnBuf {
    fn push(&mut self, cell: &Cell<'_>) {
        match cell {
            Cell::Null => {
                self.defs.push(0);
                return;
            }
            Cell::Int(n) => self.ints.push(*n),
            Cell::Bool(b) => self.bools.push(*b),
            Cell::Str(s) => {
                self.bytes.extend_from_slice(s.as_bytes());
                self.ends.push(self.bytes.len());
            }
        }
        self.defs.push(1);
    }

    fn heap_bytes(&self) -> usize {
        self.defs.len() * 2 + self.ints.len() * 8 + self.bools.len() + self.bytes.len() + self.ends.len() * 8
    }

    /// Empties the buffer and gives its memory back. (Keeping the capacity, as `Vec::clear` does, let
    /// every partition hold on to the largest buffer it ever had: the bound on the buffered bytes
    /// counts lengths, so with hundreds of partitions the retained capacity grew with the log, to a
    /// peak of 2.3 GB at 10^7 events.)
    fn clear(&mut self) {
        *self = ColumnBuf::default();
    }

    fn byte_arrays(&self) -> Vec<ByteArray> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.ends.len());
        for &end in &self.ends {
            out.push(ByteArray::from(self.bytes.get(start..end).unwrap_or_default().to_vec()));
            start = end;
        }
        out
    }
}

type FileWriter = SerializedFileWriter<BufWriter<File>>;

/// One partition of a table: its folder, buffered rows and the file being written.
struct Partition {
    dir: PathBuf,
    columns: Vec<ColumnBuf>,
    rows: usize,
    bytes: usize,
    writer: Option<(PathBuf, FileWriter)>,
    files: u32,
    last_used: u64,
}

/// One table being written.
struct Table {
    name: &'static str,
    root: PathBuf,
    columns: &'static [Column],
    schema: TypePtr,
    properties: WriterPropertiesPtr,
    partitions: HashMap<String, Partition>,
    buffered: usize,
    open: usize,
    tick: u64,
    rows: u64,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    options: ParquetOptions,
}

/// The provenance every file carries.
#[derive(Clone, Debug)]
struct Provenance {
    ledger_id: Option<u64>,
    log_size: u64,
    root_hex: String,
}

fn parquet_error(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> Error + '_ {
    move |source| Error::Parquet { path: path.to_owned(), source }
}

fn schema(name: &str, columns: &[Column]) -> Result<TypePtr, parquet::errors::ParquetError> {
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let (physical, logical) = match c.kind {
            Kind::Int64 => (Physical::INT64, None),
            Kind::Timestamp => {
                (Physical::INT64, Some(LogicalType::Timestamp { is_adjusted_to_u_t_c: true, unit: TimeUnit::MICROS }))
            }
            Kind::Utf8 => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
            Kind::Bool => (Physical::BOOLEAN, None),
        };
        let repetition = if c.required { Repetition::REQUIRED } else { Repetition::OPTIONAL };
        let field = Type::primitive_type_builder(c.name, physical)
            .with_repetition(repetition)
            .with_logical_type(logical)
            .build()?;
        fields.push(Arc::new(field));
    }
    Ok(Arc::new(Type::group_type_builder(name).with_fields(fields).build()?))
}

fn properties(
    table: &str,
    columns: &[Column],
    provenance: &Provenance,
    options: &ParquetOptions,
) -> WriterPropertiesPtr {
    let mut metadata = vec![
        KeyValue::new("posledger.table".to_owned(), table.to_owned()),
        KeyValue::new("posledger.format_version".to_owned(), FORMAT_VERSION.to_owned()),
        KeyValue::new("posledger.log_size".to_owned(), provenance.log_size.to_string()),
        KeyValue::new("posledger.merkle_root".to_owned(), provenance.root_hex.clone()),
        KeyValue::new("posledger.month_time_zone".to_owned(), "+08:00".to_owned()),
    ];
    if let Some(id) = provenance.ledger_id {
        metadata.push(KeyValue::new("posledger.ledger_id".to_owned(), ledger_hex(id)));
    }
    let mut builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(options.row_group_rows.max(1))
        .set_key_value_metadata(Some(metadata));
    for c in columns {
        let path = ColumnPath::from(c.name);
        builder = match c.encoding {
            Enc::Delta => builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED),
            Enc::Dictionary => builder.set_column_dictionary_enabled(path, true),
            Enc::Plain => builder.set_column_dictionary_enabled(path, false),
        };
    }
    Arc::new(builder.build())
}

impl Table {
    fn new(
        name: &'static str,
        root: &Path,
        columns: &'static [Column],
        provenance: &Provenance,
        options: ParquetOptions,
        sub: &str,
    ) -> Result<Table, Error> {
        let root = if sub.is_empty() { root.join(name) } else { root.join(name).join(sub) };
        let schema = schema(name, columns).map_err(parquet_error(&root))?;
        Ok(Table {
            name,
            properties: properties(name, columns, provenance, &options),
            root,
            columns,
            schema,
            partitions: HashMap::new(),
            buffered: 0,
            open: 0,
            tick: 0,
            rows: 0,
            files: Vec::new(),
            dirs: Vec::new(),
            options,
        })
    }

    /// Buffers one row (cells in column order) in partition `key` (a relative folder, `""` for none).
    fn push(&mut self, out: &OutputDir, key: &str, row: &[Cell<'_>]) -> Result<(), Error> {
        if row.len() != self.columns.len() {
            return Err(self.internal(format!("a row of {} cells for {} columns", row.len(), self.columns.len())));
        }
        for (c, cell) in self.columns.iter().zip(row) {
            if c.required && matches!(cell, Cell::Null) {
                return Err(self.internal(format!("column {} is required but the row has no value", c.name)));
            }
        }
        if !self.partitions.contains_key(key) {
            let dir = if key.is_empty() { self.root.clone() } else { self.root.join(key) };
            let partition = Partition {
                dir,
                columns: self.columns.iter().map(|_| ColumnBuf::default()).collect(),
                rows: 0,
                bytes: 0,
                writer: None,
                files: 0,
                last_used: 0,
            };
            self.partitions.insert(key.to_owned(), partition);
        }
        let Some(partition) = self.partitions.get_mut(key) else { return Ok(()) };
        let before: usize = partition.bytes;
        for (buf, cell) in partition.columns.iter_mut().zip(row) {
            buf.push(cell);
        }
        partition.rows += 1;
        partition.bytes = partition.columns.iter().map(ColumnBuf::heap_bytes).sum();
        self.buffered = self.buffered + partition.bytes - before;
        self.rows += 1;
        if partition.rows >= self.options.row_group_rows {
            self.flush(out, key)?;
        }
        while self.buffered > self.options.buffer_bytes {
            // Ties go to the smallest key: the files written must not depend on the map's order.
            let largest = self.partitions.iter().max_by(|a, b| a.1.bytes.cmp(&b.1.bytes).then_with(|| b.0.cmp(a.0)));
            let Some(largest) = largest.map(|(k, _)| k.clone()) else {
                break;
            };
            self.flush(out, &largest)?;
        }
        Ok(())
    }

    fn internal(&self, what: String) -> Error {
        Error::Failed(Failure { path: self.root.clone(), position: None, what })
    }

    /// Writes partition `key`'s buffered rows as one row group.
    fn flush(&mut self, out: &OutputDir, key: &str) -> Result<(), Error> {
        let has_writer = match self.partitions.get(key) {
            Some(p) if p.rows > 0 => p.writer.is_some(),
            _ => return Ok(()),
        };
        if !has_writer {
            if self.open >= self.options.open_files.max(1) {
                self.close_least_recent()?;
            }
            let (schema, properties) = (self.schema.clone(), self.properties.clone());
            let Some(p) = self.partitions.get_mut(key) else { return Ok(()) };
            if p.files == 0 {
                out.create_dir(&p.dir)?;
                self.dirs.push(p.dir.clone());
            }
            let path = p.dir.join(format!("part-{}.parquet", p.files));
            let file = out.create_file(&path)?;
            let writer = SerializedFileWriter::new(BufWriter::with_capacity(1 << 20, file), schema, properties)
                .map_err(parquet_error(&path))?;
            p.files += 1;
            p.writer = Some((path, writer));
            self.open += 1;
        }
        self.tick += 1;
        let Some(p) = self.partitions.get_mut(key) else { return Ok(()) };
        p.last_used = self.tick;
        let Some((path, writer)) = p.writer.as_mut() else { return Ok(()) };
        write_row_group(writer, self.columns, &p.columns).map_err(parquet_error(path))?;
        for buf in &mut p.columns {
            buf.clear();
        }
        self.buffered -= p.bytes;
        p.rows = 0;
        p.bytes = 0;
        Ok(())
    }

    /// Closes the file written least recently (its partition's buffer is empty: files are only open
    /// between row groups).
    fn close_least_recent(&mut self) -> Result<(), Error> {
        let Some(p) = self.partitions.values_mut().filter(|p| p.writer.is_some()).min_by_key(|p| p.last_used) else {
            return Ok(());
        };
        if let Some((path, writer)) = p.writer.take() {
            self.open -= 1;
            close_file(&path, writer)?;
            self.files.push(path);
        }
        Ok(())
    }

    /// Writes every buffer and closes every file; returns the files written.
    fn finish(mut self, out: &OutputDir) -> Result<Vec<PathBuf>, Error> {
        // In key order: which file a flush here closes (the open-files bound) must not depend on the
        // map's order, so the same log always gives the same files.
        let mut keys: Vec<String> = self.partitions.keys().cloned().collect();
        keys.sort_unstable();
        for key in &keys {
            self.flush(out, key)?;
        }
        for p in self.partitions.values_mut() {
            if let Some((path, writer)) = p.writer.take() {
                close_file(&path, writer)?;
                self.files.push(path);
            }
        }
        if self.files.is_empty() {
            // An empty table is still a table: one file with the schema and no row group.
            out.create_dir(&self.root)?;
            self.dirs.push(self.root.clone());
            let path = self.root.join("part-0.parquet");
            let file = out.create_file(&path)?;
            let writer = SerializedFileWriter::new(BufWriter::new(file), self.schema.clone(), self.properties.clone())
                .map_err(parquet_error(&path))?;
            close_file(&path, writer)?;
            self.files.push(path);
        }
        for dir in &self.dirs {
            sync_dir(dir)?;
        }
        if !self.dirs.contains(&self.root) {
            sync_dir(&self.root)?;
        }
        let _ = self.name;
        Ok(self.files)
    }
}

fn write_row_group(writer: &mut FileWriter, columns: &[Column], bufs: &[ColumnBuf]) -> parquet::errors::Result<()> {
    let mut group = writer.next_row_group()?;
    for (c, buf) in columns.iter().zip(bufs) {
        let Some(mut column) = group.next_column()? else {
            return Err(parquet::errors::ParquetError::General(format!("no column writer for {}", c.name)));
        };
        let defs = if c.required { None } else { Some(buf.defs.as_slice()) };
        match c.kind {
            Kind::Int64 | Kind::Timestamp => {
                column.typed::<Int64Type>().write_batch(&buf.ints, defs, None)?;
            }
            Kind::Bool => {
                column.typed::<BoolType>().write_batch(&buf.bools, defs, None)?;
            }
            Kind::Utf8 => {
                column.typed::<ByteArrayType>().write_batch(&buf.byte_arrays(), defs, None)?;
            }
        }
        column.close()?;
    }
    group.close()?;
    Ok(())
}

fn close_file(path: &Path, writer: FileWriter) -> Result<(), Error> {
    let buffered = writer.into_inner().map_err(parquet_error(path))?;
    let file = buffered.into_inner().map_err(|e| output(path)(e.into_error()))?;
    file.sync_all().map_err(output(path))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(output(dir))
}

/// `YYYY-MM` of `at` in China Standard Time.
pub fn month_cst(at: &DateTime<Utc>) -> String {
    let local = at.naive_utc().checked_add_signed(TimeDelta::seconds(i64::from(MONTH_OFFSET_SECONDS)));
    let local = local.unwrap_or(at.naive_utc());
    format!("{:04}-{:02}", local.year(), local.month())
}

/// A ledger id as the tables write it: 16 lowercase hex digits.
pub fn ledger_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Refuses an `--out` folder that a Parquet export must not write: inside the source (the rule of
/// [`crate::output::check_source`]), a symbolic link, something other than a folder, or a folder that
/// is not empty. Nothing is created.
pub fn check_out(source_path: &Path, out: &Path) -> Result<(), Error> {
    use crate::output::OutputError;
    crate::output::check_source(source_path, out)?;
    match fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(output(out)(e)),
        Ok(meta) if meta.file_type().is_symlink() => Err(OutputError::Symlink { path: out.to_owned() }.into()),
        Ok(meta) if !meta.is_dir() => Err(OutputError::NotAFolder { path: out.to_owned() }.into()),
        Ok(_) => {
            let mut entries = fs::read_dir(out).map_err(output(out))?;
            if entries.next().is_some() {
                return Err(OutputError::NotEmpty { path: out.to_owned() }.into());
            }
            Ok(())
        }
    }
}

/// Exports `source` (opened from `source_path`) as Parquet tables into the folder `out`, all or
/// nothing (see the module documentation). `progress` gets the records read so far.
pub fn export(
    source: &Source,
    source_path: &Path,
    out: &Path,
    options: ParquetOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ParquetSummary, Error> {
    check_out(source_path, out)?;
    let dir = OutputDir::create(out)?;
    let summary = write_tables(source, &dir, options, "", progress)?;
    dir.commit()?;
    Ok(summary)
}

/// The folder level of one source in a many-source export: `source=<ledger id>`.
pub fn source_partition(ledger_id: &str) -> String {
    format!("source={ledger_id}")
}

/// Exports several sources (each named by its ledger id, all distinct) into one folder `out`, all or
/// nothing: every table gets a first Hive level `source=<ledger id>` above the single-source layout
/// (`events/source=<id>/provider=<p>/month=<m>/part-<n>.parquet`, `terminals/source=<id>/part-0.parquet`,
/// ...), and every file carries the provenance of its own source. Sources are written one after the
/// other, so memory stays that of one export. `progress` gets the records read so far, over all.
pub fn export_many(
    sources: &[crate::many::Named<'_>],
    out: &Path,
    options: ParquetOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ParquetSummary, Error> {
    for s in sources {
        check_out(s.path, out)?;
    }
    let dir = OutputDir::create(out)?;
    let mut total = ParquetSummary::default();
    let mut done = 0u64;
    let n = sources.len();
    for (i, s) in sources.iter().enumerate() {
        let sub = source_partition(s.ledger_id);
        let summary = write_tables(s.source, &dir, options, &sub, &mut |k| progress(done + k))
            .map_err(|e| crate::many::in_source(i, n, s, e))?;
        done += s.source.head.size;
        total.events += summary.events;
        total.directives += summary.directives;
        total.directive_models += summary.directive_models;
        total.terminals += summary.terminals;
        total.files += summary.files;
        total.bytes += summary.bytes;
    }
    for table in ["events", "directives", "directive_models", "terminals"] {
        sync_dir(&dir.root().join(table))?;
    }
    dir.commit()?;
    Ok(total)
}

/// Writes the four tables into the empty folder `root`.
fn write_tables(
    source: &Source,
    out: &OutputDir,
    options: ParquetOptions,
    sub: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<ParquetSummary, Error> {
    let provenance =
        Provenance { ledger_id: source.ledger_id(), log_size: source.head.size, root_hex: source.head.root_hex() };
    let ledger = ledger_hex(source.ledger_id().unwrap_or(0));
    let fleet = projections::rebuild(source, Cut::Head, &Options::default())?;
    let root = out.root();
    let mut events = Table::new("events", root, &EVENT_COLUMNS, &provenance, options, sub)?;
    let mut directives = Table::new("directives", root, &DIRECTIVE_COLUMNS, &provenance, options, sub)?;
    let mut directive_models =
        Table::new("directive_models", root, &DIRECTIVE_MODEL_COLUMNS, &provenance, options, sub)?;
    let mut read = 0u64;
    for record in source.records(0) {
        let record = record?;
        match &record.event {
            Event::Terminal(_) => {
                let (key, row) = event_row(&record, &fleet, &ledger)?;
                events.push(out, &key, &row)?;
            }
            Event::Directive(d) => {
                let deadline = d.deadline.as_ref().map_or(Cell::Null, micros);
                let row = [
                    int(record.position),
                    int(record.version),
                    micros(&record.recorded_at),
                    micros(&d.at),
                    Cell::Bool(record.commit),
                    opt_text(record.event_id.as_ref().map(|e| e.as_str())),
                    text(d.id.as_str()),
                    deadline.clone(),
                    text(d.reason.as_str()),
                    int(d.models.len() as u64),
                ];
                directives.push(out, "", &row)?;
                for model in &d.models {
                    let row = [
                        text(d.id.as_str()),
                        text(model.as_str()),
                        int(record.position),
                        micros(&d.at),
                        deadline.clone(),
                    ];
                    directive_models.push(out, "", &row)?;
                }
            }
        }
        read += 1;
        if read.is_multiple_of(65_536) {
            progress(read);
        }
    }
    progress(read);
    let mut terminals = Table::new("terminals", root, &TERMINAL_COLUMNS, &provenance, options, sub)?;
    for (sn, t) in fleet.sorted() {
        let view = fleet.view_of(sn, t);
        let flags: Vec<&str> = t.state.flags.iter().map(|r| r.as_str()).collect();
        let links = t.links.as_deref();
        let row = [
            text(sn),
            text(view.model),
            text(view.provider),
            text(view.merchant),
            text(view.region),
            text(t.state.status.as_str()),
            text(t.state.contract.as_str()),
            int(t.state.flow_fen),
            if flags.is_empty() { Cell::Null } else { Cell::Str(Cow::Owned(flags.join(";"))) },
            Cell::Int(t.issued_at),
            Cell::Int(t.contract_end),
            int(t.last_position),
            opt_text(links.and_then(|l| l.replaces.as_ref()).map(|(s, _)| s.as_str())),
            opt_text(links.and_then(|l| l.replaced_by.as_ref()).map(|(s, _)| s.as_str())),
            text(&ledger),
        ];
        terminals.push(out, "", &row)?;
    }
    let mut summary = ParquetSummary {
        events: events.rows,
        directives: directives.rows,
        directive_models: directive_models.rows,
        terminals: terminals.rows,
        ..ParquetSummary::default()
    };
    for table in [events, directives, directive_models, terminals] {
        for file in table.finish(out)? {
            summary.files += 1;
            summary.bytes += fs::metadata(&file).map_err(output(&file))?.len();
        }
    }
    Ok(summary)
}

/// The partition and the cells of one terminal event.
fn event_row<'a>(
    record: &'a Record,
    fleet: &'a projections::Fleet,
    ledger: &'a str,
) -> Result<(String, [Cell<'a>; 25]), Error> {
    let Event::Terminal(e) = &record.event else {
        return Err(Error::Usage(format!("position {}: not a terminal event", record.position)));
    };
    let Some(view) = fleet.view(e.device.as_str()) else {
        return Err(Error::Failed(Failure {
            path: PathBuf::new(),
            position: Some(record.position),
            what: format!("terminal {} has events but no issued event in the fleet projection", e.device),
        }));
    };
    let month = month_cst(&e.at);
    let key = format!("provider={}/month={month}", view.provider);
    let mut row: [Cell<'a>; 25] = std::array::from_fn(|_| Cell::Null);
    let mut set = |name: &str, cell: Cell<'a>| {
        if let Some(slot) = EVENT_COLUMNS.iter().position(|c| c.name == name).and_then(|i| row.get_mut(i)) {
            *slot = cell;
        }
    };
    set("position", int(record.position));
    set("version", int(record.version));
    set("recorded_at", micros(&record.recorded_at));
    set("occurred_at", micros(&e.at));
    set("month", Cell::Str(Cow::Owned(month)));
    set("commit", Cell::Bool(record.commit));
    set("event_id", opt_text(record.event_id.as_ref().map(|e| e.as_str())));
    set("type", text(e.event.type_name()));
    set("device", text(e.device.as_str()));
    set("model", text(view.model));
    set("provider", text(view.provider));
    set("merchant", text(view.merchant));
    set("region", text(view.region));
    set("issued_at", Cell::Int(view.terminal.issued_at));
    set("ledger_id", text(ledger));
    let contract = |set: &mut dyn FnMut(&str, Cell<'a>), c: &'a log::Contract| {
        set("contract_id", text(c.id.as_str()));
        set("contract_start", micros(&c.start));
        set("contract_end", micros(&c.end));
    };
    match &e.event {
        TerminalEvent::Issued(i) => {
            contract(&mut set, &i.contract);
            set("replaces", opt_text(i.replaces.as_ref().map(|s| s.as_str())));
        }
        TerminalEvent::Flow { amount_fen, transactions } => {
            set("amount_fen", int(*amount_fen));
            set("transactions", Cell::Int(i64::from(*transactions)));
        }
        TerminalEvent::ContractRenewed { contract: c } => contract(&mut set, c),
        TerminalEvent::Flagged { reason, note } | TerminalEvent::FlagCleared { reason, note } => {
            set("reason", text(reason.as_str()));
            set("note", text(note.as_str()));
        }
        TerminalEvent::Stopped { reason, directive } => {
            set("reason", text(reason.as_str()));
            set("directive", opt_text(directive.as_ref().map(|d| d.as_str())));
        }
        TerminalEvent::Replaced { by } => set("replaced_by", text(by.as_str())),
        TerminalEvent::Activated | TerminalEvent::ContractExpired => {}
    }
    Ok((key, row))
}
