//! Every shipped schema version, fingerprinted, and the encode/decode functions built on them.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::events::*;

/// The two marker bytes that open an Avro single-object encoded record.
const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// Event types, one schema family each. The name is the folder under `schemas/avro/` and the
/// value of the `bs-event-type` Kafka header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    BlobChunk,
    RunStarted,
    WorkunitsUpdated,
    RunEnded,
    ArtifactsUploaded,
    WorkunitList,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::BlobChunk,
        EventType::RunStarted,
        EventType::WorkunitsUpdated,
        EventType::RunEnded,
        EventType::ArtifactsUploaded,
        EventType::WorkunitList,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::BlobChunk => "blob_chunk",
            EventType::RunStarted => "run_started",
            EventType::WorkunitsUpdated => "workunits_updated",
            EventType::RunEnded => "run_ended",
            EventType::ArtifactsUploaded => "artifacts_uploaded",
            EventType::WorkunitList => "workunit_list",
        }
    }

    pub fn of(event: &Event) -> EventType {
        match event {
            Event::BlobChunk(_) => EventType::BlobChunk,
            Event::RunStarted(_) => EventType::RunStarted,
            Event::WorkunitsUpdated(_) => EventType::WorkunitsUpdated,
            Event::RunEnded(_) => EventType::RunEnded,
            Event::ArtifactsUploaded(_) => EventType::ArtifactsUploaded,
            Event::WorkunitList(_) => EventType::WorkunitList,
        }
    }
}

/// Every `.avsc` ever shipped, oldest version first per type. Never remove or edit a line
/// here once released: add a new version (see `schemas/README.md`).
const SHIPPED: &[(EventType, u32, &str)] = &[
    (EventType::BlobChunk, 1, include_str!("../avro/blob_chunk/v1.avsc")),
    (EventType::RunStarted, 1, include_str!("../avro/run_started/v1.avsc")),
    (EventType::WorkunitsUpdated, 1, include_str!("../avro/workunits_updated/v1.avsc")),
    (EventType::RunEnded, 1, include_str!("../avro/run_ended/v1.avsc")),
    (EventType::RunEnded, 2, include_str!("../avro/run_ended/v2.avsc")),
    (EventType::ArtifactsUploaded, 1, include_str!("../avro/artifacts_uploaded/v1.avsc")),
    (EventType::WorkunitList, 1, include_str!("../avro/workunit_list/v1.avsc")),
];

/// One parsed schema version.
pub struct SchemaVersion {
    pub event_type: EventType,
    pub version: u32,
    pub schema: Schema,
    /// Little-endian CRC-64-AVRO of the canonical form, as written in record headers.
    pub fingerprint: [u8; 8],
}

impl SchemaVersion {
    /// `run_ended/v2`: the value of the `bs-schema` header.
    pub fn label(&self) -> String {
        format!("{}/v{}", self.event_type.name(), self.version)
    }
}

pub struct Registry {
    versions: Vec<SchemaVersion>,
    by_fingerprint: HashMap<[u8; 8], usize>,
    current: HashMap<EventType, usize>,
}

impl Registry {
    fn load() -> Registry {
        let mut versions = Vec::new();
        let mut by_fingerprint = HashMap::new();
        let mut current = HashMap::new();
        for &(event_type, version, text) in SHIPPED {
            let schema = Schema::parse_str(text).unwrap_or_else(|e| {
                panic!("shipped schema {}/v{version} does not parse: {e}", event_type.name())
            });
            let bytes = schema.fingerprint::<Rabin>().bytes;
            let fingerprint: [u8; 8] = bytes.try_into().expect("Rabin fingerprints are 8 bytes");
            let index = versions.len();
            assert!(
                by_fingerprint.insert(fingerprint, index).is_none(),
                "two shipped schemas share a fingerprint ({}/v{version})",
                event_type.name()
            );
            current.insert(event_type, index); // SHIPPED is oldest first: the last one wins
            versions.push(SchemaVersion { event_type, version, schema, fingerprint });
        }
        Registry { versions, by_fingerprint, current }
    }

    /// The version writers use now for this event type.
    pub fn current(&self, event_type: EventType) -> &SchemaVersion {
        &self.versions[self.current[&event_type]]
    }

    /// Every version of one type, oldest first.
    pub fn versions(&self, event_type: EventType) -> impl Iterator<Item = &SchemaVersion> {
        self.versions.iter().filter(move |v| v.event_type == event_type)
    }

    pub fn all(&self) -> &[SchemaVersion] {
        &self.versions
    }

    pub fn by_fingerprint(&self, fingerprint: &[u8; 8]) -> Option<&SchemaVersion> {
        self.by_fingerprint.get(fingerprint).map(|&i| &self.versions[i])
    }
}

