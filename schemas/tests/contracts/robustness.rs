//! Arbitrary bytes never panic and never make the decoder allocate more than
//! the message holds; every failure carries one of the decode codes.

use crate::common;

use timbre_schemas::{
    DeadLetter, Decision, EnrollmentRequested, Fingerprint, RecordKind, Registry, SchemaError,
    framing,
};

/// xorshift64*: deterministic, dependency-free noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn samples(registry: &Registry) -> Vec<Vec<u8>> {
    vec![
        registry.encode(&common::enrollment()).unwrap(),
        registry.encode(&common::verification()).unwrap(),
        registry.encode(&common::consent()).unwrap(),
        registry.encode(&common::profile()).unwrap(),
        registry.encode(&common::rescore()).unwrap(),
        registry.encode(&common::decision()).unwrap(),
        registry.encode(&common::error_decision()).unwrap(),
        registry.encode(&common::dead_letter()).unwrap(),
    ]
}

/// Runs every decode entry point; they may succeed, but must not panic, and
/// must fail only with a decode code.
fn poke(registry: &Registry, message: &[u8]) -> Vec<Result<(), SchemaError>> {
    let results = vec![
        registry.decode_request(message).map(drop),
        registry.decode::<Decision>(message).map(drop),
        registry.decode::<DeadLetter>(message).map(drop),
        registry.decode::<EnrollmentRequested>(message).map(drop),
        registry.peek_envelope(message).map(drop),
    ];
    for r in &results {
        if let Err(e) = r {
            assert!(common::DECODE_CODES.contains(&e.code().as_str()), "{e}");
        }
    }
    results
}

#[test]
fn random_bytes() {
    let registry = Registry::new();
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..2_000 {
        let n = rng.below(200);
        let message = rng.bytes(n);
        for r in poke(&registry, &message) {
            assert!(r.is_err(), "random bytes decoded: {message:02x?}");
        }
    }
}

#[test]
fn random_datums_behind_valid_headers() {
    let registry = Registry::new();
    let fingerprints: Vec<Fingerprint> = registry.writers().iter().map(|w| w.fingerprint).collect();
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..20_000 {
        let mut message = Vec::new();
        framing::write_header(fingerprints[rng.below(fingerprints.len())], &mut message);
        let n = rng.below(300);
        message.extend(rng.bytes(n));
        poke(&registry, &message);
    }
}

#[test]
fn every_truncation_fails() {
    let registry = Registry::new();
    for sample in samples(&registry) {
        for len in 0..sample.len() {
            let cut = &sample[..len];
            let err = registry.decode_request(cut).err();
            let err = err.or_else(|| registry.decode::<Decision>(cut).err());
            assert!(err.is_some(), "truncated to {len} bytes still decodes");
            poke(&registry, cut);
        }
        // and one byte too many is not silently ignored
        let mut longer = sample.clone();
        longer.push(0);
        for r in poke(&registry, &longer).into_iter().take(4) {
            if let Err(e) = r {
                assert!(e.code() == "bad_avro" || e.code() == "wrong_record", "{e}");
            }
        }
    }
}

#[test]
fn every_bit_flip() {
    let registry = Registry::new();
    for sample in samples(&registry) {
        for bit in 0..sample.len() * 8 {
            let mut flipped = sample.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let results = poke(&registry, &flipped);
            let expected = match bit / 8 {
                0 | 1 => Some("bad_framing"),
                2..=9 => Some("unknown_schema"),
                _ => None,
            };
            if let Some(code) = expected {
                for r in results {
                    assert_eq!(r.unwrap_err().code(), code, "bit {bit}");
                }
            }
        }
    }
}

#[test]
fn absurd_lengths_fail_fast_without_allocating() {
    let registry = Registry::new();
    let fp = registry.current_fingerprint(RecordKind::EnrollmentRequested);
    // request_id claims 2^40 bytes, then the bytes field claims ~i64::MAX / 2
    for length in [1u64 << 40, 500_000_000, u64::MAX >> 2] {
        let mut message = Vec::new();
        framing::write_header(fp, &mut message);
        let mut zigzag = length << 1;
        while zigzag >= 0x80 {
            message.push((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        message.push(zigzag as u8);
        message.extend_from_slice(b"short");
        let err = registry
            .decode::<EnrollmentRequested>(&message)
            .unwrap_err();
        assert_eq!(err.code(), "bad_avro");
        // our bounds walk caught it, not apache-avro's allocation cap
        assert!(err.to_string().contains("exceeds"), "{err}");
        assert_eq!(
            registry.peek_envelope(&message).unwrap_err().code(),
            "bad_avro"
        );
    }

    // a huge array count in Decision.reasons
    let mut decision = common::decision();
    decision.reasons = vec!["r".into()];
    let bytes = registry.encode(&decision).unwrap();
    // reasons is encoded as count 1 (0x02), len 1 (0x02), 'r', end (0x00)
    let at = bytes
        .windows(4)
        .position(|w| w == [0x02, 0x02, b'r', 0x00])
        .unwrap();
    let mut evil = bytes[..at].to_vec();
    evil.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // count 2^31 - 1
    evil.extend_from_slice(&bytes[at + 1..]);
    let err = registry.decode::<Decision>(&evil).unwrap_err();
    assert_eq!(err.code(), "bad_avro");
    assert!(err.to_string().contains("cannot fit"), "{err}");
}

#[test]
fn invalid_utf8_and_bad_indexes_are_bad_avro() {
    let registry = Registry::new();
    let bytes = registry.encode(&common::profile()).unwrap();

    // request_id "pro-0001" -> invalid UTF-8
    let mut bad_utf8 = bytes.clone();
    let at = bad_utf8.windows(3).position(|w| w == b"pro").unwrap();
    bad_utf8[at] = 0xff;
    assert_eq!(
        registry.decode_request(&bad_utf8).unwrap_err().code(),
        "bad_avro"
    );

    // command GREYLIST_ADD (index 3, zig-zag 0x06) -> index 9
    let mut bad_enum = bytes.clone();
    let at = bad_enum.windows(2).position(|w| w == [0x06, 0x02]).unwrap();
    bad_enum[at] = 18;
    assert_eq!(
        registry.decode_request(&bad_enum).unwrap_err().code(),
        "bad_avro"
    );
}
