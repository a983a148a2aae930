//! Incremental, bounded reading of import files: CSV with a header row, and JSON Lines.
//!
//! A record is framed byte by byte from the `BufRead` (quote-aware for CSV, so quoted fields may hold delimiters
//! and newlines) into a buffer that never grows past [`ParseOptions::max_record_bytes`]: a longer record is
//! skipped to its end and rejected, so memory stays bounded whatever the file. Framing also checks the quoting, so
//! decoding the fields of a well-formed record is only splitting it and unquoting (as the `csv` crate reads it).
//!
//! Rows are numbered from 1 (the first record after the CSV header, the first line of a JSON Lines file). Blank
//! records are skipped but counted, so row numbers stay line numbers as long as no quoted field spans lines.
//! [`Rows::position`] after any row is a checkpoint from which [`Rows::resume`] continues with the same rows.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{reason, ImportError, RowReject};

/// Default longest record (CSV record or JSON line, without its line ending), in bytes.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Default most fields (CSV) or keys (JSON) in one record.
pub const MAX_COLUMNS: usize = 512;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The delimiters a CSV file may use, in the order that breaks ties when sniffing.
const DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

/// The file format of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-, semicolon- or tab-separated values with a header row; fields may be quoted (`"a ""b"""`).
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// How a file is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    pub format: Format,
    /// CSV only: `,`, `;` or `\t`. `None`: the most frequent of them (outside quotes) in the header line.
    pub delimiter: Option<u8>,
    pub max_record_bytes: usize,
    pub max_columns: usize,
}

impl ParseOptions {
    /// Default bounds, delimiter sniffed.
    pub fn new(format: Format) -> Self {
        ParseOptions { format, delimiter: None, max_record_bytes: MAX_RECORD_BYTES, max_columns: MAX_COLUMNS }
    }
}

/// The column names of a CSV file and its delimiter: what resuming a file needs besides the offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    names: Vec<String>,
    index: HashMap<String, usize>,
    delimiter: u8,
}

impl Header {
    /// Unnamed columns are allowed (they cannot be mapped); a name used twice is not, since a mapping could not
    /// say which one it means.
    pub fn new(names: Vec<String>, delimiter: u8) -> Result<Header, ImportError> {
        if !DELIMITERS.contains(&delimiter) {
            return Err(ImportError::UnsupportedDelimiter);
        }
        if names.iter().all(|n| n.is_empty()) {
            return Err(ImportError::Header { reason: "empty_header", column: None });
        }
        let mut index = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if !name.is_empty() && index.insert(name.clone(), i).is_some() {
                return Err(ImportError::Header { reason: "duplicate_column", column: Some(i + 1) });
            }
        }
        Ok(Header { names, index, delimiter })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// The 0-based position of a named column.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// A column looked up once per file, so that each row is read by position rather than by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    name: &'a str,
    /// The CSV header's position of the column: `None` when the header has none, and for JSON Lines.
    position: Option<usize>,
}

