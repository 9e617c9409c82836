//! Hostile message bodies through the real binary: every one lands in the dead-letter queue as
//! poison with its reason before any Bedrock call, the daemon keeps serving (a valid message
//! after them is generated) and its resident memory stays flat.

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::types::Message as SqsMessage;
use profile_worker::model::EntityRef;
use profile_worker::pipeline::message::Message;
use profile_worker::queue::MAX_MESSAGE_BYTES;
use profile_worker::store::ProfileStore;
use support::bedrock::FakeBedrock;
use support::daemon::{Daemon, Stack};
use support::sqs::eventually;

const HANG_GUARD: Duration = Duration::from_secs(240);
const JOB: &str = "6f1c2d3e-0000-4000-8000-000000000001";
/// Growth of the daemon's resident set tolerated across all the bodies: each is at most
/// 256 KiB, so a leak of even one body per message, or a parser that builds the deep nests,
/// would show; allocator noise and a first Bedrock connection do not come near it.
const RSS_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

/// A body for `entity` (a real one with books, so anything that slipped through the parser
/// would call the fake Bedrock) with `fields` spliced in after `{`.
fn around(entity: EntityRef, fields: &str) -> String {
    format!(
        r#"{{{fields}"entity_type": "{}", "entity_id": {}}}"#,
        entity.entity_type, entity.id
    )
}

