//! A source's import mapping (which column is which identifier or typed trait, and which event a row becomes)
//! and the conversion of one row into a normalized-shaped Segment event.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use time::format_description::OwnedFormatItem;
use time::parsing::Parsed;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use super::event::{EventBuffers, ExternalId, ImportEvent, TraitName, TraitValue};
use super::rows::{Cell, Column, Format, Header, ParseOptions, Row, MAX_COLUMNS};
use super::{reason, FileId, MessageIds, RowReject};
use crate::identity::{IdType, Identifier, RejectReason};
use crate::ingest::timestamp::{format_timestamp, parse_timestamp};

/// `context.library.name` of every imported event, so imports can be told apart from SDK traffic.
pub const LIBRARY_NAME: &str = "tributary-import";

/// How the rows of a source's import files become events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportMapping {
    pub format: Format,
    /// CSV only: `,`, `;` or a tab. Absent: the most frequent of them in the header line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// What each column (CSV header name, JSON key) holds. Columns not listed are ignored.
    pub columns: BTreeMap<String, ColumnMapping>,
    /// The event each row becomes.
    pub event: EventSpec,
    /// Country calling code for phones written without `+`/`00` (e.g. `"1"`); without it they are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_country_code: Option<String>,
}

/// What one column holds. Written `{identifier: email}`, or `{type: date, format: "%d/%m/%Y", trait: birthday}`
/// for a typed trait (`trait` defaults to the column's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ColumnSpec", into = "ColumnSpec")]
pub enum ColumnMapping {
    /// An identifier: `user_id`, `email`, `phone`, `email_sha256`, `phone_sha256` or `ext:<name>`.
    Identifier(IdType),
    /// A typed trait (for track events, a property).
    Trait(TraitMapping),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraitMapping {
    /// The trait's name; the column's name when absent.
    pub name: Option<String>,
    pub kind: TraitType,
    /// `date` only, and required there.
    pub format: Option<String>,
}

/// A column mapping as written: an `identifier`, or a trait's `type` (with its optional `trait` name and, for
/// dates, `format`). A flat object rather than an enum, since YAML would need a tag (`!identifier`) for that.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ColumnSpec {
    /// The column is an identifier: `user_id`, `email`, `phone`, `email_sha256`, `phone_sha256` or `ext:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identifier: Option<IdType>,
    /// The column is a trait (for track events, a property) of this type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<TraitType>,
    /// The trait's name; the column's name when absent.
    #[serde(default, rename = "trait", skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// `date` only, and required there: the column's format in strftime syntax (`%Y-%m-%d`, `%d/%m/%Y %H:%M`),
    /// as the `time` crate reads it. A date alone becomes `YYYY-MM-DD`; with a time, an ISO-8601 UTC timestamp
    /// (UTC assumed when the format has no offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<String>,
}

impl TryFrom<ColumnSpec> for ColumnMapping {
    type Error = String;
    fn try_from(spec: ColumnSpec) -> Result<Self, String> {
        match spec {
            ColumnSpec { identifier: Some(kind), kind: None, name: None, format: None } => {
                Ok(ColumnMapping::Identifier(kind))
            }
            ColumnSpec { identifier: Some(_), .. } => {
                Err("a column is an `identifier` or a trait (`type`, `trait`, `format`), not both".into())
            }
            ColumnSpec { identifier: None, kind: Some(kind), name, format } => {
                Ok(ColumnMapping::Trait(TraitMapping { name, kind, format }))
            }
            ColumnSpec { identifier: None, kind: None, .. } => {
                Err("a column needs an `identifier` or a trait `type`".into())
            }
        }
    }
}

