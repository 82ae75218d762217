//! A bounds-checking walk over an Avro datum, run before apache-avro decodes it.
//!
//! apache-avro trusts length prefixes up to a process-wide cap (512 MiB by
//! default, settable once per process through
//! `apache_avro::util::max_allocation_bytes`), so a few corrupt bytes can make
//! it allocate hundreds of MiB before it notices the input ran out. This walk
//! reads the datum with the writer schema without allocating and rejects any
//! length, count or index that cannot fit in the bytes that are left. Once it
//! passes, whatever apache-avro allocates is bounded by the message size.
//!
//! Stricter than Avro in one corner: an array or map may not hold more items
//! than there were bytes left where it started, which only matters for arrays
//! of zero-width items (`null`, empty records); no contract has those.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, UuidSchema};

/// Named types of a schema, by full name, to follow `Schema::Ref`.
pub(crate) type Names = HashMap<String, Schema>;

// deeper than any contract nests; stops recursive schemas from exhausting the stack
const MAX_DEPTH: usize = 32;

/// Collects the named types defined in `schema`.
pub(crate) fn collect_names(schema: &Schema, ns: Option<&str>, names: &mut Names) {
    match schema {
        Schema::Record(r) => {
            let full = r.name.fullname(ns);
            let inner = full.rsplit_once('.').map(|(n, _)| n.to_owned());
            names.insert(full, schema.clone());
            for field in &r.fields {
                collect_names(&field.schema, inner.as_deref(), names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(ns), schema.clone());
        }
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            names.insert(f.name.fullname(ns), schema.clone());
        }
        Schema::Decimal(d) => {
            if let InnerDecimalSchema::Fixed(f) = &d.inner {
                names.insert(f.name.fullname(ns), schema.clone());
            }
        }
        Schema::Array(a) => collect_names(&a.items, ns, names),
        Schema::Map(m) => collect_names(&m.types, ns, names),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, ns, names);
            }
        }
        _ => {}
    }
}

/// Reads a datum of `schema` from the front of `buf` and returns how many
/// bytes it took, or why it cannot be a valid datum.
pub(crate) fn datum_len(schema: &Schema, names: &Names, buf: &[u8]) -> Result<usize, String> {
    let mut cursor = Cursor { buf, pos: 0, names };
    cursor.skip(schema, None, 0)?;
    Ok(cursor.pos)
}

/// Reads the leading top-level `string` or `["null","string"]` fields named
/// in `wanted`, stopping after the last of them, so ids can be recovered from
/// a message whose later fields are corrupt. Fields not found stay `None`.
pub(crate) fn peek_strings<const N: usize>(
    schema: &Schema,
    names: &Names,
    buf: &[u8],
    wanted: [&str; N],
) -> Result<[Option<String>; N], String> {
    let Schema::Record(record) = schema else {
        return Err("writer schema is not a record".into());
    };
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    let last = record
        .fields
        .iter()
        .rposition(|f| wanted.contains(&f.name.as_str()));
    let Some(last) = last else {
        return Ok(found);
    };
    let ns = record.name.namespace();
    let mut cursor = Cursor { buf, pos: 0, names };
    for field in &record.fields[..=last] {
        let slot = wanted.iter().position(|w| *w == field.name);
        match (slot, &field.schema) {
            (Some(i), Schema::String) => found[i] = Some(cursor.string()?),
            (Some(i), Schema::Union(u))
                if matches!(u.variants(), [Schema::Null, Schema::String]) =>
            {
                if cursor.union_index(2)? == 1 {
                    found[i] = Some(cursor.string()?);
                }
            }
            _ => cursor.skip(&field.schema, ns, 0)?,
        }
    }
    Ok(found)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    names: &'a Names,
}

impl Cursor<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        if n > self.left() {
            return Err(format!(
                "{what} needs {n} bytes but only {} are left",
                self.left()
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// Zig-zag varint, as Avro writes `int` and `long`.
    fn long(&mut self) -> Result<i64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let &[byte] = self.take(1, "varint")? else {
                unreachable!("take(1) returns one byte")
            };
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn int(&mut self) -> Result<i32, String> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| format!("int out of range: {v}"))
    }