impl<'a> Column<'a> {
    /// The column `name` of a file with `header` (`None` for JSON Lines, whose rows are read by key).
    pub fn new(name: &'a str, header: Option<&Header>) -> Column<'a> {
        Column { name, position: header.and_then(|h| h.position(name)) }
    }

    pub fn name(&self) -> &'a str {
        self.name
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    number: u64,
    data: RowData,
}

#[derive(Debug, Clone, PartialEq)]
enum RowData {
    Csv { header: Arc<Header>, fields: Fields },
    Json(Map<String, Value>),
}

impl Default for Row {
    /// A row to read into with [`Rows::read_into`]; it holds no values until then.
    fn default() -> Row {
        Row { number: 0, data: RowData::Json(Map::new()) }
    }
}

/// What a row holds for a column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// The CSV header has no such column.
    Missing,
    /// No value: an empty or blank CSV field; an absent, `null` or blank JSON value.
    Empty,
    /// A CSV field or a JSON string, as written (not trimmed).
    Text(&'a str),
    /// A JSON value that is not a string (number, bool, array, object).
    Value(&'a Value),
}

impl Row {
    /// A CSV record; `fields` are matched to `header` by position.
    pub fn csv(number: u64, header: Arc<Header>, fields: Vec<String>) -> Row {
        let mut record = Fields::default();
        for field in &fields {
            record.push(field);
        }
        Row { number, data: RowData::Csv { header, fields: record } }
    }

    /// A JSON Lines record.
    pub fn json(number: u64, object: Map<String, Value>) -> Row {
        Row { number, data: RowData::Json(object) }
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    /// The CSV header the row's fields are matched to (`None` for JSON Lines).
    pub fn header(&self) -> Option<&Header> {
        match &self.data {
            RowData::Csv { header, .. } => Some(header),
            RowData::Json(_) => None,
        }
    }

    /// What the row holds for the column named `column`. [`Row::cell`] reads a column found once per file.
    pub fn get(&self, column: &str) -> Cell<'_> {
        self.cell(Column::new(column, self.header()))
    }

    /// What the row holds for a column found in the header of the row's own file.
    pub fn cell(&self, column: Column<'_>) -> Cell<'_> {
        fn text(s: &str) -> Cell<'_> {
            if s.trim().is_empty() {
                Cell::Empty
            } else {
                Cell::Text(s)
            }
        }
        match &self.data {
            RowData::Csv { fields, .. } => match column.position.and_then(|i| fields.get(i)) {
                Some(s) => text(s),
                None => Cell::Missing,
            },
            RowData::Json(object) => match object.get(column.name) {
                None | Some(Value::Null) => Cell::Empty,
                Some(Value::String(s)) => text(s),
                Some(v) => Cell::Value(v),
            },
        }
    }
}

/// The rows of one file, read incrementally. Yields `Err` (and then stops) only when reading fails; a bad row is
/// `Ok(Err(RowReject))` and the next row follows.
pub struct Rows<R> {
    reader: R,
    opts: ParseOptions,
    header: Option<Arc<Header>>,
    scanner: Scanner,
    buf: Vec<u8>,
    offset: u64,
    row: u64,
    done: bool,
}

impl<R: BufRead> Rows<R> {
    /// Starts at the beginning of a file: skips a UTF-8 byte order mark and, for CSV, reads the header (an empty
    /// file has none and no rows).
    pub fn new(mut reader: R, opts: ParseOptions) -> Result<Rows<R>, ImportError> {
        if opts.delimiter.is_some_and(|d| !DELIMITERS.contains(&d)) {
            return Err(ImportError::UnsupportedDelimiter);
        }
        // Spreadsheet exports start with a BOM; it must go before framing, or a quoted first name would not be
        // seen as quoted. Any `BufRead` holds at least the first 3 bytes of a file in its first buffer.
        let offset = match fill_buf(&mut reader)? {
            chunk if chunk.starts_with(BOM) => {
                reader.consume(BOM.len());
                BOM.len() as u64
            }
            _ => 0,
        };
        let mut rows = Rows::start(reader, opts, None, offset, 0);
        if opts.format == Format::Csv {
            rows.read_header()?;
        }
        Ok(rows)
    }

    /// Continues a file from a checkpoint taken with [`Rows::position`]: `reader` must start at byte `offset` of
    /// the file, and CSV needs the file's [`Header`]. The next row is numbered `row + 1`.
    pub fn resume(
        reader: R,
        opts: ParseOptions,
        header: Option<Header>,
        offset: u64,
        row: u64,
    ) -> Result<Rows<R>, ImportError> {
        if opts.format == Format::Csv && header.is_none() {
            return Err(ImportError::MissingHeader);
        }
        Ok(Rows::start(reader, opts, header.map(Arc::new), offset, row))
    }

    fn start(reader: R, opts: ParseOptions, header: Option<Arc<Header>>, offset: u64, row: u64) -> Rows<R> {
        let delimiter = header.as_ref().map(|h| h.delimiter).or(opts.delimiter);
        let scanner = match opts.format {
            Format::Csv => Scanner::csv(delimiter, opts.max_columns),
            Format::Jsonl => Scanner::lines(),
        };
        Rows { reader, opts, header, scanner, buf: Vec::new(), offset, row, done: false }
    }

    /// The CSV header (`None` for JSON Lines and for an empty CSV file).
    pub fn header(&self) -> Option<&Header> {
        self.header.as_deref()
    }

    /// `(byte_offset, row_number)` just after the last row yielded (or the header): where [`Rows::resume`] picks up.
    pub fn position(&self) -> (u64, u64) {
        (self.offset, self.row)
    }

    fn read_header(&mut self) -> Result<(), ImportError> {
        let header_error = |reason| ImportError::Header { reason, column: None };
        let Some(problem) = self.frame()? else {
            return Ok(());
        };
        if let Some(reason) = problem {
            return Err(header_error(reason));
        }
        if self.buf.is_empty() {
            return Err(header_error("empty_header"));
        }
        let delimiter = match self.opts.delimiter {
            Some(d) => d,
            None => {
                let d = self.scanner.sniffed();
                // Sniffing framed the line with every candidate as a delimiter; check it with the one chosen.
                let mut strict = Scanner::csv(Some(d), self.opts.max_columns);
                if let Some(reason) = strict.check_complete(&self.buf) {
                    return Err(header_error(reason));
                }
                d
            }
        };
        let text = std::str::from_utf8(&self.buf).map_err(|_| header_error(reason::INVALID_UTF8))?;
        let mut names = Fields::default();
        names.decode(text, delimiter);
        self.header = Some(Arc::new(Header::new(names.iter().map(str::to_string).collect(), delimiter)?));
        self.scanner = Scanner::csv(Some(delimiter), self.opts.max_columns);
        Ok(())
    }

    /// Frames the next record into `buf`. `None` at the end of the file; `Some(Some(reason))` for a record that
    /// is rejected while framing (its bytes are not kept).
    fn frame(&mut self) -> io::Result<Option<Option<&'static str>>> {
        let max = self.opts.max_record_bytes;
        self.buf.clear();
        self.scanner.reset();
        // Added to `offset` only once the record is complete, so that after an I/O error `position` is still
        // the end of the last row yielded.
        let mut consumed = 0u64;
        let mut too_long = false;
        loop {
            let chunk = fill_buf(&mut self.reader)?;
            if chunk.is_empty() {
                if consumed == 0 {
                    return Ok(None);
                }
                self.scanner.at_eof();
                break;
            }
            let (used, ended) = match self.scanner.scan(chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let content = &chunk[..used - usize::from(ended)];
            if !too_long {
                if self.buf.len() + content.len() > max {
                    // Give the memory back too: the rest of this record is only scanned for its end.
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(content);
                }
            }
            self.reader.consume(used);
            consumed += used as u64;
            if ended {
                break;
            }
        }
        self.offset += consumed;
        if too_long {
            return Ok(Some(Some(reason::LINE_TOO_LONG)));
        }
        if self.buf.last() == Some(&b'\r') {
            // CRLF line ending (a `\r` before the terminating `\n` is always outside quotes).
            self.buf.pop();
        }
        Ok(Some(self.scanner.problem))
    }

    /// Reads the next row into `row`, reusing its buffers (the iterator allocates each row it yields). `Ok(None)`
    /// at the end of the file; after a rejected row, what `row` holds is unspecified. Like the iterator, it yields
    /// nothing more after the end or an error.
    pub fn read_into(&mut self, row: &mut Row) -> Result<Option<Result<(), RowReject>>, ImportError> {
        if self.done {
            return Ok(None);
        }
        let read = self.next_row(row);
        self.done = !matches!(read, Ok(Some(_)));
        read
    }

    fn next_row(&mut self, row: &mut Row) -> Result<Option<Result<(), RowReject>>, ImportError> {
        loop {
            let Some(problem) = self.frame()? else {
                return Ok(None);
            };
            self.row += 1;
            let number = self.row;
            if let Some(reason) = problem {
                return Ok(Some(Err(RowReject::new(number, reason))));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace)
                && (self.opts.format == Format::Jsonl || self.buf.is_empty())
            {
                continue;
            }
            return Ok(Some(match self.opts.format {
                Format::Csv => self.csv_row(number, row),
                Format::Jsonl => self.json_row(number, row),
            }));
        }
    }

    fn csv_row(&mut self, number: u64, row: &mut Row) -> Result<(), RowReject> {
        let Some(header) = &self.header else {
            // Unreachable: CSV rows are only read once a header is known.
            return Err(RowReject::new(number, reason::WRONG_COLUMN_COUNT));
        };
        let text = std::str::from_utf8(&self.buf).map_err(|_| RowReject::new(number, reason::INVALID_UTF8))?;
        // The fields are decoded into the buffer `row` already holds, so its allocations are reused.
        let mut fields = match std::mem::take(row).data {
            RowData::Csv { fields, .. } => fields,
            RowData::Json(_) => Fields::default(),
        };
        fields.decode(text, header.delimiter);
        let columns = fields.len();
        *row = Row { number, data: RowData::Csv { header: Arc::clone(header), fields } };
        if columns != header.names.len() {
            return Err(RowReject::new(number, reason::WRONG_COLUMN_COUNT));
        }
        Ok(())
    }

    fn json_row(&self, number: u64, row: &mut Row) -> Result<(), RowReject> {
        let text = std::str::from_utf8(&self.buf).map_err(|_| RowReject::new(number, reason::INVALID_UTF8))?;
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) if object.len() > self.opts.max_columns => {
                Err(RowReject::new(number, reason::TOO_MANY_COLUMNS))
            }
            Ok(Value::Object(object)) => {
                *row = Row::json(number, object);
                Ok(())
            }
            Ok(_) => Err(RowReject::new(number, reason::NOT_AN_OBJECT)),
            Err(_) => Err(RowReject::new(number, reason::INVALID_JSON)),
        }
    }
}