impl From<ColumnMapping> for ColumnSpec {
    fn from(mapping: ColumnMapping) -> Self {
        match mapping {
            ColumnMapping::Identifier(kind) => {
                ColumnSpec { identifier: Some(kind), kind: None, name: None, format: None }
            }
            ColumnMapping::Trait(TraitMapping { name, kind, format }) => {
                ColumnSpec { identifier: None, kind: Some(kind), name, format }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraitType {
    /// Text as written; JSON numbers and booleans are written as text.
    String,
    /// An integer or a finite decimal (`42`, `-1.5`, `1e3`).
    Number,
    /// `true`/`false`, `yes`/`no`, `1`/`0`, any case.
    Bool,
    /// A date or date-time in the trait's `format`.
    Date,
}

/// The event a row becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventSpec {
    /// An identify carrying the row's traits.
    Identify {
        /// Column holding when the row's facts were true (ISO-8601); the import time when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp_column: Option<String>,
    },
    /// A track; exactly one of `event_column` and `event_name` names the event.
    Track {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_column: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_name: Option<String>,
        /// Column holding when the event happened (ISO-8601); the import time when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp_column: Option<String>,
    },
}

/// Why a mapping was refused. Names only columns and traits of the mapping itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("import mapping: {0}")]
pub struct MappingError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, MappingError> {
    Err(MappingError(message.into()))
}

/// A mapping that passed [`ImportMapping::check`], with its date formats compiled: the only kind
/// [`row_to_event`] takes.
#[derive(Debug, Clone)]
pub struct CheckedMapping {
    format: Format,
    delimiter: Option<u8>,
    columns: Vec<(String, Target)>,
    /// The trait names, sorted: the order in which events list traits.
    trait_names: Vec<TraitName>,
    event: Kind,
    timestamp_column: Option<String>,
    default_country_code: Option<String>,
}

#[derive(Debug, Clone)]
enum Target {
    Id(IdType),
    /// `slot`: the index of `name` in [`CheckedMapping::trait_names`].
    Trait {
        name: String,
        slot: usize,
        kind: Typed,
    },
}

#[derive(Debug, Clone)]
enum Typed {
    String,
    Number,
    Bool,
    /// A compiled `format`, and whether it is `%Y-%m-%d` (read by hand, [`parse_iso_date`]).
    Date(OwnedFormatItem, bool),
}

#[derive(Debug, Clone)]
enum Kind {
    Identify,
    TrackColumn(String),
    TrackNamed(String),
}

/// Identifier types a column may hold: the person's own ids. `anonymous_id` and `device_id` name a browser or a
/// device, which a file row is not.
fn importable(kind: &IdType) -> bool {
    match kind {
        IdType::UserId | IdType::Email | IdType::Phone | IdType::EmailSha256 | IdType::PhoneSha256 => true,
        // `ext:<built-in name>` would come back from `context.externalIds` as the built-in type.
        IdType::External(name) => {
            !matches!(name.as_str(), "*" | "user_id" | "anonymous_id" | "email" | "phone" | "device_id")
        }
        IdType::AnonymousId | IdType::DeviceId => false,
    }
}

impl ImportMapping {
    /// Checks the mapping and compiles it: at least one identifier column and at most one `user_id` column;
    /// identifier types a row can carry; distinct, valid trait names other than `email`/`phone` (those come
    /// from identifier columns); a valid `format` on each `date` trait and on no other; a track names its event
    /// one way; a delimiter only for CSV; a valid default country code.
    pub fn check(&self) -> Result<CheckedMapping, MappingError> {
        let delimiter = match (self.format, self.delimiter) {
            (_, None) => None,
            (Format::Csv, Some(c @ (',' | ';' | '\t'))) => Some(c as u8),
            (Format::Csv, Some(_)) => return refuse("delimiter must be ',', ';' or a tab"),
            (Format::Jsonl, Some(_)) => return refuse("delimiter applies only to the csv format"),
        };
        if let Some(cc) = &self.default_country_code {
            let ok = (1..=3).contains(&cc.len()) && cc.bytes().all(|b| b.is_ascii_digit()) && !cc.starts_with('0');
            if !ok {
                return refuse("default_country_code must be 1-3 digits without a leading 0 (e.g. \"1\", \"44\")");
            }
        }
        if self.columns.len() > MAX_COLUMNS {
            return refuse(format!("at most {MAX_COLUMNS} columns may be mapped"));
        }

        let mut columns = Vec::with_capacity(self.columns.len());
        let mut trait_names = BTreeSet::new();
        let mut user_ids = 0;
        for (column, mapping) in &self.columns {
            if column.is_empty() {
                return refuse("column names must not be empty");
            }
            let target = match mapping {
                ColumnMapping::Identifier(kind) => {
                    if !importable(kind) {
                        return refuse(format!(
                            "column `{column}`: identifier must be user_id, email, phone, email_sha256, \
                             phone_sha256 or ext:<name> (not a built-in name)"
                        ));
                    }
                    user_ids += usize::from(*kind == IdType::UserId);
                    Target::Id(kind.clone())
                }
                ColumnMapping::Trait(t) => {
                    let name = t.name.clone().unwrap_or_else(|| column.clone());
                    if !crate::profile::traits::valid_name(&name) {
                        return refuse(format!("column `{column}`: trait name must be 1-256 bytes"));
                    }
                    if name == "email" || name == "phone" {
                        return refuse(format!("column `{column}`: map `{name}` as an identifier, not a trait"));
                    }
                    if !trait_names.insert(name.clone()) {
                        return refuse(format!("column `{column}`: trait `{name}` is mapped more than once"));
                    }
                    let kind = match (t.kind, &t.format) {
                        (TraitType::Date, Some(format)) => match time::format_description::parse_strftime_owned(format)
                        {
                            Ok(compiled) => Typed::Date(compiled, format == ISO_DATE),
                            Err(e) => return refuse(format!("column `{column}`: invalid date format: {e}")),
                        },
                        (TraitType::Date, None) => {
                            return refuse(format!("column `{column}`: a date trait needs a `format`"))
                        }
                        (_, Some(_)) => return refuse(format!("column `{column}`: only date traits take a `format`")),
                        (TraitType::String, None) => Typed::String,
                        (TraitType::Number, None) => Typed::Number,
                        (TraitType::Bool, None) => Typed::Bool,
                    };
                    Target::Trait { name, slot: 0, kind }
                }
            };
            columns.push((column.clone(), target));
        }
        let trait_names: Vec<TraitName> = trait_names.into_iter().map(TraitName::new).collect();
        for (_, target) in &mut columns {
            if let Target::Trait { name, slot, .. } = target {
                *slot = trait_names.partition_point(|n| n.name < *name);
            }
        }
        if !columns.iter().any(|(_, t)| matches!(t, Target::Id(_))) {
            return refuse("at least one column must be mapped to an identifier");
        }
        if user_ids > 1 {
            return refuse("at most one column may be mapped to user_id");
        }

        let non_empty = |what: &str, value: &Option<String>| match value {
            Some(v) if v.trim().is_empty() => refuse(format!("{what} must not be empty")),
            _ => Ok(()),
        };
        let (event, timestamp_column) = match &self.event {
            EventSpec::Identify { timestamp_column } => (Kind::Identify, timestamp_column),
            EventSpec::Track { event_column, event_name, timestamp_column } => {
                non_empty("event_column", event_column)?;
                non_empty("event_name", event_name)?;
                let kind = match (event_column, event_name) {
                    (Some(c), None) => Kind::TrackColumn(c.clone()),
                    (None, Some(n)) => Kind::TrackNamed(n.trim().to_string()),
                    _ => return refuse("a track names its event with exactly one of event_column and event_name"),
                };
                (kind, timestamp_column)
            }
        };
        non_empty("timestamp_column", timestamp_column)?;

        Ok(CheckedMapping {
            format: self.format,
            delimiter,
            columns,
            trait_names,
            event,
            timestamp_column: timestamp_column.clone(),
            default_country_code: self.default_country_code.clone(),
        })
    }
}

impl CheckedMapping {
    /// How to parse this source's files (default bounds).
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions { delimiter: self.delimiter, ..ParseOptions::new(self.format) }
    }

    /// Every column the mapping reads must be in a CSV file's header; otherwise every row would be rejected, so
    /// the file is refused as a whole. Always passes for JSON Lines, whose rows may leave keys out.
    pub fn check_header(&self, header: &Header) -> Result<(), MappingError> {
        let missing: Vec<String> =
            self.read_columns().filter(|c| header.position(c).is_none()).map(|c| format!("`{c}`")).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            refuse(format!("the file's header has no column {}", missing.join(", ")))
        }
    }

    fn read_columns(&self) -> impl Iterator<Item = &str> {
        let event = match &self.event {
            Kind::TrackColumn(c) => Some(c.as_str()),
            _ => None,
        };
        self.columns.iter().map(|(c, _)| c.as_str()).chain(event).chain(self.timestamp_column.as_deref())
    }
}

/// One row's event ([`FileMapping::event`]) as a JSON object. The rows of a whole file go through the mapping
/// bound to the file once, with [`CheckedMapping::for_file`].
pub fn row_to_event(
    mapping: &CheckedMapping,
    row: &Row,
    file: &FileId,
    received_at: OffsetDateTime,
) -> Result<Map<String, Value>, RowReject> {
    mapping.for_file(row.header(), file, received_at).event(row).map(|event| event.to_map())
}

/// A [`CheckedMapping`] bound to one file: the columns found in the file's header, the file's messageIds and the
/// import time, each worked out once for all the file's rows.
#[derive(Debug)]
pub struct FileMapping<'m> {
    mapping: &'m CheckedMapping,
    /// The mapping's columns, in its order.
    columns: Vec<Column<'m>>,
    event: EventName<'m>,
    timestamp_column: Option<Column<'m>>,
    ids: MessageIds,
    received_at: String,
}