fn hostile(e: EntityRef) -> Vec<(&'static str, String)> {
    let id = e.id;
    let t = e.entity_type.as_str();
    let valid = around(e, "");
    let nest = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let mut bodies: Vec<(&'static str, String)> = vec![
        // Nesting: beyond the parser's recursion limit, alone and inside a valid message.
        ("nested arrays 30000 deep", nest(30_000)),
        (
            "nested objects 5000 deep",
            format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000)),
        ),
        (
            "a deep nest under an ignored key",
            around(e, &format!(r#""x": {}, "#, nest(20_000))),
        ),
        // Size.
        (
            "256 KiB less 2 KiB",
            around(
                e,
                &format!(r#""pad": "{}", "#, "x".repeat(MAX_MESSAGE_BYTES - 2048)),
            ),
        ),
        // Encodings.
        ("a byte-order mark", format!("\u{feff}{valid}")),
        (
            "a BOM escaped inside the type",
            valid.replace(t, &format!("\\ufeff{t}")),
        ),
        (
            "NUL escaped in the type",
            valid.replace(t, &format!("{t}\\u0000")),
        ),
        (
            "NUL escaped in a key",
            valid.replace("entity_type", "entity_type\\u0000"),
        ),
        ("NUL escaped as the whole type", valid.replace(t, "\\u0000")),
        (
            "a lone leading surrogate in the type",
            valid.replace(t, "\\ud800"),
        ),
        (
            "a lone trailing surrogate in the type",
            valid.replace(t, "\\udc00"),
        ),
        (
            "reversed surrogates in the type",
            valid.replace(t, "\\udc00\\ud800"),
        ),
        (
            "a lone surrogate under an ignored key",
            around(e, r#""note": "\ud800", "#),
        ),
        ("a lone surrogate in a key", around(e, r#""\udbff": 1, "#)),
        ("invalid escape", valid.replace(t, "\\x41")),
        // Look-alike letters.
        (
            "Cyrillic a in the type",
            valid.replace("author", "\u{430}uthor"),
        ),
        (
            "Greek omicron in the type",
            valid.replace("author", "auth\u{3bf}r"),
        ),
        (
            "fullwidth type",
            valid.replace("author", "\u{ff41}\u{ff55}\u{ff54}\u{ff48}\u{ff4f}\u{ff52}"),
        ),
        (
            "zero-width joiner in the type",
            valid.replace("author", "author\u{200d}"),
        ),
        ("capitalised type", valid.replace("author", "Author")),
        (
            "Cyrillic y in the key",
            valid.replace("entity_type", "entit\u{443}_type"),
        ),
        (
            "Cyrillic e in the id key",
            valid.replace("entity_id", "\u{435}ntity_id"),
        ),
        (
            "fullwidth digits as the id",
            valid.replace(&format!(": {id}}}"), ": \"\u{ff15}\"}"),
        ),
        (
            "Arabic-Indic digits as the id",
            valid.replace(&format!(": {id}}}"), ": \"\u{665}\"}"),
        ),
        // Ids.
        (
            "id just above i32",
            valid.replace(&format!(": {id}}}"), ": 2147483648}"),
        ),
        (
            "id above i64",
            valid.replace(&format!(": {id}}}"), ": 9223372036854775808}"),
        ),
        (
            "id of 30 digits",
            valid.replace(&format!(": {id}}}"), ": 999999999999999999999999999999}"),
        ),
        ("id 1e400", valid.replace(&format!(": {id}}}"), ": 1e400}")),
        ("id 1e3", valid.replace(&format!(": {id}}}"), ": 1e3}")),
        (
            "id with a fraction",
            valid.replace(&format!(": {id}}}"), &format!(": {id}.5}}")),
        ),
        (
            "integral float id",
            valid.replace(&format!(": {id}}}"), &format!(": {id}.0}}")),
        ),
        (
            "negative id",
            valid.replace(&format!(": {id}}}"), &format!(": -{id}}}")),
        ),
        (
            "minus zero id",
            valid.replace(&format!(": {id}}}"), ": -0}"),
        ),
        ("NaN id", valid.replace(&format!(": {id}}}"), ": NaN}")),
        (
            "Infinity id",
            valid.replace(&format!(": {id}}}"), ": Infinity}"),
        ),
        ("hex id", valid.replace(&format!(": {id}}}"), ": 0x10}")),
        (
            "id as a string",
            valid.replace(&format!(": {id}}}"), &format!(": \"{id}\"}}")),
        ),
        // Duplicate keys: parsers disagree on which value wins.
        ("entity_id twice", around(e, r#""entity_id": 999999, "#)),
        (
            "entity_type twice",
            around(e, r#""entity_type": "binder", "#),
        ),
        (
            "job_id twice",
            around(e, &format!(r#""job_id": null, "job_id": "{JOB}", "#)),
        ),
        (
            "force twice",
            around(e, r#""force": false, "force": true, "#),
        ),
        // Job ids that are no job's id.
        (
            "a job id of 40000 characters",
            around(e, &format!(r#""job_id": "{}", "#, "a".repeat(40_000))),
        ),
        (
            "a job id with NUL inside",
            around(
                e,
                r#""job_id": "6f1c2d3e-0000-4000-8000-00000000\u00001", "#,
            ),
        ),
        (
            "a job id that is not a uuid",
            around(e, r#""job_id": "prod-test-001", "#),
        ),
        ("an empty job id", around(e, r#""job_id": "", "#)),
        (
            "an upper-case uuid",
            around(e, &format!(r#""job_id": "{}", "#, JOB.to_uppercase())),
        ),
        (
            "a braced uuid",
            around(e, &format!(r#""job_id": "{{{JOB}}}", "#)),
        ),
        (
            "a uuid without hyphens",
            around(e, &format!(r#""job_id": "{}", "#, JOB.replace('-', ""))),
        ),
        (
            "a urn uuid",
            around(e, &format!(r#""job_id": "urn:uuid:{JOB}", "#)),
        ),
        (
            "a uuid with a trailing space",
            around(e, &format!(r#""job_id": "{JOB} ", "#)),
        ),
        (
            "a uuid with Cyrillic a",
            around(
                e,
                &format!(r#""job_id": "{}", "#, JOB.replace('f', "\u{430}")),
            ),
        ),
        ("a job id as a number", around(e, r#""job_id": 7, "#)),
        (
            "a job id as a list",
            around(e, &format!(r#""job_id": ["{JOB}"], "#)),
        ),
        // Not one JSON object.
        ("whitespace", " \n\t ".into()),
        ("null", "null".into()),
        ("a list", format!("[{valid}]")),
        ("a string", format!("{:?}", valid)),
        ("truncated", valid[..valid.len() - 3].to_string()),
        ("trailing garbage", format!("{valid} x")),
        ("two objects", format!("{valid}{valid}")),
        ("a comment", format!("// hi\n{valid}")),
        ("single quotes", valid.replace('"', "'")),
        ("a force that is a string", around(e, r#""force": "yes", "#)),
        (
            "a type that is an object",
            valid.replace(&format!("\"{t}\""), r#"{"a": 1}"#),
        ),
    ];
    // At the very limit: the copy cannot carry attributes beside the body (see below).
    let limit = around(e, r#""pad": "", "#);
    let pad = MAX_MESSAGE_BYTES - limit.len();
    bodies.push((
        "exactly 256 KiB",
        around(e, &format!(r#""pad": "{}", "#, "x".repeat(pad))),
    ));
    bodies
}

fn attribute(m: &SqsMessage, name: &str) -> Option<String> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .map(str::to_string)
}

/// Resident set size of a process, KiB.
fn rss_kib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_dead_lettered_before_any_model_call_and_the_worker_keeps_serving() {
    let stack = Stack::with_fixture().await;
    let store = stack.db.store();
    let fake = FakeBedrock::start().await;
    let target = support::db::collection_authors(&store, 1).await[0];
    stack
        .db
        .exec(&format!(
            "DELETE FROM entity_profiles WHERE entity_type = '{}' AND entity_id = {}",
            target.entity_type, target.id
        ))
        .await;

    let daemon = stack.start_bedrock(&fake, &[("PROFILE_WORKER_GENERATOR__RETRY_BASE_MS", "1")]);
    // Idle first: the baseline is the daemon serving, not one still starting.
    eventually("the daemon polls", HANG_GUARD, || async {
        daemon.logs().contains("consumer started")
    })
    .await;
    let rss_before = rss_kib(&daemon);

    let bodies = hostile(target);
    assert!(bodies.len() >= 50, "{} bodies", bodies.len());
    let mut sent: BTreeMap<String, (&str, String)> = BTreeMap::new();
    for (what, body) in bodies {
        assert!(
            body.len() <= MAX_MESSAGE_BYTES,
            "{what}: {} bytes",
            body.len()
        );
        let id = stack.queue.send(&body).await;
        sent.insert(id, (what, body));
    }

    let dead: Mutex<Vec<SqsMessage>> = Mutex::default();
    eventually("every hostile body is dead-lettered", HANG_GUARD, || {
        let dead = &dead;
        let queue = &stack.queue;
        let expected = sent.len();
        async move {
            let got = queue.drain_dead_letters().await;
            let total = {
                let mut dead = dead.lock().unwrap();
                dead.extend(got);
                dead.len()
            };
            total >= expected && queue.counts().await == (0, 0)
        }
    })
    .await;
    let dead = dead.into_inner().unwrap();
    assert_eq!(
        fake.requests().len(),
        0,
        "a hostile body reached Bedrock; log:\n{}",
        daemon.logs()
    );
    assert_eq!(dead.len(), sent.len(), "each dead-lettered exactly once");

    let mut seen = 0;
    for copy in &dead {
        let body = copy.body().unwrap_or_default();
        let (what, original) = sent
            .values()
            .find(|(_, b)| b == body)
            .unwrap_or_else(|| panic!("unexpected dead letter of {} bytes", body.len()));
        seen += 1;
        if *what == "exactly 256 KiB" {
            // Body and attributes together may not exceed 256 KiB: the body is kept whole and
            // the reason is in the log instead.
            assert_eq!(copy.message_attributes().map_or(0, |a| a.len()), 0);
            continue;
        }
        assert_eq!(
            attribute(copy, "outcome").as_deref(),
            Some("poison"),
            "{what}"
        );
        let reason = attribute(copy, "reason").unwrap_or_default();
        assert!(!reason.is_empty(), "{what}: no reason");
        assert!(
            sent.contains_key(&attribute(copy, "original_message_id").unwrap_or_default()),
            "{what}"
        );
        assert_eq!(body, original.as_str(), "{what}: body unchanged");
    }
    assert_eq!(seen, sent.len());
    assert!(
        daemon.logs().contains("dead-letter attributes trimmed"),
        "the trimmed reason is logged"
    );

    // Still serving: a valid message is generated.
    let valid = Message {
        job_id: None,
        entity: target,
        force: true,
    };
    stack.queue.send(&valid.body()).await;
    eventually("the valid message is generated", HANG_GUARD, || {
        let store = &store;
        async move { store.profile(target).await.unwrap().is_some() }
    })
    .await;
    assert!(!fake.requests().is_empty());

    let rss_after = rss_kib(&daemon);
    eprintln!(
        "hostile bodies: {} dead-lettered; VmRSS {rss_before} KiB before, {rss_after} KiB after",
        sent.len()
    );
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT_KIB,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
