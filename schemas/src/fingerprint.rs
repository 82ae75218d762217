//! Parsing Canonical Form and CRC-64-AVRO (Rabin) fingerprints.
//!
//! We compute the canonical form ourselves instead of using
//! `Schema::canonical_form` because apache-avro 0.22 departs from the spec in
//! two ways: it keeps a primitive that carried a logical type as
//! `{"type":"long"}` where the spec (and the Java reference,
//! `SchemaNormalization`) reduce it to `"long"`, and it keeps a field's
//! `"order"`, which the spec strips. Every contract has `timestamp-millis`
//! fields, so apache-avro's fingerprints would not match what a Java producer
//! puts in the single-object header (and apache-avro's own
//! `SpecificSingleObjectWriter` header would not match ours).

use std::collections::HashSet;
use std::fmt;

use apache_avro::Schema;
use apache_avro::schema::{FixedSchema, InnerDecimalSchema, Name, UuidSchema};

/// The 64-bit CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing
/// Canonical Form.
///
/// On the wire it travels as 8 little-endian bytes; `Display` prints the
/// number as 16 hex digits (most significant first), like the Java `long`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// Fingerprint of a parsed schema.
    pub fn of(schema: &Schema) -> Self {
        Self(crc64_avro(parsing_canonical_form(schema).as_bytes()))
    }

    /// The 8 bytes that go into a single-object header.
    pub fn to_le_bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }

    /// Reads the 8 header bytes back.
    pub fn from_le_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_le_bytes(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

// the Rabin polynomial's "empty" value from the Avro spec
const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// CRC-64-AVRO of raw bytes, as defined in the Avro specification.
pub fn crc64_avro(data: &[u8]) -> u64 {
    data.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

/// Parsing Canonical Form of a schema, per the Avro specification: only
/// `name`, `type`, `fields`, `symbols`, `items`, `values` and `size` survive,
/// names are fully qualified, logical types reduce to their underlying type,
/// and a named type is spelled out only the first time it appears.
pub fn parsing_canonical_form(schema: &Schema) -> String {
    let mut out = String::new();
    let mut defined = HashSet::new();
    pcf(schema, None, &mut defined, &mut out);
    out
}

fn pcf(schema: &Schema, ns: Option<&str>, defined: &mut HashSet<String>, out: &mut String) {
    let primitive = match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int | Schema::Date | Schema::TimeMillis => "int",
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => "bytes",
        Schema::String | Schema::Uuid(UuidSchema::String) => "string",
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => "bytes",
            InnerDecimalSchema::Fixed(fixed) => return pcf_fixed(fixed, ns, defined, out),
        },
        Schema::Uuid(UuidSchema::Fixed(fixed)) | Schema::Fixed(fixed) | Schema::Duration(fixed) => {
            return pcf_fixed(fixed, ns, defined, out);
        }
        Schema::Ref { name } => {
            quoted(&name.fullname(ns), out);
            return;
        }
        Schema::Array(array) => {
            out.push_str(r#"{"type":"array","items":"#);
            pcf(&array.items, ns, defined, out);
            out.push('}');
            return;
        }
        Schema::Map(map) => {
            out.push_str(r#"{"type":"map","values":"#);
            pcf(&map.types, ns, defined, out);
            out.push('}');
            return;
        }
        Schema::Union(union) => {
            out.push('[');
            for (i, variant) in union.variants().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pcf(variant, ns, defined, out);
            }
            out.push(']');
            return;
        }
        Schema::Enum(e) => {
            if open_named(&e.name, ns, "enum", defined, out).is_some() {
                out.push_str(r#","symbols":["#);
                for (i, symbol) in e.symbols.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quoted(symbol, out);
                }
                out.push_str("]}");
            }
            return;
        }
        Schema::Record(record) => {
            if let Some(full) = open_named(&record.name, ns, "record", defined, out) {
                // nested names without a namespace inherit the record's
                let inner_ns = full.rsplit_once('.').map(|(n, _)| n.to_owned());
                out.push_str(r#","fields":["#);
                for (i, field) in record.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(r#"{"name":"#);
                    quoted(&field.name, out);
                    out.push_str(r#","type":"#);
                    pcf(&field.schema, inner_ns.as_deref(), defined, out);
                    out.push('}');
                }
                out.push_str("]}");
            }
            return;
        }
    };
    quoted(primitive, out);
}

fn pcf_fixed(
    fixed: &FixedSchema,
    ns: Option<&str>,
    defined: &mut HashSet<String>,
    out: &mut String,
) {
    if open_named(&fixed.name, ns, "fixed", defined, out).is_some() {
        out.push_str(&format!(r#","size":{}}}"#, fixed.size));
    }
}

/// Writes `{"name":"<full>","type":"<kind>"` for a first definition and
/// returns the full name; for a name already defined writes only `"<full>"`
/// and returns `None`.
fn open_named(
    name: &Name,
    ns: Option<&str>,
    kind: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Option<String> {
    let full = name.fullname(ns);
    if !defined.insert(full.clone()) {
        quoted(&full, out);
        return None;
    }
    out.push_str(r#"{"name":"#);
    quoted(&full, out);
    out.push_str(r#","type":"#);
    quoted(kind, out);
    Some(full)
}

// avro names and symbols are [A-Za-z0-9_.] only, so quoting needs no escaping
fn quoted(s: &str, out: &mut String) {
    out.push('"');
    out.push_str(s);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_driven_crc_matches_bitwise_definition() {
        // the spec's reference algorithm, one bit at a time
        fn slow(data: &[u8]) -> u64 {
            let mut fp = EMPTY;
            for &b in data {
                fp ^= u64::from(b);
                for _ in 0..8 {
                    fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
                }
            }
            fp
        }
        for input in [&b""[..], b"\"int\"", b"timbre", &[0xff; 33]] {
            assert_eq!(crc64_avro(input), slow(input));
        }
    }
}