#[derive(Debug)]
enum EventName<'m> {
    Identify,
    Named(&'m str),
    Column(Column<'m>),
}

impl CheckedMapping {
    /// The mapping for the rows of `file`, whose CSV header is `header` (`None` for JSON Lines), imported at
    /// `received_at`.
    pub fn for_file<'m>(
        &'m self,
        header: Option<&Header>,
        file: &FileId,
        received_at: OffsetDateTime,
    ) -> FileMapping<'m> {
        let column = |name: &'m str| Column::new(name, header);
        let event = match &self.event {
            Kind::Identify => EventName::Identify,
            Kind::TrackNamed(name) => EventName::Named(name),
            Kind::TrackColumn(name) => EventName::Column(column(name)),
        };
        FileMapping {
            mapping: self,
            columns: self.columns.iter().map(|(name, _)| column(name)).collect(),
            event,
            timestamp_column: self.timestamp_column.as_deref().map(column),
            ids: MessageIds::new(file),
            received_at: format_timestamp(received_at),
        }
    }
}

impl FileMapping<'_> {
    /// Turns one row into a normalized-shaped Segment event:
    ///
    /// - `messageId`: [`FileId::message_id`] of the row, so a reprocessed file yields the same ids;
    /// - `type`: `identify` or `track` (with `event`);
    /// - `userId` from the `user_id` column; never an `anonymousId`;
    /// - the other identifiers in `context.externalIds` (`{id, type, collection: "users"}`, hashed ones with
    ///   `encoding: "sha256"` and the raw type), normalized as identity resolution does; raw email and phone also
    ///   as `email`/`phone` traits (`traits` for identify, `context.traits` for track, where identity resolution
    ///   looks);
    /// - typed values in `traits` (identify) or `properties` (track);
    /// - `timestamp` from the timestamp column or the import time, `receivedAt`, `context.library`.
    ///
    /// Empty values are skipped (a column that is empty in a row says nothing), but a present value that does not
    /// fit its column rejects the whole row: the first problem in column-name order, then the event name and
    /// timestamp columns, then `no_identifier`.
    pub fn event<'r>(&'r self, row: &'r Row) -> Result<ImportEvent<'r>, RowReject> {
        self.event_in(row, &mut EventBuffers::default())
    }

    /// [`FileMapping::event`], with the event's lists in the allocations of `buffers` (an event gives them back
    /// with [`ImportEvent::recycle`]; a rejected row leaves them there).
    pub fn event_in<'r>(&'r self, row: &'r Row, buffers: &mut EventBuffers) -> Result<ImportEvent<'r>, RowReject> {
        let (mut external_ids, mut values) = buffers.take();
        match self.fill(row, &mut external_ids, &mut values) {
            Ok(Filled { user_id, email, phone, name, timestamp }) => Ok(ImportEvent {
                message_id: self.ids.get(row.number()),
                name,
                user_id,
                external_ids,
                email,
                phone,
                trait_names: &self.mapping.trait_names,
                values,
                timestamp,
                received_at: &self.received_at,
            }),
            Err(reject) => {
                buffers.keep(external_ids, values);
                Err(reject)
            }
        }
    }

    /// Reads the row into the (empty) lists of its event, and the rest of the event's parts.
    fn fill<'r>(
        &'r self,
        row: &'r Row,
        external_ids: &mut Vec<ExternalId<'r>>,
        values: &mut Vec<Option<TraitValue<'r>>>,
    ) -> Result<Filled<'r>, RowReject> {
        let number = row.number();
        let reject = |column: Column<'_>, reason| RowReject::at(number, column.name(), reason);
        let cc = self.mapping.default_country_code.as_deref();

        let mut user_id = None;
        let (mut email, mut phone) = (None, None);
        values.resize_with(self.mapping.trait_names.len(), || None);
        for ((_, target), &column) in self.mapping.columns.iter().zip(&self.columns) {
            let cell = match row.cell(column) {
                Cell::Missing => return Err(reject(column, reason::MISSING_COLUMN)),
                Cell::Empty => continue,
                cell => cell,
            };
            match target {
                Target::Id(kind) => {
                    let raw = id_text(cell).ok_or_else(|| reject(column, reason::WRONG_TYPE))?;
                    let Some(id) = identifier(kind, &raw, cc).map_err(|r| reject(column, r))? else {
                        continue;
                    };
                    let (kind, hashed) = match kind {
                        IdType::UserId => {
                            user_id = Some(id.value);
                            continue;
                        }
                        IdType::Email => {
                            email.get_or_insert(external_ids.len());
                            ("email", false)
                        }
                        IdType::Phone => {
                            phone.get_or_insert(external_ids.len());
                            ("phone", false)
                        }
                        IdType::EmailSha256 => ("email", true),
                        IdType::PhoneSha256 => ("phone", true),
                        IdType::External(name) => (name.as_str(), false),
                        // `check` refuses them.
                        IdType::AnonymousId | IdType::DeviceId => continue,
                    };
                    external_ids.push(ExternalId { id: id.value, kind, hashed });
                }
                Target::Trait { slot, kind, .. } => {
                    let value = typed(kind, cell).map_err(|r| reject(column, r))?;
                    if let Some(place) = values.get_mut(*slot) {
                        *place = Some(value);
                    }
                }
            }
        }

        let name = match self.event {
            EventName::Identify => None,
            EventName::Named(name) => Some(name),
            EventName::Column(column) => match row.cell(column) {
                Cell::Text(s) => Some(s.trim()),
                Cell::Missing | Cell::Empty => return Err(reject(column, reason::MISSING_COLUMN)),
                Cell::Value(_) => return Err(reject(column, reason::WRONG_TYPE)),
            },
        };
        let timestamp = match self.timestamp_column {
            None => None,
            Some(column) => match row.cell(column) {
                Cell::Text(s) => Some(parse_timestamp(s).ok_or_else(|| reject(column, reason::BAD_DATE))?),
                Cell::Missing | Cell::Empty => return Err(reject(column, reason::MISSING_COLUMN)),
                Cell::Value(_) => return Err(reject(column, reason::WRONG_TYPE)),
            },
        };
        if user_id.is_none() && external_ids.is_empty() {
            return Err(RowReject::new(number, reason::NO_IDENTIFIER));
        }
        Ok(Filled { user_id, email, phone, name, timestamp })
    }
}