impl<R: BufRead> Iterator for Rows<R> {
    type Item = Result<Result<Row, RowReject>, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut row = Row::default();
        let read = self.read_into(&mut row).transpose()?;
        Some(read.map(|item| item.map(|()| row)))
    }
}

fn fill_buf<R: BufRead>(reader: &mut R) -> io::Result<&[u8]> {
    loop {
        // Re-borrowing in a loop that returns the borrow is rejected by the borrow checker, so probe first.
        match reader.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => break,
        }
    }
    reader.fill_buf()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: an escaped quote if another follows, else the closing quote.
    QuoteSeen,
    /// A `\r` right after a closing quote: only `\n` may follow.
    ClosedCr,
}

/// Finds where a record ends, and checks CSV quoting and field counts on the way, one byte at a time.
#[derive(Debug)]
struct Scanner {
    csv: bool,
    /// `None` while sniffing: every candidate delimiter separates fields, and each is counted.
    delimiter: Option<u8>,
    max_columns: usize,
    state: State,
    fields: usize,
    counts: [usize; 3],
    problem: Option<&'static str>,
}

impl Scanner {
    fn lines() -> Scanner {
        Scanner {
            csv: false,
            delimiter: None,
            max_columns: usize::MAX,
            state: State::FieldStart,
            fields: 1,
            counts: [0; 3],
            problem: None,
        }
    }

    fn csv(delimiter: Option<u8>, max_columns: usize) -> Scanner {
        Scanner { csv: true, delimiter, max_columns, ..Scanner::lines() }
    }

    fn reset(&mut self) {
        self.state = State::FieldStart;
        self.fields = 1;
        self.counts = [0; 3];
        self.problem = None;
    }

    /// The most frequent candidate delimiter seen (ties and none: the earlier candidate, so comma by default).
    fn sniffed(&self) -> u8 {
        let mut best = 0;
        for i in 1..DELIMITERS.len() {
            if self.counts[i] > self.counts[best] {
                best = i;
            }
        }
        DELIMITERS[best]
    }

