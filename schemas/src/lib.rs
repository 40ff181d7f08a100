//! The Avro schemas of every buildstats event, their Rust types, and how a record carries
//! its writer schema.
//!
//! Every Kafka record value is Avro [single-object encoding]: the two bytes `C3 01`, the
//! 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's canonical form,
//! then the datum. A reader looks the fingerprint up in [`registry()`], which knows every
//! version of every schema that ever shipped (the `.avsc` files under `schemas/avro/`,
//! embedded at compile time), and resolves the datum against the current version of that
//! event type. A fingerprint it does not know is [`DecodeError::UnknownWriterSchema`]: the
//! caller must stop that partition and alert, never dead-letter (see `schemas/README.md`).
//!
//! [single-object encoding]: https://avro.apache.org/docs/1.11.1/specification/#single-object-encoding

mod events;
mod registry;

pub use events::*;
pub use registry::{
    decode, encode, registry, DecodeError, EncodeError, EventType, Registry, SchemaVersion,
};