/// The parts of a row's event besides its lists ([`FileMapping::fill`]).
struct Filled<'r> {
    user_id: Option<String>,
    email: Option<usize>,
    phone: Option<usize>,
    name: Option<&'r str>,
    timestamp: Option<OffsetDateTime>,
}

/// An identifier's text: a string, or an integer (ids and phones often come as JSON numbers).
fn id_text(cell: Cell<'_>) -> Option<Cow<'_, str>> {
    match cell {
        Cell::Text(s) => Some(Cow::Borrowed(s)),
        Cell::Value(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// The normalized identifier, `None` when there is nothing to it, or the reject reason.
fn identifier(kind: &IdType, raw: &str, cc: Option<&str>) -> Result<Option<Identifier>, &'static str> {
    // Hashed columns may carry the `sha256:` prefix the PII `hash` action writes.
    let raw = match kind {
        IdType::EmailSha256 | IdType::PhoneSha256 => {
            let trimmed = raw.trim();
            match trimmed.get(..7) {
                Some(p) if p.eq_ignore_ascii_case("sha256:") => trimmed.get(7..).unwrap_or_default(),
                _ => trimmed,
            }
        }
        _ => raw,
    };
    match Identifier::new(kind.clone(), raw, cc) {
        Ok(id) => Ok(Some(id)),
        Err(RejectReason::Empty) => Ok(None),
        Err(_) => Err(match kind {
            IdType::Email => reason::BAD_EMAIL,
            IdType::Phone => reason::BAD_PHONE,
            IdType::EmailSha256 | IdType::PhoneSha256 => reason::NOT_SHA256,
            _ => reason::ID_TOO_LONG,
        }),
    }
}

fn typed<'r>(kind: &Typed, cell: Cell<'r>) -> Result<TraitValue<'r>, &'static str> {
    let wrong = reason::WRONG_TYPE;
    match (kind, cell) {
        (Typed::String, Cell::Text(s)) => Ok(TraitValue::Text(s)),
        (Typed::String, Cell::Value(v @ (Value::Number(_) | Value::Bool(_)))) => Ok(TraitValue::JsonText(v)),
        (Typed::Number, Cell::Text(s)) => parse_number(s.trim()).map(TraitValue::Number).ok_or(wrong),
        (Typed::Number, Cell::Value(Value::Number(n))) => Ok(TraitValue::Number(n.clone())),
        (Typed::Bool, Cell::Text(s)) => parse_bool(s.trim()).map(TraitValue::Bool).ok_or(wrong),
        (Typed::Bool, Cell::Value(Value::Bool(b))) => Ok(TraitValue::Bool(*b)),
        (Typed::Date(format, iso), Cell::Text(s)) => {
            let s = s.trim();
            let date = match iso.then(|| parse_iso_date(s)).flatten() {
                Some(read) => read,
                None => parse_date(s, format),
            };
            date.ok_or(reason::BAD_DATE)
        }
        _ => Err(wrong),
    }
}

fn parse_number(s: &str) -> Option<Number> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(i.into());
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(u.into());
    }
    // `f64` also parses `inf` and `NaN`, which JSON cannot hold.
    s.parse::<f64>().ok().and_then(Number::from_f64)
}

fn parse_bool(s: &str) -> Option<bool> {
    let is = |word: &str| s.eq_ignore_ascii_case(word);
    if is("true") || is("yes") || is("1") {
        Some(true)
    } else if is("false") || is("no") || is("0") {
        Some(false)
    } else {
        None
    }
}

/// The most common date format, which [`parse_iso_date`] reads without the `time` crate's parser.
const ISO_DATE: &str = "%Y-%m-%d";

/// A date in the format `%Y-%m-%d` when `s` has its plain shape, exactly `DDDD-DD-DD`: `Some` with what
/// [`parse_date`] gives for it (the date, or `None` for no such date or a year outside 1 to 9999). `None` for any
/// other text, which is left to [`parse_date`].
#[allow(clippy::option_option)] // the outer `None` means "not read here", the inner one "read, not a date"
fn parse_iso_date(s: &str) -> Option<Option<TraitValue<'static>>> {
    let &[y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = s.as_bytes() else {
        return None;
    };
    let mut digits = [y1, y2, y3, y4, m1, m2, d1, d2];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter_mut().for_each(|d| *d -= b'0');
    let [y1, y2, y3, y4, m1, m2, d1, d2] = digits;
    let year = i32::from(y1) * 1000 + i32::from(y2) * 100 + i32::from(y3) * 10 + i32::from(y4);
    let date = time::Month::try_from(m1 * 10 + m2)
        .ok()
        .and_then(|month| Date::from_calendar_date(year, month, d1 * 10 + d2).ok())
        .filter(|_| (1..=9999).contains(&year));
    Some(date.map(TraitValue::Date))
}

/// The most precise reading the format allows: with an offset, without one (UTC), or a date alone. The text is
/// parsed once; the fields it held decide which of the three it is.
fn parse_date(s: &str, format: &OwnedFormatItem) -> Option<TraitValue<'static>> {
    let mut parsed = Parsed::new();
    if !parsed.parse_item(s.as_bytes(), format).ok()?.is_empty() {
        return None;
    }
    let at = OffsetDateTime::try_from(parsed)
        .ok()
        .or_else(|| PrimitiveDateTime::try_from(parsed).ok().map(PrimitiveDateTime::assume_utc));
    if let Some(at) = at {
        // `checked_`: converting a year-1 or year-9999 instant to UTC may leave the supported range.
        let utc = at.checked_to_offset(time::UtcOffset::UTC)?;
        return (1..=9999).contains(&utc.year()).then_some(TraitValue::Instant(utc));
    }
    let date = Date::try_from(parsed).ok()?;
    (1..=9999).contains(&date.year()).then_some(TraitValue::Date(date))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::identity::{extract, ExtractOptions};
    use crate::import::Rows;

    const RECEIVED: OffsetDateTime = datetime!(2025-03-01 12:00:00 UTC);

    fn file(version: &str) -> FileId {
        FileId { bucket: "imports".into(), key: "crm/2025-03-01.csv".into(), version: Some(version.into()) }
    }

    fn mapping(yaml: &str) -> CheckedMapping {
        let m: ImportMapping = serde_yaml_ng::from_str(yaml).expect("mapping parses");
        m.check().expect("mapping checks")
    }

    fn refusal(yaml: &str) -> String {
        let m: ImportMapping = serde_yaml_ng::from_str(yaml).expect("mapping parses");
        m.check().expect_err("mapping is refused").to_string()
    }

    const CRM: &str = r#"