    fn fail(&mut self, reason: &'static str) {
        // The first problem is the one reported.
        self.problem.get_or_insert(reason);
    }

    fn separator(&mut self, b: u8) -> bool {
        match self.delimiter {
            Some(d) => b == d,
            None => match DELIMITERS.iter().position(|&d| d == b) {
                Some(i) => {
                    self.counts[i] += 1;
                    true
                }
                None => false,
            },
        }
    }

    fn next_field(&mut self) {
        self.fields += 1;
        self.state = State::FieldStart;
        if self.delimiter.is_some() && self.fields > self.max_columns {
            self.fail(reason::TOO_MANY_COLUMNS);
        }
    }

    /// Feeds `bytes` up to the `\n` that ends the record: its index, or `None` when it is not among them.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let delimiter = match self.delimiter {
            Some(d) if self.csv => d,
            _ if self.csv => return bytes.iter().position(|&b| self.step(b)),
            _ => return bytes.iter().position(|&b| b == b'\n'),
        };
        let mut at = 0;
        loop {
            let rest = bytes.get(at..)?;
            if self.state == State::FieldStart && rest.first().is_some_and(|&b| b != b'"') {
                // Whatever its first byte, a field that does not open with a quote is unquoted.
                self.state = State::Unquoted;
            }
            // Runs of bytes that leave the state as it is are skipped in one tight loop: inside a quoted field, all
            // but a quote; inside an unquoted one, all but the delimiter and the line end.
            match self.state {
                State::Unquoted => {
                    at += rest.iter().position(|&b| b == delimiter || b == b'\n')?;
                    if bytes.get(at) == Some(&b'\n') {
                        return Some(at);
                    }
                    self.next_field();
                }
                State::Quoted => {
                    at += rest.iter().position(|&b| b == b'"')?;
                    self.state = State::QuoteSeen;
                }
                _ => {
                    if self.step(*bytes.get(at)?) {
                        return Some(at);
                    }
                }
            }
            at += 1;
        }
    }

    /// Feeds one byte; `true` when it is the `\n` that ends the record.
    fn step(&mut self, b: u8) -> bool {
        if !self.csv {
            return b == b'\n';
        }
        match self.state {
            State::FieldStart | State::Unquoted => {
                if b == b'\n' {
                    return true;
                }
                if self.separator(b) {
                    self.next_field();
                } else if b == b'"' && self.state == State::FieldStart {
                    self.state = State::Quoted;
                } else {
                    // A quote inside an unquoted field is kept as data, as the `csv` crate does.
                    self.state = State::Unquoted;
                }
            }
            State::Quoted => {
                if b == b'"' {
                    self.state = State::QuoteSeen;
                }
            }
            State::QuoteSeen => {
                if b == b'"' {
                    self.state = State::Quoted;
                } else if b == b'\n' {
                    return true;
                } else if b == b'\r' {
                    self.state = State::ClosedCr;
                } else if self.separator(b) {
                    self.next_field();
                } else {
                    self.fail(reason::BROKEN_QUOTING);
                    self.state = State::Unquoted;
                }
            }
            State::ClosedCr => {
                if b == b'\n' {
                    return true;
                }
                self.fail(reason::BROKEN_QUOTING);
                if self.separator(b) {
                    self.next_field();
                } else {
                    self.state = State::Unquoted;
                }
            }
        }
        false
    }

    fn at_eof(&mut self) {
        if self.state == State::Quoted {
            self.fail(reason::BROKEN_QUOTING);
        }
    }

    /// Checks `record` (framed, line ending removed) as one complete record.
    fn check_complete(&mut self, record: &[u8]) -> Option<&'static str> {
        self.reset();
        for &b in record {
            if self.step(b) {
                // A line break outside quotes with this delimiter: the line was framed differently while sniffing.
                self.fail(reason::BROKEN_QUOTING);
            }
        }
        self.at_eof();
        self.problem
    }
}

/// The fields of a CSV record, in one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fields {
    text: String,
    /// Where each field ends in `text`.
    ends: Vec<usize>,
}

impl Fields {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> Option<&str> {
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)?,
            None => 0,
        };
        self.text.get(start..*self.ends.get(i)?)
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    fn push(&mut self, field: &str) {
        self.text.push_str(field);
        self.ends.push(self.text.len());
    }

    /// Decodes a record that framing found well-formed, as the `csv` crate reads it: fields end at `delimiter`; a
    /// field that opens with a quote holds what is up to the closing quote, `""` standing for `"`; any other quote
    /// is data.
    fn decode(&mut self, record: &str, delimiter: u8) {
        self.text.clear();
        self.ends.clear();
        let mut rest = record;
        loop {
            if let Some(quoted) = rest.strip_prefix('"') {
                rest = self.unquote(quoted);
            }
            // After a closing quote, framing leaves only the delimiter or the end of the record.
            let (data, next) = split_at_byte(rest, delimiter);
            self.push(data);
            match next {
                Some(next) => rest = next,
                None => return,
            }
        }
    }

    /// Appends the text of a quoted field, `quoted` starting after its opening quote; what follows the closing quote.
    fn unquote<'r>(&mut self, mut quoted: &'r str) -> &'r str {
        while let (text, Some(after)) = split_at_byte(quoted, b'"') {
            self.text.push_str(text);
            match after.strip_prefix('"') {
                Some(more) => {
                    self.text.push('"');
                    quoted = more;
                }
                None => return after,
            }
        }
        // Unclosed (framing rejects such a record): the rest is the field's.
        self.text.push_str(quoted);
        ""
    }
}