    /// A length prefix that must fit in what is left.
    fn len(&mut self, what: &str) -> Result<usize, String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("negative {what} length {n}"))?;
        if n > self.left() {
            return Err(format!(
                "{what} length {n} exceeds the {} bytes left",
                self.left()
            ));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len("string")?;
        let bytes = self.take(n, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".into())
    }

    fn union_index(&mut self, variants: usize) -> Result<usize, String> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < variants)
            .ok_or_else(|| format!("union index {i} out of range 0..{variants}"))
    }

    /// Array and map blocks: `count` items, or `-count` items preceded by
    /// their byte size, until a zero count.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        let budget = self.left();
        let mut total = 0usize;
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.len("block")?;
            }
            let count = usize::try_from(count.unsigned_abs())
                .map_err(|_| format!("block count {count} out of range"))?;
            total = total.saturating_add(count);
            if total > budget {
                return Err(format!(
                    "{total} items cannot fit in the {budget} bytes left"
                ));
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    fn skip(&mut self, schema: &Schema, ns: Option<&str>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        match schema {
            Schema::Null => {}
            Schema::Boolean => {
                let b = self.take(1, "boolean")?[0];
                if b > 1 {
                    return Err(format!("boolean byte {b}"));
                }
            }
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                self.int()?;
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => {
                self.long()?;
            }
            Schema::Float => {
                self.take(4, "float")?;
            }
            Schema::Double => {
                self.take(8, "double")?;
            }
            Schema::Bytes
            | Schema::String
            | Schema::BigDecimal
            | Schema::Uuid(UuidSchema::Bytes | UuidSchema::String) => {
                let n = self.len("bytes")?;
                self.take(n, "bytes")?;
            }
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => {
                    let n = self.len("decimal")?;
                    self.take(n, "decimal")?;
                }
                InnerDecimalSchema::Fixed(f) => {
                    self.take(f.size, "fixed")?;
                }
            },
            Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
                self.take(f.size, "fixed")?;
            }
            Schema::Enum(e) => {
                let i = self.int()?;
                if usize::try_from(i).map_or(true, |i| i >= e.symbols.len()) {
                    return Err(format!("enum index {i} out of range"));
                }
            }
            Schema::Union(u) => {
                let i = self.union_index(u.variants().len())?;
                self.skip(&u.variants()[i], ns, depth + 1)?;
            }
            Schema::Array(a) => self.blocks(|c| c.skip(&a.items, ns, depth + 1))?,
            Schema::Map(m) => self.blocks(|c| {
                let n = c.len("map key")?;
                c.take(n, "map key")?;
                c.skip(&m.types, ns, depth + 1)
            })?,
            Schema::Record(r) => {
                let full = r.name.fullname(ns);
                let inner = full.rsplit_once('.').map(|(n, _)| n);
                for field in &r.fields {
                    self.skip(&field.schema, inner, depth + 1)?;
                }
            }
            Schema::Ref { name } => {
                let names = self.names;
                let target = names
                    .get(&name.fullname(ns))
                    .ok_or_else(|| format!("unresolved reference {}", name.fullname(ns)))?;
                self.skip(target, ns, depth + 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    #[test]
    fn huge_length_prefix_is_rejected_without_allocating() {
        let s = schema(r#""bytes""#);
        // zig-zag of 500_000_000 as a varint
        let mut buf = Vec::new();
        let mut v = 500_000_000u64 << 1;
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
        let err = datum_len(&s, &Names::new(), &buf).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn array_count_is_bounded_by_input() {
        let s = schema(r#"{"type":"array","items":"null"}"#);
        // 1000 nulls claimed in a 3-byte message
        assert!(datum_len(&s, &Names::new(), &[0xd0, 0x0f, 0]).is_err());
        assert_eq!(datum_len(&s, &Names::new(), &[4, 0]), Ok(2));
    }

    #[test]
    fn references_are_followed() {
        let s = schema(
            r#"{"type":"record","name":"List","namespace":"t","fields":[
                {"name":"next","type":["null","List"]}]}"#,
        );
        let mut names = Names::new();
        collect_names(&s, None, &mut names);
        assert_eq!(datum_len(&s, &names, &[2, 2, 0]), Ok(3));
        // a self-referencing chain deeper than the cap is refused, not a stack overflow
        let deep = [vec![2u8; 10_000], vec![0]].concat();
        assert!(datum_len(&s, &names, &deep).unwrap_err().contains("deeper"));
    }
}