/// The process-wide registry, parsed on first use.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::load)
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode {event_type} with schema {schema}: {source}")]
    Avro { event_type: &'static str, schema: String, source: Box<apache_avro::Error> },
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a single-object encoded record at all (dead-letter material).
    #[error("not an Avro single-object record: {0}")]
    NotSingleObject(&'static str),
    /// A writer schema this build does not know: deploy the newer readers first. Never
    /// dead-letter such a record; stop the partition and alert.
    #[error(
        "unknown writer schema fingerprint {}: this reader is older than the writer; \
         upgrade the sinks before the gateway (schemas/README.md)",
        hex_fingerprint(.0)
    )]
    UnknownWriterSchema([u8; 8]),
    /// Known schema, but the datum does not decode (corrupt record; dead-letter material).
    #[error("record written with {schema} does not decode: {source}")]
    Malformed { schema: String, source: Box<apache_avro::Error> },
}

fn hex_fingerprint(f: &[u8; 8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// One writer per current schema, built once: building resolves every named type.
fn writer(event_type: EventType) -> &'static GenericDatumWriter<'static> {
    static WRITERS: OnceLock<HashMap<EventType, GenericDatumWriter<'static>>> = OnceLock::new();
    &WRITERS.get_or_init(|| {
        EventType::ALL
            .iter()
            .map(|&t| {
                let schema = &registry().current(t).schema;
                let writer = GenericDatumWriter::builder(schema).build().expect("shipped schemas resolve");
                (t, writer)
            })
            .collect()
    })[&event_type]
}

fn encode_with<T: Serialize>(event_type: EventType, value: &T) -> Result<Vec<u8>, EncodeError> {
    let version = registry().current(event_type);
    let err = |source| EncodeError::Avro {
        event_type: event_type.name(),
        schema: version.label(),
        source: Box::new(source),
    };
    let datum = writer(event_type).write_ser_to_vec(value).map_err(err)?;
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.fingerprint);
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Encode an event with the current schema of its type, single-object framed.
pub fn encode(event: &Event) -> Result<Vec<u8>, EncodeError> {
    let event_type = EventType::of(event);
    match event {
        Event::BlobChunk(e) => encode_with(event_type, e),
        Event::RunStarted(e) => encode_with(event_type, e),
        Event::WorkunitsUpdated(e) => encode_with(event_type, e),
        Event::RunEnded(e) => encode_with(event_type, e),
        Event::ArtifactsUploaded(e) => encode_with(event_type, e),
        Event::WorkunitList(e) => encode_with(event_type, e),
    }
}

fn decode_as<T: DeserializeOwned>(
    writer: &SchemaVersion,
    mut datum: &[u8],
) -> Result<T, DecodeError> {
    let reader_schema = &registry().current(writer.event_type).schema;
    let malformed = |source| DecodeError::Malformed { schema: writer.label(), source: Box::new(source) };
    let reader = GenericDatumReader::builder(&writer.schema)
        .reader_schema(reader_schema)
        .build()
        .map_err(malformed)?;
    let value = reader.read_value(&mut datum).map_err(malformed)?;
    if !datum.is_empty() {
        return Err(DecodeError::NotSingleObject("trailing bytes after the datum"));
    }
    apache_avro::from_value::<T>(&value).map_err(malformed)
}

/// Decode a single-object record written with any shipped version of any schema, resolved
/// to the current version of its type.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::NotSingleObject("shorter than the 10-byte header"));
    }
    if bytes[..2] != MAGIC {
        return Err(DecodeError::NotSingleObject("missing the C3 01 marker"));
    }
    let fingerprint: [u8; 8] = bytes[2..HEADER_LEN].try_into().expect("8 bytes");
    let writer = registry()
        .by_fingerprint(&fingerprint)
        .ok_or(DecodeError::UnknownWriterSchema(fingerprint))?;
    let datum = &bytes[HEADER_LEN..];
    Ok(match writer.event_type {
        EventType::BlobChunk => Event::BlobChunk(decode_as(writer, datum)?),
        EventType::RunStarted => Event::RunStarted(decode_as(writer, datum)?),
        EventType::WorkunitsUpdated => Event::WorkunitsUpdated(decode_as(writer, datum)?),
        EventType::RunEnded => Event::RunEnded(decode_as(writer, datum)?),
        EventType::ArtifactsUploaded => Event::ArtifactsUploaded(decode_as(writer, datum)?),
        EventType::WorkunitList => Event::WorkunitList(decode_as(writer, datum)?),
    })
}

#[cfg(test)]
mod tests;