/// `s` up to the first `byte` (ASCII), and what follows it if there is one: `str::split_once` for one byte, which
/// for the short fields of a record is quicker as a plain loop than as a `char` search.
fn split_at_byte(s: &str, byte: u8) -> (&str, Option<&str>) {
    match s.bytes().position(|b| b == byte).and_then(|i| Some((s.get(..i)?, s.get(i + 1..)?))) {
        Some((before, after)) => (before, Some(after)),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor, Read};

    type Item = Result<Vec<String>, (u64, &'static str)>;

    fn opts(format: Format, delimiter: Option<u8>) -> ParseOptions {
        ParseOptions { delimiter, ..ParseOptions::new(format) }
    }

    fn fields(row: &Row) -> Vec<String> {
        match &row.data {
            RowData::Csv { fields, .. } => fields.iter().map(String::from).collect(),
            RowData::Json(m) => vec![serde_json::to_string(m).unwrap()],
        }
    }

    fn collect<R: BufRead>(rows: Rows<R>) -> Vec<(u64, Item)> {
        rows.map(|item| match item.expect("no I/O error") {
            Ok(row) => (row.number(), Ok(fields(&row))),
            Err(r) => (r.row, Err((r.row, r.reason))),
        })
        .collect()
    }

    fn csv(input: &str, delimiter: Option<u8>) -> (Header, Vec<(u64, Item)>) {
        let rows = Rows::new(input.as_bytes(), opts(Format::Csv, delimiter)).unwrap();
        let header = rows.header().unwrap().clone();
        (header, collect(rows))
    }

    fn ok(row: u64, fields: &[&str]) -> (u64, Item) {
        (row, Ok(fields.iter().map(|s| s.to_string()).collect()))
    }

    fn rejected(row: u64, reason: &'static str) -> (u64, Item) {
        (row, Err((row, reason)))
    }

    #[test]
    fn each_delimiter_configured_and_sniffed() {
        for (d, text) in [
            (b',', "email,name\na@x.io,Ada\n"),
            (b';', "email;name\na@x.io;Ada\n"),
            (b'\t', "email\tname\na@x.io\tAda\n"),
        ] {
            for configured in [Some(d), None] {
                let (header, rows) = csv(text, configured);
                assert_eq!(header.delimiter(), d);
                assert_eq!(header.names(), ["email", "name"]);
                assert_eq!(rows, vec![ok(1, &["a@x.io", "Ada"])]);
            }
        }
    }

    #[test]
    fn sniffing_counts_only_outside_quotes_and_defaults_to_comma() {
        let (header, rows) = csv("\"a;b;c\",d\n1,2\n", None);
        assert_eq!(header.delimiter(), b',');
        assert_eq!(header.names(), ["a;b;c", "d"]);
        assert_eq!(rows, vec![ok(1, &["1", "2"])]);
        let (header, _) = csv("single\nx\n", None);
        assert_eq!((header.delimiter(), header.names().len()), (b',', 1));
        let (header, _) = csv("a,b;c;d\n", None);
        assert_eq!(header.delimiter(), b';');
    }

    #[test]
    fn quoted_fields_hold_delimiters_quotes_and_newlines() {
        let text = "id,note,city\r\n1,\"a, b\",\"x\"\r\n2,\"line1\nline2\",\"say \"\"hi\"\"\"\r\n3,5'11\",\"\"\n";
        let (_, rows) = csv(text, None);
        assert_eq!(
            rows,
            vec![ok(1, &["1", "a, b", "x"]), ok(2, &["2", "line1\nline2", "say \"hi\""]), ok(3, &["3", "5'11\"", ""])]
        );
    }

    #[test]
    fn blank_lines_are_skipped_but_counted_and_last_line_needs_no_newline() {
        let (_, rows) = csv("a,b\n1,2\n\n\r\n3,4", None);
        assert_eq!(rows, vec![ok(1, &["1", "2"]), ok(4, &["3", "4"])]);
    }

    #[test]
    fn bom_is_skipped() {
        let (header, rows) = csv("\u{feff}\"email\",name\nx,y\n", None);
        assert_eq!(header.names(), ["email", "name"]);
        assert_eq!(rows, vec![ok(1, &["x", "y"])]);
        let rows = Rows::new("\u{feff}{\"a\":1}\n".as_bytes(), opts(Format::Jsonl, None)).unwrap();
        assert_eq!(collect(rows), vec![ok(1, &["{\"a\":1}"])]);
    }

    #[test]
    fn csv_rejects_and_keeps_going() {
        let text = "a,b\n1,\"2\"x\n1,2,3\n1\n\"1\",\"2\n";
        let (_, rows) = csv(text, None);
        assert_eq!(
            rows,
            vec![
                rejected(1, reason::BROKEN_QUOTING),
                rejected(2, reason::WRONG_COLUMN_COUNT),
                rejected(3, reason::WRONG_COLUMN_COUNT),
                // An unclosed quote runs to the end of the file.
                rejected(4, reason::BROKEN_QUOTING),
            ]
        );
        let (_, rows) = csv("a,b\n\"1\"\r2,3\nok,yes\n", None);
        assert_eq!(rows, vec![rejected(1, reason::BROKEN_QUOTING), ok(2, &["ok", "yes"])]);
    }

    #[test]
    fn invalid_utf8_is_a_row_reject() {
        let mut bytes = b"a,b\n1,".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b"\n\"\xc3\",x\n3,4\n");
        let rows = Rows::new(&bytes[..], opts(Format::Csv, None)).unwrap();
        assert_eq!(
            collect(rows),
            vec![rejected(1, reason::INVALID_UTF8), rejected(2, reason::INVALID_UTF8), ok(3, &["3", "4"])]
        );
        let rows = Rows::new(&b"{\"a\":\"\xff\"}\n{}\n"[..], opts(Format::Jsonl, None)).unwrap();
        assert_eq!(collect(rows), vec![rejected(1, reason::INVALID_UTF8), ok(2, &["{}"])]);
    }

    #[test]
    fn too_many_columns() {
        let o = ParseOptions { max_columns: 3, ..opts(Format::Csv, Some(b',')) };
        let rows = Rows::new("a,b,c\n1,2,3\n1,2,3,4\n".as_bytes(), o).unwrap();
        assert_eq!(collect(rows), vec![ok(1, &["1", "2", "3"]), rejected(2, reason::TOO_MANY_COLUMNS)]);
        let err = Rows::new("a,b,c,d\n".as_bytes(), o).err().unwrap();
        assert!(matches!(err, ImportError::Header { reason: "too_many_columns", .. }), "{err}");
        let o = ParseOptions { max_columns: 2, ..opts(Format::Jsonl, None) };
        let rows = Rows::new("{\"a\":1,\"b\":2}\n{\"a\":1,\"b\":2,\"c\":3}\n".as_bytes(), o).unwrap();
        assert_eq!(rows.count(), 2);
        let rows = Rows::new("{\"a\":1,\"b\":2,\"c\":3}\n".as_bytes(), o).unwrap();
        assert_eq!(collect(rows), vec![rejected(1, reason::TOO_MANY_COLUMNS)]);
    }

    #[test]
    fn json_lines() {
        let text = "{\"email\":\"a@x.io\",\"n\":1}\r\n\n  \n[1]\nnot json\n{\"a\":{\"b\":[1,2]}}";
        let rows = Rows::new(text.as_bytes(), opts(Format::Jsonl, None)).unwrap();
        assert!(rows.header().is_none());
        assert_eq!(
            collect(rows),
            vec![
                ok(1, &["{\"email\":\"a@x.io\",\"n\":1}"]),
                rejected(4, reason::NOT_AN_OBJECT),
                rejected(5, reason::INVALID_JSON),
                ok(6, &["{\"a\":{\"b\":[1,2]}}"]),
            ]
        );
    }

    #[test]
    fn cells() {
        let header = Arc::new(Header::new(vec!["a".into(), "b".into(), "".into()], b',').unwrap());
        let row = Row::csv(1, header, vec!["x".into(), " ".into(), "z".into()]);
        assert_eq!(row.get("a"), Cell::Text("x"));
        assert_eq!(row.get("b"), Cell::Empty);
        assert_eq!(row.get("c"), Cell::Missing);
        assert_eq!(row.get(""), Cell::Missing);
        let object = serde_json::json!({"s": "x", "n": 1, "z": null, "e": ""});
        let row = Row::json(1, object.as_object().unwrap().clone());
        assert_eq!(row.get("s"), Cell::Text("x"));
        assert_eq!(row.get("n"), Cell::Value(&serde_json::json!(1)));
        for empty in ["z", "e", "absent"] {
            assert_eq!(row.get(empty), Cell::Empty);
        }
    }

    #[test]
    fn columns_found_once_read_like_names() {
        let header = Header::new(vec!["a".into(), "b".into(), "".into()], b',').unwrap();
        let row = Row::csv(1, Arc::new(header.clone()), vec!["x".into(), " ".into(), "z".into()]);
        for name in ["a", "b", "c", ""] {
            assert_eq!(row.cell(Column::new(name, Some(&header))), row.get(name), "{name}");
        }
        assert_eq!(row.cell(Column::new("a", None)), Cell::Missing);
        let object = serde_json::json!({"s": "x", "n": 1});
        let row = Row::json(1, object.as_object().unwrap().clone());
        for name in ["s", "n", "absent"] {
            assert_eq!(row.cell(Column::new(name, None)), row.get(name), "{name}");
        }
    }

    #[test]
    fn reading_into_one_row_gives_what_the_iterator_gives() {
        let mut csv = b"id;note\n1;\"a;\nb\"\n\n2;x;y\n3;\"\"\"q\"\"\"\n4;\xff\n5;z".to_vec();
        csv.extend_from_slice(b"\n6;\"unclosed\n7;ok");
        let jsonl = b"{\"a\":1}\n\nbad\n{\"b\":\"\xc3\xa9\"}\n[]\n{\"c\":3}".to_vec();
        for (format, bytes) in [(Format::Csv, csv), (Format::Jsonl, jsonl)] {
            let iterated: Vec<_> = Rows::new(&bytes[..], opts(format, None)).unwrap().map(Result::unwrap).collect();
            let mut rows = Rows::new(&bytes[..], opts(format, None)).unwrap();
            let mut row = Row::default();
            let mut read = Vec::new();
            while let Some(item) = rows.read_into(&mut row).unwrap() {
                read.push(item.map(|()| row.clone()));
            }
            assert_eq!(read, iterated, "{format:?}");
            assert!(read.iter().any(Result::is_err) && read.iter().filter(|r| r.is_ok()).count() >= 3);
            assert!(rows.read_into(&mut row).unwrap().is_none(), "nothing after the end");
        }
    }

    #[test]
    fn header_errors_name_positions_not_values() {
        let err = |text: &[u8]| Rows::new(text, opts(Format::Csv, None)).err().map(|e| e.to_string());
        assert_eq!(err(b"a,b,a\n").as_deref(), Some("unusable CSV header: duplicate_column (column 3)"));
        assert_eq!(err(b"\"a\"b,c\n").as_deref(), Some("unusable CSV header: broken_quoting"));
        assert_eq!(err(b"a,\xff\n").as_deref(), Some("unusable CSV header: invalid_utf8"));
        assert_eq!(err(b"\n1\n").as_deref(), Some("unusable CSV header: empty_header"));
        assert!(err(b"").is_none());
        let rows = Rows::new(&b""[..], opts(Format::Csv, None)).unwrap();
        assert!(rows.header().is_none());
        assert_eq!(rows.count(), 0);
        assert!(matches!(
            Rows::new(&b"a|b"[..], opts(Format::Csv, Some(b'|'))),
            Err(ImportError::UnsupportedDelimiter)
        ));
    }

    /// An endless-looking line produced lazily, so the test itself never holds it.
    struct LongLine {
        left: usize,
        tail: Cursor<Vec<u8>>,
    }

    impl Read for LongLine {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return self.tail.read(out);
            }
            let n = out.len().min(self.left);
            out[..n].fill(b'a');
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_10mb_line_is_rejected_with_a_bounded_buffer() {
        for format in [Format::Csv, Format::Jsonl] {
            let tail = match format {
                Format::Csv => "\nx,y\n",
                Format::Jsonl => "\n{\"a\":1}\n",
            };
            let head = if format == Format::Csv { "a,b\n" } else { "" };
            let reader = BufReader::new(
                Cursor::new(head.as_bytes().to_vec())
                    .chain(LongLine { left: 10 * 1024 * 1024, tail: Cursor::new(tail.as_bytes().to_vec()) }),
            );
            let mut rows = Rows::new(reader, opts(format, None)).unwrap();
            let first = rows.next().unwrap().unwrap();
            assert_eq!(first, Err(RowReject::new(1, reason::LINE_TOO_LONG)));
            assert!(rows.buf.capacity() <= MAX_RECORD_BYTES * 2, "buffer grew to {}", rows.buf.capacity());
            let second = rows.next().unwrap().unwrap().unwrap();
            assert_eq!(second.number(), 2);
            assert!(rows.buf.capacity() <= MAX_RECORD_BYTES * 2);
            assert!(rows.next().is_none());
            assert_eq!(rows.position().0, (head.len() + 10 * 1024 * 1024 + tail.len()) as u64);
        }
    }

    #[test]
    fn a_quoted_field_over_the_bound_is_skipped_to_its_real_end() {
        let o = ParseOptions { max_record_bytes: 16, ..opts(Format::Csv, None) };
        let text = "a,b\n\"0123456789\n0123456789\n0123456789\",x\n1,2\n";
        let rows = Rows::new(text.as_bytes(), o).unwrap();
        assert_eq!(collect(rows), vec![rejected(1, reason::LINE_TOO_LONG), ok(2, &["1", "2"])]);
    }

    fn resume_matches_single_pass(format: Format, text: &str) {
        let o = opts(format, None);
        let mut single = Rows::new(text.as_bytes(), o).unwrap();
        let header = single.header().cloned();
        let mut checkpoints = vec![single.position()];
        let mut all = Vec::new();
        while let Some(item) = single.next() {
            all.push(item.unwrap());
            checkpoints.push(single.position());
        }
        assert_eq!(checkpoints.last().unwrap().0, text.len() as u64);
        for (i, &(offset, row)) in checkpoints.iter().enumerate() {
            let rest = &text.as_bytes()[offset as usize..];
            let resumed = Rows::resume(rest, o, header.clone(), offset, row).unwrap();
            let items: Vec<_> = resumed.map(Result::unwrap).collect();
            assert_eq!(items, all[i..], "resuming at checkpoint {i}");
        }
    }

    #[test]
    fn resume_from_any_checkpoint_gives_the_remaining_rows() {
        resume_matches_single_pass(
            Format::Csv,
            "\u{feff}id;note\n1;\"a;\nb\"\n\n2;x;y\n3;\"unclosed\n4;ok\n5;\"\"\"q\"\"\"\n6;z",
        );
        resume_matches_single_pass(Format::Csv, "id,note\r\n1,a\r\n2,\"b\r\nc\"\r\n");
        resume_matches_single_pass(Format::Jsonl, "{\"a\":1}\n\nbad\n{\"b\":\"\u{e9}\"}\n[]\n{\"c\":3}");
    }

    #[test]
    fn resume_needs_the_csv_header() {
        assert!(matches!(
            Rows::resume(&b""[..], opts(Format::Csv, None), None, 10, 2),
            Err(ImportError::MissingHeader)
        ));
        let header = Header::new(vec!["a".into(), "b".into()], b';').unwrap();
        let rows = Rows::resume(&b"1;2\n"[..], opts(Format::Csv, None), Some(header), 10, 2).unwrap();
        assert_eq!(collect(rows), vec![ok(3, &["1", "2"])]);
    }

    #[test]
    fn io_errors_end_the_file() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection reset"))
            }
        }
        let reader = BufReader::new(Cursor::new(b"{}\n{\"a\":".to_vec()).chain(Failing));
        let mut rows = Rows::new(reader, opts(Format::Jsonl, None)).unwrap();
        assert!(rows.next().unwrap().unwrap().is_ok());
        assert!(matches!(rows.next(), Some(Err(ImportError::Io(_)))));
        // The checkpoint is still the end of the last row yielded.
        assert_eq!(rows.position(), (3, 1));
        assert!(rows.next().is_none());
    }

    /// Deterministic pseudo-random bytes (xorshift), biased towards the bytes that drive the parsers.
    fn garbage(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 8 {
                    0 => b"\",;\t\n\r{}"[(x >> 8) as usize % 8],
                    _ => (x >> 16) as u8,
                }
            })
            .collect()
    }

    /// Every record's end, field count and problem, scanning `bytes` in chunks of `chunk` bytes.
    fn records(mut scanner: Scanner, bytes: &[u8], chunk: usize) -> Vec<(usize, usize, Option<&'static str>)> {
        let mut out = Vec::new();
        for (n, mut piece) in bytes.chunks(chunk).enumerate() {
            let mut offset = n * chunk;
            while let Some(i) = scanner.scan(piece) {
                out.push((offset + i, scanner.fields, scanner.problem));
                scanner.reset();
                piece = &piece[i + 1..];
                offset += i + 1;
            }
        }
        scanner.at_eof();
        out.push((bytes.len(), scanner.fields, scanner.problem));
        out
    }

    #[test]
    fn scanning_runs_of_bytes_finds_what_stepping_byte_by_byte_finds() {
        for seed in 0..200u64 {
            let bytes = garbage(seed, 500 + (seed as usize * 31) % 1500);
            for delimiter in DELIMITERS {
                let scanner = || Scanner::csv(Some(delimiter), 8);
                let mut stepping = scanner();
                let mut expected = Vec::new();
                for (i, &b) in bytes.iter().enumerate() {
                    if stepping.step(b) {
                        expected.push((i, stepping.fields, stepping.problem));
                        stepping.reset();
                    }
                }
                stepping.at_eof();
                expected.push((bytes.len(), stepping.fields, stepping.problem));
                for chunk in [1, 2, 7, 64, bytes.len()] {
                    assert_eq!(records(scanner(), &bytes, chunk), expected, "seed {seed}, chunk {chunk}");
                }
            }
        }
    }

    /// The fields of a record as the `csv` crate reads it.
    fn csv_crate_fields(record: &[u8], delimiter: u8) -> Vec<String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(record);
        let mut fields = csv::StringRecord::new();
        assert!(reader.read_record(&mut fields).unwrap());
        fields.iter().map(String::from).collect()
    }

    #[test]
    fn fields_decode_as_the_csv_crate_reads_them() {
        const ALPHABET: &[&str] =
            &["a", "b", "\"", "\"\"", ",", ";", "\t", "\n", "\r", " ", "\u{e9}", "\u{1F600}", "x y"];
        let mut decoded = 0;
        for seed in 0..400u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let text: String = (0..300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ALPHABET[(x % ALPHABET.len() as u64) as usize]
                })
                .collect();
            for delimiter in DELIMITERS {
                let o = ParseOptions { delimiter: Some(delimiter), ..opts(Format::Csv, None) };
                let mut rows =
                    Rows::resume(text.as_bytes(), o, Some(Header::new(vec!["a".into()], delimiter).unwrap()), 0, 0)
                        .unwrap();
                while let Some(problem) = rows.frame().unwrap() {
                    if problem.is_some() || rows.buf.is_empty() {
                        continue;
                    }
                    let mut fields = Fields::default();
                    fields.decode(std::str::from_utf8(&rows.buf).unwrap(), delimiter);
                    let ours: Vec<String> = fields.iter().map(String::from).collect();
                    assert_eq!(
                        ours,
                        csv_crate_fields(&rows.buf, delimiter),
                        "{:?}",
                        String::from_utf8_lossy(&rows.buf)
                    );
                    decoded += 1;
                }
            }
        }
        assert!(decoded > 1000, "only {decoded} records were well-formed");
    }

    #[test]
    fn binary_garbage_never_panics() {
        for seed in 0..300u64 {
            let bytes = garbage(seed, 64 + (seed as usize * 37) % 4000);
            for format in [Format::Csv, Format::Jsonl] {
                let o = ParseOptions { max_record_bytes: 256, max_columns: 8, ..opts(format, None) };
                // A tiny buffer puts chunk boundaries everywhere.
                let Ok(rows) = Rows::new(BufReader::with_capacity(7, &bytes[..]), o) else {
                    continue;
                };
                let mut last = 0;
                for item in rows {
                    let number = match item.expect("in-memory reads do not fail") {
                        Ok(row) => row.number(),
                        Err(reject) => reject.row,
                    };
                    assert!(number > last);
                    last = number;
                }
            }
        }
    }
}
