//! The shipped JSON Schema (`schemas/message.schema.json`) and the daemon's parser accept exactly
//! the same bodies, so producers validating against the schema never send poison.

use profile_worker::pipeline::message::parse;
use serde_json::Value;

const LIMIT: usize = 65_536;

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("../schemas/message.schema.json"))
        .expect("schema is JSON");
    jsonschema::draft202012::meta::validate(&schema).expect("schema is valid draft 2020-12");
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

/// (body, valid?) — the corpus both sides must agree on.
const CORPUS: &[(&str, bool)] = &[
    // Valid: what producers send.
    (
        r#"{"job_id": "6f1c2d3e-0000-4000-8000-000000000001", "entity_type": "author", "entity_id": 5}"#,
        true,
    ),
    (
        r#"{"job_id": null, "entity_type": "publisher", "entity_id": 2}"#,
        true,
    ),
    (r#"{"entity_type": "binder", "entity_id": 7}"#, true),
    (
        r#"{"job_id": "6f1c2d3e-0000-4000-8000-000000000001", "entity_type": "author", "entity_id": 1, "owner_id": 3}"#,
        true,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 2147483647}"#,
        true,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 1, "force": true}"#,
        true,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 1, "force": false}"#,
        true,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 1, "force": null}"#,
        true,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 1, "extra": {"nested": [1, 2]}}"#,
        true,
    ),
    (
        r#"{"entity_id": 3, "entity_type": "binder", "job_id": "0b6f2d3e-aaaa-4bbb-8ccc-dddddddddddd"}"#,
        true,
    ),
    (r#"  {"entity_type":"author","entity_id":42}  "#, true),
    // Invalid: not an object.
    ("[]", false),
    (r#"["author", 5]"#, false),
    ("\"author:5\"", false),
    ("5", false),
    ("null", false),
    ("true", false),
    // Invalid: missing or ill-typed fields.
    ("{}", false),
    (r#"{"entity_id": 5}"#, false),
    (r#"{"entity_type": "author"}"#, false),
    (r#"{"entity_type": null, "entity_id": 5}"#, false),
    (r#"{"entity_type": 1, "entity_id": 5}"#, false),
    (r#"{"entity_type": "Author", "entity_id": 5}"#, false),
    (r#"{"entity_type": "editor", "entity_id": 5}"#, false),
    (r#"{"entity_type": "", "entity_id": 5}"#, false),
    (r#"{"entity_type": "author", "entity_id": "5"}"#, false),
    (r#"{"entity_type": "author", "entity_id": 5.5}"#, false),
    (r#"{"entity_type": "author", "entity_id": true}"#, false),
    (r#"{"entity_type": "author", "entity_id": null}"#, false),
    (r#"{"entity_type": "author", "entity_id": [5]}"#, false),
    (r#"{"entity_type": "author", "entity_id": 0}"#, false),
    (r#"{"entity_type": "author", "entity_id": -3}"#, false),
    (
        r#"{"entity_type": "author", "entity_id": 2147483648}"#,
        false,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 99999999999999999999}"#,
        false,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 5, "job_id": 12}"#,
        false,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 5, "job_id": {"id": "x"}}"#,
        false,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 5, "force": "true"}"#,
        false,
    ),
    // Invalid: a job id that is not the API's lowercase hyphenated UUID.
    (
        r#"{"job_id": "", "entity_type": "publisher", "entity_id": 10}"#,
        false,
    ),
    (
        r#"{"entity_id": 3, "entity_type": "binder", "job_id": "x"}"#,
        false,
    ),
    (
        r#"{"job_id": "prod-test-001", "entity_type": "author", "entity_id": 1}"#,
        false,
    ),
    (
        r#"{"job_id": "6F1C2D3E-0000-4000-8000-000000000001", "entity_type": "author", "entity_id": 1}"#,
        false,
    ),
    (
        r#"{"job_id": "6f1c2d3e000040008000000000000001", "entity_type": "author", "entity_id": 1}"#,
        false,
    ),
    (
        r#"{"job_id": "6f1c2d3e-0000-4000-8000-00000000000\u0000", "entity_type": "author", "entity_id": 1}"#,
        false,
    ),
    (
        r#"{"entity_type": "author", "entity_id": 5, "force": 1}"#,
        false,
    ),
];

#[test]
fn parser_and_schema_agree_on_the_corpus() {
    let schema = validator();
    assert!(CORPUS.len() >= 30);
    for (body, expected) in CORPUS {
        let by_parser = parse(body, LIMIT).is_ok();
        let instance: Value = serde_json::from_str(body).expect("corpus bodies are JSON");
        let by_schema = schema.is_valid(&instance);
        assert_eq!(
            by_parser,
            *expected,
            "parser on {body}: {:?}",
            parse(body, LIMIT)
        );
        assert_eq!(by_schema, *expected, "schema on {body}");
    }
}

#[test]
fn non_json_bodies_are_poison() {
    for body in [
        "",
        "entity_type=author&entity_id=5",
        "{\"entity_type\": \"author\",",
        "{'entity_type': 'author', 'entity_id': 5}",
    ] {
        assert!(serde_json::from_str::<Value>(body).is_err(), "{body}");
        let err = parse(body, LIMIT).unwrap_err();
        assert!(err.reason.starts_with("body is not JSON"), "{}", err.reason);
    }
}

#[test]
fn duplicate_keys_are_rejected_by_the_parser() {
    // JSON Schema sees the parsed object, in which the last value won; the daemon refuses the
    // ambiguity, as the schema's description tells producers.
    let body = r#"{"entity_type": "author", "entity_id": 5, "entity_id": 6}"#;
    let instance: Value = serde_json::from_str(body).unwrap();
    assert!(validator().is_valid(&instance));
    let err = parse(body, LIMIT).unwrap_err();
    assert!(err.reason.contains("more than once"), "{}", err.reason);
}

#[test]
fn size_limit_is_enforced_by_the_parser_only() {
    let body = format!(
        r#"{{"entity_type": "author", "entity_id": 5, "padding": "{}"}}"#,
        "x".repeat(LIMIT)
    );
    let instance: Value = serde_json::from_str(&body).unwrap();
    assert!(
        validator().is_valid(&instance),
        "the schema has no size limit"
    );
    let err = parse(&body, LIMIT).unwrap_err();
    assert!(err.reason.contains("over the limit"), "{}", err.reason);
}

#[test]
fn integral_floats_are_rejected_by_the_parser() {
    // JSON Schema's "integer" accepts 5.0 (a value with no fraction); the daemon insists on an
    // integer literal, as the schema's description tells producers.
    let body = r#"{"entity_type": "author", "entity_id": 5.0}"#;
    let instance: Value = serde_json::from_str(body).unwrap();
    assert!(
        validator().is_valid(&instance),
        "draft 2020-12 counts 5.0 as an integer"
    );
    let err = parse(body, LIMIT).unwrap_err();
    assert!(err.reason.contains("positive integer"), "{}", err.reason);
}
