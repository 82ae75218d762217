//! Fingerprints: the spec's test vectors, agreement with apache-avro, and the
//! one place we deliberately differ from it (logical types).

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use timbre_schemas::contracts::avsc;
use timbre_schemas::fingerprint::{crc64_avro, parsing_canonical_form};
use timbre_schemas::{Fingerprint, RecordKind, Registry};

fn parse(json: &str) -> Schema {
    Schema::parse_str(json).unwrap()
}

fn apache_fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    u64::from_le_bytes(bytes.try_into().unwrap())
}

/// Inputs, canonical forms and fingerprints from the Avro project's
/// `share/test/data/schema-tests.txt` (cross-checked there against Java).
#[test]
fn spec_test_vectors() {
    let cases: &[(&str, &str, i64)] = &[
        (r#""null""#, r#""null""#, 7195948357588979594),
        (
            r#"{"type":"boolean"}"#,
            r#""boolean""#,
            -6970731678124411036,
        ),
        (r#""int""#, r#""int""#, 8247732601305521295),
        (r#"{"type":"long"}"#, r#""long""#, -3434872931120570953),
        (r#""string""#, r#""string""#, -8142146995180207161),
        (
            r#"[ "int" , {"type":"boolean"} ]"#,
            r#"["int","boolean"]"#,
            5392556393470105090,
        ),
        (
            r#"{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}"#,
            r#"{"name":"x.y.foo","type":"record","fields":[]}"#,
            5916914534497305771,
        ),
        (
            r#"{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}"#,
            r#"{"name":"a.b.foo","type":"record","fields":[]}"#,
            -4616218487480524110,
        ),
        (
            r#"{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":true},
                {"order":"descending","name":"f2","doc":"Hello","type":"int"}],
                "type":"record", "name":"foo"}"#,
            r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}"#,
            -4860222112080293046,
        ),
        (
            r#"{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}"#,
            r#"{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}"#,
            -4448647247586288245,
        ),
        (
            r#"{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}"#,
            r#"{"name":"x.y.z.foo","type":"fixed","size":32}"#,
            -3064184465700546786,
        ),
        (
            r#"{ "items":{"type":"null"}, "type":"array"}"#,
            r#"{"type":"array","items":"null"}"#,
            -589620603366471059,
        ),
        (
            r#"{ "values":"string", "type":"map"}"#,
            r#"{"type":"map","values":"string"}"#,
            -8732877298790414990,
        ),
        (
            r#"{"name":"PigValue","type":"record",
                "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}"#,
            r#"{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}"#,
            -1759257747318642341,
        ),
    ];
    for &(input, canonical, fingerprint) in cases {
        let schema = parse(input);
        assert_eq!(parsing_canonical_form(&schema), canonical, "{input}");
        let ours = Fingerprint::of(&schema);
        assert_eq!(ours.0, fingerprint as u64, "{input}");
        assert_eq!(crc64_avro(canonical.as_bytes()), fingerprint as u64);
        // apache-avro 0.22 keeps a field's "order" in the canonical form
        // (the spec strips it); everywhere else it must agree with us
        if !input.contains(r#""order""#) {
            assert_eq!(apache_fingerprint(&schema), ours.0, "{input}");
        }
    }
    // the spec's "int" example, in hex
    assert_eq!(
        Fingerprint::of(&parse(r#""int""#)).to_string(),
        "7275d51a3f395c8f"
    );
}

/// apache-avro 0.22 writes a logical-typed primitive as `{"type":"long"}` in
/// the canonical form; the spec and Java reduce it to `"long"`. Ours follows
/// the spec, and otherwise agrees with apache-avro character for character on
/// every contract (none uses "order", the other divergence).
#[test]
fn canonical_form_matches_apache_avro_except_logical_types() {
    let ts = parse(r#"{"type":"long","logicalType":"timestamp-millis"}"#);
    assert_eq!(parsing_canonical_form(&ts), r#""long""#);
    assert_eq!(Fingerprint::of(&ts), Fingerprint::of(&parse(r#""long""#)));

    let all = avsc::CURRENT.iter().chain(avsc::HISTORY.iter());
    for json in all {
        let schema = parse(json);
        let apache = schema
            .canonical_form()
            .replace(r#"{"type":"long"}"#, r#""long""#);
        let ours = parsing_canonical_form(&schema);
        assert_eq!(ours, apache);
        assert_eq!(crc64_avro(ours.as_bytes()), Fingerprint::of(&schema).0);
        for stripped in [
            r#""logicalType""#,
            r#""doc""#,
            r#""default""#,
            r#""version""#,
        ] {
            assert!(!ours.contains(stripped), "{stripped} in {ours}");
        }
    }
}

/// Docs, defaults and the `"version"` attribute are not part of the
/// fingerprint, so improving documentation never changes the wire.
#[test]
fn documentation_does_not_change_fingerprints() {
    let schema = parse(avsc::CONSENT_CHANGED);
    let edited =
        avsc::CONSENT_CHANGED.replace("Purpose the consent covers", "What the consent is for");
    assert_ne!(edited, avsc::CONSENT_CHANGED);
    assert_eq!(Fingerprint::of(&schema), Fingerprint::of(&parse(&edited)));
}

#[test]
fn every_schema_has_a_distinct_fingerprint() {
    let registry = Registry::new();
    let writers = registry.writers();
    assert_eq!(writers.len(), avsc::CURRENT.len() + avsc::HISTORY.len());
    let mut fps: Vec<_> = writers.iter().map(|w| w.fingerprint).collect();
    fps.sort();
    fps.dedup();
    assert_eq!(fps.len(), writers.len());
    for kind in RecordKind::ALL {
        let fp = registry.current_fingerprint(kind);
        assert_eq!(fp, Fingerprint::of(&parse(kind.current_schema())));
    }
}
