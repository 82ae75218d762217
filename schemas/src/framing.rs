//! Avro single-object encoding: `C3 01`, the writer schema's 8-byte
//! little-endian fingerprint, then the Avro binary datum.
//!
//! The header makes every message self-describing without a schema-registry
//! service: a consumer looks the fingerprint up in its [`Registry`](crate::Registry).

use crate::error::SchemaError;
use crate::fingerprint::Fingerprint;

/// The two marker bytes that open every single-object encoded message.
pub const MARKER: [u8; 2] = [0xC3, 0x01];

/// Marker plus fingerprint.
pub const HEADER_LEN: usize = 10;

/// Writes the header for `fingerprint` into `out`.
pub fn write_header(fingerprint: Fingerprint, out: &mut Vec<u8>) {
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&fingerprint.to_le_bytes());
}

/// Splits a message into the writer fingerprint and the datum bytes.
pub fn split(message: &[u8]) -> Result<(Fingerprint, &[u8]), SchemaError> {
    let Some((header, datum)) = message.split_first_chunk::<HEADER_LEN>() else {
        return Err(SchemaError::BadFraming {
            reason: format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte single-object header",
                message.len()
            ),
        });
    };
    if header[..2] != MARKER {
        return Err(SchemaError::BadFraming {
            reason: format!(
                "marker is {:02x} {:02x}, expected c3 01",
                header[0], header[1]
            ),
        });
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&header[2..]);
    Ok((Fingerprint::from_le_bytes(fp), datum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut out = Vec::new();
        write_header(Fingerprint(0x0102_0304_0506_0708), &mut out);
        assert_eq!(out, [0xC3, 0x01, 8, 7, 6, 5, 4, 3, 2, 1]);
        out.push(42);
        let (fp, datum) = split(&out).unwrap();
        assert_eq!(fp, Fingerprint(0x0102_0304_0506_0708));
        assert_eq!(datum, [42]);
    }

    #[test]
    fn short_or_unmarked_messages_are_bad_framing() {
        for bad in [
            &[][..],
            &[0xC3, 0x01, 0, 0],
            &[0u8; 10],
            &[0xC3, 0x00, 1, 2, 3, 4, 5, 6, 7, 8],
        ] {
            assert_eq!(split(bad).unwrap_err().code(), "bad_framing");
        }
    }
}