format: csv
columns:
  id: { identifier: user_id }
  mail: { identifier: email }
  tel: { identifier: phone }
  hashed: { identifier: email_sha256 }
  braze: { identifier: "ext:braze_id" }
  plan: { type: string }
  score: { trait: lead_score, type: number }
  vip: { type: bool }
  dob: { trait: birthday, type: date, format: "%d/%m/%Y" }
  seen: { trait: last_seen, type: date, format: "%Y-%m-%d %H:%M" }
event: { type: identify }
default_country_code: "1"
"#;

    const CRM_HEADER: &str = "id,mail,tel,hashed,braze,plan,score,vip,dob,seen\n";

    /// Events (or rejects as `(row, column, reason)`) for a CSV text under a mapping.
    fn run(mapping: &CheckedMapping, text: &str, file: &FileId) -> Vec<Result<Map<String, Value>, RowReject>> {
        let rows = Rows::new(text.as_bytes(), mapping.parse_options()).unwrap();
        if let Some(header) = rows.header() {
            mapping.check_header(header).unwrap();
        }
        rows.map(|item| item.unwrap().and_then(|row| row_to_event(mapping, &row, file, RECEIVED))).collect()
    }

    fn reject(row: u64, column: Option<&str>, reason: &'static str) -> Result<Map<String, Value>, RowReject> {
        Err(RowReject { row, column: column.map(String::from), reason })
    }

    #[test]
    fn identify_row_becomes_a_normalized_event() {
        let m = mapping(CRM);
        let hash = "A".repeat(64);
        let text = format!(
            "{CRM_HEADER}u-1, Ada@Example.COM ,(415) 555-0100,sha256:{hash},b-9,gold,42.5,Yes,31/12/1990,2025-02-01 08:30\n"
        );
        let events = run(&m, &text, &file("v1"));
        let event = events[0].clone().unwrap();
        assert_eq!(
            Value::Object(event.clone()),
            json!({
                "type": "identify",
                "messageId": file("v1").message_id(1),
                "userId": "u-1",
                "traits": {
                    "email": "ada@example.com",
                    "phone": "+14155550100",
                    "plan": "gold",
                    "lead_score": 42.5,
                    "vip": true,
                    "birthday": "1990-12-31",
                    "last_seen": "2025-02-01T08:30:00.000Z",
                },
                "context": {
                    "library": { "name": "tributary-import" },
                    "externalIds": [
                        { "id": "b-9", "type": "braze_id", "collection": "users" },
                        { "id": "a".repeat(64), "type": "email", "encoding": "sha256", "collection": "users" },
                        { "id": "ada@example.com", "type": "email", "collection": "users" },
                        { "id": "+14155550100", "type": "phone", "collection": "users" },
                    ],
                },
                "timestamp": "2025-03-01T12:00:00.000Z",
                "receivedAt": "2025-03-01T12:00:00.000Z",
            })
        );
        assert!(!event.contains_key("anonymousId"));

        // Identity resolution reads exactly the mapped identifiers back.
        let ids = extract(&event, &ExtractOptions { default_country_code: None, include_hashed: false });
        assert!(ids.rejected.is_empty(), "{:?}", ids.rejected);
        let mut keys: Vec<String> = ids.ids.iter().map(|id| id.key()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "email:ada@example.com".to_string(),
                format!("email_sha256:{}", "a".repeat(64)),
                "ext:braze_id:b-9".to_string(),
                "phone:+14155550100".to_string(),
                "user_id:u-1".to_string(),
            ]
        );
    }

    /// Every accepted row's event as written by hand, as serialized, and as its JSON object serialized.
    fn three_forms(mapping: &CheckedMapping, text: &str) -> Vec<[String; 3]> {
        let mut rows = Rows::new(text.as_bytes(), mapping.parse_options()).unwrap();
        let file = mapping.for_file(rows.header(), &file("v1"), RECEIVED);
        let mut row = Row::default();
        let mut out = Vec::new();
        while let Some(read) = rows.read_into(&mut row).unwrap() {
            if let Ok(event) = read.map_err(|_| ()).and_then(|()| file.event(&row).map_err(|_| ())) {
                let mut written = Vec::new();
                event.write_json(&mut written).unwrap();
                out.push([
                    String::from_utf8(written).unwrap(),
                    serde_json::to_string(&event).unwrap(),
                    serde_json::to_string(&event.to_map()).unwrap(),
                ]);
            }
        }
        out
    }

    #[test]
    fn typed_events_write_what_their_json_objects_write() {
        let hash = "a".repeat(64);
        let crm = format!(
            "{CRM_HEADER}u-1, Ada@Example.COM ,(415) 555-0100,sha256:{hash},b-9,gold,42.5,Yes,31/12/1990,2025-02-01 08:30\n\
             ,b@x.io,,,,,,,,\n\
             u-3,,+44 20 7946 0958,,,\"q \"\"x\"\"\",-0,no,,\n\
             ,,,{hash},,,1e3,,01/02/2000,\n\
             u-5,,,,ext-only,\"\u{e9}\\\t\u{1}\",,,,\n"
        );
        let track_csv = mapping(
            r#"
format: csv
columns:
  uid: { identifier: user_id }
  mail: { identifier: email }
  alt: { identifier: email }
  tel: { identifier: phone }
  ph: { identifier: phone_sha256 }
  amount: { type: number }
  aaa: { type: string }
  zzz: { type: bool }
  day: { type: date, format: "%Y-%m-%d" }
event: { type: track, event_column: ev, timestamp_column: ts }
default_country_code: "44"
"#,
        );
        let track_text = format!(
            "uid,mail,alt,tel,ph,amount,aaa,zzz,day,ev,ts\n\
             u,a@x.io,b@x.io,020 7946 0958,{hash},1.5,x,true,2025-01-02, Bought ,2025-01-02T03:04:05+01:00\n\
             ,,b@x.io,,,,,,,Viewed,2025-01-02\n\
             ,,,,{hash},,,,,Hashed only,2025-01-02\n\
             u,,,,,,,false,,Flag,2025-01-02\n"
        );
        let jsonl = mapping(
            r#"
format: jsonl
columns:
  uid: { identifier: user_id }
  ext: { identifier: "ext:loyalty" }
  email: { identifier: email }
  amount: { type: number }
  label: { type: string }
  flag: { type: bool }
  seen: { type: date, format: "%Y-%m-%d %H:%M" }
event: { type: identify }
"#,
        );
        let jsonl_text = [
            r#"{"uid": 12, "ext": 99, "amount": 18446744073709551615, "label": 2.50, "flag": true}"#,
            r#"{"uid": "u", "email": "E@x.io", "amount": "-1.5", "label": false, "seen": "2025-02-01 08:30"}"#,
            r#"{"ext": "L-1", "label": "\u00e9\n\"", "amount": 1e300}"#,
        ]
        .join("\n");
        // The bench's partner file, whose rows take every fast path (ASCII emails, `%Y-%m-%d` dates).
        let partner = mapping(
            r#"
format: csv
columns:
  email: { identifier: email }
  plan: { type: string }
  score: { type: number }
  vip: { type: bool }
  signup: { type: date, format: "%Y-%m-%d" }
event: { type: identify }
"#,
        );
        let partner_text = String::from_utf8(crate::testing::partner_csv(3000)).unwrap();
        let cases =
            [(mapping(CRM), crm, 5), (track_csv, track_text, 4), (jsonl, jsonl_text, 3), (partner, partner_text, 3000)];
        for (m, text, rows) in cases {
            let events = three_forms(&m, &text);
            assert_eq!(events.len(), rows, "{text}");
            for [written, serialized, map] in events {
                assert_eq!(written, map);
                assert_eq!(serialized, map);
            }
        }
    }

    #[test]
    fn empty_cells_are_skipped() {
        let m = mapping(CRM);
        let events = run(&m, &format!("{CRM_HEADER},a@x.io,,,,,,,,\n"), &file("v1"));
        let event = events[0].clone().unwrap();
        assert!(!event.contains_key("userId"));
        assert_eq!(event["traits"], json!({ "email": "a@x.io" }));
        assert_eq!(
            event["context"]["externalIds"],
            json!([{ "id": "a@x.io", "type": "email", "collection": "users" }])
        );
    }

    #[test]
    fn track_from_json_lines() {
        let m = mapping(
            r#"
format: jsonl
columns:
  customer: { identifier: user_id }
  email: { identifier: email }
  total: { type: number }
  coupon: { type: string }
event: { type: track, event_column: what, timestamp_column: at }
"#,
        );
        let text = concat!(
            r#"{"customer": 12, "email": "b@x.io", "total": 9.5, "coupon": 10, "what": " Order Completed ", "at": "2025-01-02T03:04:05+01:00"}"#,
            "\n",
            r#"{"customer": "13", "what": "Refund", "at": "2025-01-02", "extra": {"ignored": true}}"#,
            "\n",
        );
        let events = run(&m, text, &file("v1"));
        let first = events[0].clone().unwrap();
        assert_eq!(
            Value::Object(first),
            json!({
                "type": "track",
                "event": "Order Completed",
                "messageId": file("v1").message_id(1),
                "userId": "12",
                "properties": { "total": 9.5, "coupon": "10" },
                "context": {
                    "library": { "name": "tributary-import" },
                    "externalIds": [{ "id": "b@x.io", "type": "email", "collection": "users" }],
                    "traits": { "email": "b@x.io" },
                },
                "timestamp": "2025-01-02T02:04:05.000Z",
                "receivedAt": "2025-03-01T12:00:00.000Z",
            })
        );
        let second = events[1].clone().unwrap();
        assert_eq!(second["event"], "Refund");
        assert_eq!(second["timestamp"], "2025-01-02T00:00:00.000Z");
        assert!(!second.contains_key("properties"));
        assert_eq!(second["context"], json!({ "library": { "name": "tributary-import" } }));

        let named = mapping(
            "format: jsonl\ncolumns: { u: { identifier: user_id } }\nevent: { type: track, event_name: Imported }\n",
        );
        let events = run(&named, "{\"u\": \"x\"}\n", &file("v1"));
        assert_eq!(events[0].clone().unwrap()["event"], "Imported");
    }

    #[test]
    fn every_reject_reason_names_row_and_column() {
        let m = mapping(
            r#"
format: csv
columns:
  email: { identifier: email }
  phone: { identifier: phone }
  ph: { identifier: phone_sha256 }
  uid: { identifier: user_id }
  n: { type: number }
  b: { type: bool }
  d: { type: date, format: "%Y-%m-%d" }
event: { type: track, event_column: ev, timestamp_column: ts }
"#,
        );
        let long_id = "x".repeat(300);
        let text = [
            "email,phone,ph,uid,n,b,d,ev,ts",
            "nope,,,,,,,E,2025-01-01",                // 1
            "a@x.io,555-0100,,,,,,E,2025-01-01",      // 2: no default country code
            ",,abc,u,,,,E,2025-01-01",                // 3
            &format!(",,,{long_id},,,,E,2025-01-01"), // 4
            ",,,u,ten,,,E,2025-01-01",                // 5
            ",,,u,,maybe,,E,2025-01-01",              // 6
            ",,,u,,,2025-13-01,E,2025-01-01",         // 7
            ",,,u,,,,,2025-01-01",                    // 8
            ",,,u,,,,E,",                             // 9
            ",,,u,,,,E,yesterday",                    // 10
            ",,,,1,true,2025-01-01,E,2025-01-01",     // 11
            "\"a@x.io\",,,,,,,E",                     // 12
            "\"a@x.io\"x,,,,,,,E,2025-01-01",         // 13
            "a@x.io,,,,,,,E,2025-01-01",              // 14: fine
        ]
        .join("\n");
        let got = run(&m, &text, &file("v1"));
        let expected = vec![
            reject(1, Some("email"), reason::BAD_EMAIL),
            reject(2, Some("phone"), reason::BAD_PHONE),
            reject(3, Some("ph"), reason::NOT_SHA256),
            reject(4, Some("uid"), reason::ID_TOO_LONG),
            reject(5, Some("n"), reason::WRONG_TYPE),
            reject(6, Some("b"), reason::WRONG_TYPE),
            reject(7, Some("d"), reason::BAD_DATE),
            reject(8, Some("ev"), reason::MISSING_COLUMN),
            reject(9, Some("ts"), reason::MISSING_COLUMN),
            reject(10, Some("ts"), reason::BAD_DATE),
            reject(11, None, reason::NO_IDENTIFIER),
            reject(12, None, reason::WRONG_COLUMN_COUNT),
            reject(13, None, reason::BROKEN_QUOTING),
        ];
        assert_eq!(got[..13], expected[..]);
        assert!(got[13].is_ok());
        // No reject message quotes a value.
        for r in got.iter().filter_map(|r| r.as_ref().err()) {
            let text = r.to_string();
            assert!(!text.contains("nope") && !text.contains("abc") && !text.contains("ten"), "{text}");
        }
    }

    #[test]
    fn json_values_of_the_wrong_kind_and_missing_header_columns() {
        let m = mapping(
            r#"
format: jsonl
columns:
  email: { identifier: email }
  tags: { type: string }
  n: { type: number }
  d: { type: date, format: "%Y-%m-%d" }
event: { type: identify, timestamp_column: ts }
"#,
        );
        let text = [
            r#"{"email": true, "ts": "2025-01-01"}"#,
            r#"{"email": "a@x.io", "tags": ["x"], "ts": "2025-01-01"}"#,
            r#"{"email": "a@x.io", "n": "12", "d": 20250101, "ts": "2025-01-01"}"#,
            r#"{"email": "a@x.io", "n": "12", "ts": 1735689600}"#,
            r#"{"email": "a@x.io", "n": "12", "ts": "2025-01-01"}"#,
        ]
        .join("\n");
        let got = run(&m, &text, &file("v1"));
        assert_eq!(got[0], reject(1, Some("email"), reason::WRONG_TYPE));
        assert_eq!(got[1], reject(2, Some("tags"), reason::WRONG_TYPE));
        assert_eq!(got[2], reject(3, Some("d"), reason::WRONG_TYPE));
        assert_eq!(got[3], reject(4, Some("ts"), reason::WRONG_TYPE));
        assert_eq!(got[4].clone().unwrap()["traits"]["n"], json!(12));

        // A CSV row without a mapped column: every row says so, and check_header refuses the file up front.
        let m = mapping(CRM);
        let header = Arc::new(Header::new(vec!["id".into(), "mail".into()], b',').unwrap());
        let row = Row::csv(1, header.clone(), vec!["u".into(), "a@x.io".into()]);
        assert_eq!(row_to_event(&m, &row, &file("v1"), RECEIVED), reject(1, Some("braze"), reason::MISSING_COLUMN));
        let err = m.check_header(&header).unwrap_err().to_string();
        assert!(err.contains("`braze`") && err.contains("`vip`") && !err.contains("`id`"), "{err}");
    }

    #[test]
    fn message_ids_are_stable_across_runs_and_change_with_the_version() {
        let m = mapping(CRM);
        let text = format!("{CRM_HEADER}u1,,,,,,,,,\nu2,,,,,,,,,\nu3,,,,,,,,,\n");
        let ids = |f: &FileId| -> Vec<Value> {
            run(&m, &text, f).into_iter().map(|e| e.unwrap()["messageId"].clone()).collect()
        };
        let first = ids(&file("v1"));
        assert_eq!(first, ids(&file("v1")));
        let unique: BTreeSet<String> = first.iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(unique.len(), 3);
        let other = ids(&file("v2"));
        assert!(first.iter().zip(&other).all(|(a, b)| a != b));
    }

    fn strftime(format: &str) -> OwnedFormatItem {
        time::format_description::parse_strftime_owned(format).unwrap()
    }

    /// A date as an event writes it.
    fn date_text(s: &str, format: &str) -> Option<String> {
        parse_date(s, &strftime(format)).map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_string())
    }

    #[test]
    fn dates_in_several_formats() {
        assert_eq!(date_text("2024-02-29", "%Y-%m-%d").as_deref(), Some("2024-02-29"));
        assert_eq!(date_text("0001-01-01", "%Y-%m-%d").as_deref(), Some("0001-01-01"));
        assert_eq!(date_text("2023-02-29", "%Y-%m-%d"), None);
        assert_eq!(date_text("05/01/2024 13:45", "%d/%m/%Y %H:%M").as_deref(), Some("2024-01-05T13:45:00.000Z"));
        assert_eq!(
            date_text("2024-01-05T13:45:00+0200", "%Y-%m-%dT%H:%M:%S%z").as_deref(),
            Some("2024-01-05T11:45:00.000Z")
        );
        assert_eq!(date_text("0000-01-01", "%Y-%m-%d"), None);
        assert_eq!(date_text("2024-01-05 trailing", "%Y-%m-%d"), None);
    }

    /// Dates as they were first read: as an instant with an offset, else without one, else as a date alone.
    fn reference_date(s: &str, format: &OwnedFormatItem) -> Option<String> {
        let at = OffsetDateTime::parse(s, format)
            .ok()
            .or_else(|| PrimitiveDateTime::parse(s, format).ok().map(PrimitiveDateTime::assume_utc));
        if let Some(at) = at {
            let utc = at.checked_to_offset(time::UtcOffset::UTC)?;
            return (1..=9999).contains(&utc.year()).then(|| format_timestamp(utc));
        }
        let date = Date::parse(s, format).ok()?;
        (1..=9999)
            .contains(&date.year())
            .then(|| format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()))
    }

    #[test]
    fn one_parse_reads_dates_as_three_did() {
        let formats = [
            "%Y-%m-%d",
            "%d/%m/%Y",
            "%d/%m/%Y %H:%M",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M:%S%z",
            "%Y-%m-%d %z",
            "%F %T",
            "%s",
            "%Y-%j",
            "%G-W%V-%u",
            "%I:%M %p %d.%m.%Y",
            "%H:%M",
            "%Y",
            "%c",
        ];
        let inputs = [
            "2024-02-29",
            "2023-02-29",
            "0000-01-01",
            "9999-12-31",
            "31/12/1990",
            "05/01/2024 13:45",
            "2025-02-01 08:30",
            "9999-12-31 23:59",
            "2024-01-05T13:45:00+0200",
            "0001-01-01T00:30:00+0100",
            "9999-12-31T23:30:00-0100",
            "2024-01-05 +0200",
            "2024-01-05 13:45:00",
            "1735689600",
            "-62135596801",
            "2024-060",
            "2024-W09-4",
            "01:45 PM 05.01.2024",
            "13:45",
            "2024",
            "Fri Jan  5 13:45:00 2024",
            "",
            "garbage",
        ];
        for format in formats {
            let compiled = strftime(format);
            for input in inputs {
                assert_eq!(date_text(input, format), reference_date(input, &compiled), "{input:?} as {format}");
            }
        }
    }

    /// The hand-read `%Y-%m-%d` gives what the `time` crate's parser gives, for the text it reads.
    #[test]
    fn iso_dates_read_by_hand_match_the_time_crate() {
        let format = strftime(ISO_DATE);
        let check = |s: &str| {
            if let Some(read) = parse_iso_date(s) {
                assert_eq!(read, parse_date(s, &format), "{s:?}");
            }
        };
        for year in [0, 1, 2, 999, 1000, 1582, 1900, 1970, 2000, 2023, 2024, 2100, 9998, 9999] {
            for month in 0..=13 {
                for day in 0..=32 {
                    check(&format!("{year:04}-{month:02}-{day:02}"));
                }
            }
        }
        let mut read_here = 0;
        for s in [
            "2024-02-29",
            "2023-02-29",
            "0000-01-01",
            "9999-12-31",
            "2024-1-05",
            "2024-01-5",
            "+2024-01-05",
            "-2024-01-05",
            "02024-01-05",
            "2024/01/05",
            "2024-01-05 ",
            " 2024-01-05",
            "2024-01-05T00:00",
            "",
            "2024-0a-05",
            "2024-01-0\u{665}",
            "٢٠٢٤-01-05",
            "2024-99-99",
        ] {
            check(s);
            read_here += usize::from(parse_iso_date(s).is_some());
            // Whatever path reads it, the trait's value is the one the `time` crate gives.
            let cell = typed(&Typed::Date(format.clone(), true), Cell::Text(s));
            let reference = parse_date(s.trim(), &format).ok_or(reason::BAD_DATE);
            assert_eq!(cell, reference, "{s:?}");
        }
        assert_eq!(read_here, 5);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        for _ in 0..100_000 {
            let bytes: Vec<u8> = (0..10)
                .map(|i| match rand::Rng::random_range(&mut rng, 0..20) {
                    0 => b'-',
                    1 => b'x',
                    _ if i == 4 || i == 7 => b'-',
                    _ => b'0' + rand::Rng::random_range(&mut rng, 0..10u8),
                })
                .collect();
            check(std::str::from_utf8(&bytes).unwrap());
        }
    }

    #[test]
    fn numbers_and_bools() {
        assert_eq!(parse_number("42"), Some(42.into()));
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX.into()));
        assert_eq!(parse_number("-1.5"), Number::from_f64(-1.5));
        assert_eq!(parse_number("1e3"), Number::from_f64(1000.0));
        for bad in ["NaN", "inf", "1,5", "", "0x10"] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("no"), Some(false));
        assert_eq!(parse_bool("2"), None);
    }

    #[test]
    fn mapping_checks() {
        let base = |columns: &str, event: &str| format!("format: csv\ncolumns: {columns}\nevent: {event}\n");
        let identify = "{ type: identify }";
        for (yaml, needle) in [
            (base("{ a: { type: string } }", identify), "at least one column"),
            (base("{ a: { identifier: user_id }, b: { identifier: user_id } }", identify), "at most one"),
            (base("{ a: { identifier: anonymous_id } }", identify), "column `a`: identifier"),
            (base("{ a: { identifier: device_id } }", identify), "column `a`: identifier"),
            (base("{ a: { identifier: \"ext:email\" } }", identify), "column `a`: identifier"),
            (base("{ a: { identifier: \"ext:*\" } }", identify), "column `a`: identifier"),
            (base("{ a: { identifier: email }, email: { type: string } }", identify), "as an identifier"),
            (
                base("{ a: { identifier: email }, b: { type: string }, c: { trait: b, type: bool } }", identify),
                "more than once",
            ),
            (base("{ a: { identifier: email }, d: { type: date } }", identify), "needs a `format`"),
            (base("{ a: { identifier: email }, d: { type: number, format: \"%Y\" } }", identify), "only date"),
            (base("{ a: { identifier: email }, d: { type: date, format: \"%Q\" } }", identify), "invalid date format"),
            (base("{ a: { identifier: email } }", "{ type: track }"), "exactly one"),
            (base("{ a: { identifier: email } }", "{ type: track, event_name: x, event_column: y }"), "exactly one"),
            (
                base("{ a: { identifier: email } }", "{ type: track, event_name: \" \" }"),
                "event_name must not be empty",
            ),
            (base("{ a: { identifier: email } }", "{ type: identify, timestamp_column: \"\" }"), "timestamp_column"),
            (base("{ \"\": { identifier: email } }", identify), "column names"),
            (format!("{}delimiter: \"|\"\n", base("{ a: { identifier: email } }", identify)), "delimiter must be"),
            (format!("{}default_country_code: \"01\"\n", base("{ a: { identifier: email } }", identify)), "country"),
            (
                "format: jsonl\ndelimiter: \";\"\ncolumns: { a: { identifier: email } }\nevent: { type: identify }\n"
                    .into(),
                "only to the csv format",
            ),
        ] {
            let err = refusal(&yaml);
            assert!(err.contains(needle), "{yaml}: {err}");
        }
        let ok = mapping(&format!("{}delimiter: \"\\t\"\n", base("{ a: { identifier: email } }", identify)));
        assert_eq!(ok.parse_options().delimiter, Some(b'\t'));
    }

    #[test]
    fn config_shape_is_strict() {
        for yaml in [
            "format: csv\ncolumns: {}\nevent: { type: identify }\nextra: 1\n",
            "format: csv\ncolumns: { a: { identifier: email, x: 1 } }\nevent: { type: identify }\n",
            "format: csv\ncolumns: { a: { type: string, typo: 1 } }\nevent: { type: identify }\n",
            "format: csv\ncolumns: { a: { identifier: email, type: string } }\nevent: { type: identify }\n",
            "format: csv\ncolumns: { a: { trait: x } }\nevent: { type: identify }\n",
            "format: csv\ncolumns: {}\nevent: { type: identify, event_name: x }\n",
            "format: csv\ncolumns: {}\nevent: { type: page }\n",
            "format: xlsx\ncolumns: {}\nevent: { type: identify }\n",
            "format: csv\ncolumns: { a: { identifier: \"ext:Bad Name\" } }\nevent: { type: identify }\n",
        ] {
            assert!(serde_yaml_ng::from_str::<ImportMapping>(yaml).is_err(), "{yaml}");
        }
        let m: ImportMapping = serde_yaml_ng::from_str(CRM).unwrap();
        let round: ImportMapping = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(round, m);
        let schema = serde_json::to_value(schemars::schema_for!(ImportMapping)).unwrap();
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}
