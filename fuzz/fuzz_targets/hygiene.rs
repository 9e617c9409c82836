//! Any model reply: hygiene never panics, its text is idempotent, holds no control character but
//! `\n` and `\t`, no marker outside the valid set, and nothing longer than the cap.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use profile_worker_contract::hygiene::{
    MAX_STORED_CHARS, clean_text, parse_biography, parse_relationship_story,
};

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = std::str::from_utf8(data) else {
        return;
    };
    let valid: HashSet<String> = ["author:1".to_string()].into();
    let once = clean_text(reply, &valid);
    assert_eq!(clean_text(&once, &valid), once);
    assert!(once.chars().count() <= MAX_STORED_CHARS);
    assert!(
        once.chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\t')
    );
    let mut rest = once.as_str();
    while let Some(at) = rest.find("{{entity:") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find("}}") {
            let marker = &rest[..end];
            // A marker is `{{entity:TYPE:ID|Name}}` with a non-empty type and name, as the
            // sanitiser and the API's front end read it; `{{entity:a:1|}}` and
            // `{{entity::1|Name}}` are plain text to both.
            if let Some((id, _)) = marker
                .strip_prefix("entity:")
                .and_then(|m| m.split_once('|'))
                .filter(|(_, name)| !name.is_empty())
                && id.split_once(':').is_some_and(|(t, n)| {
                    !t.is_empty()
                        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
                        && !n.is_empty()
                        && n.chars().all(|c| c.is_ascii_digit())
                })
                && !marker.contains('}')
            {
                assert!(valid.contains(id), "invalid marker kept: {once:?}");
            }
        }
    }
    let bio = parse_biography(reply, &valid);
    let story = parse_relationship_story(reply, &valid);
    let stored = format!("{:?}{:?}", bio.biography, story.map(|s| s.summary));
    assert!(!stored.contains('\0'));
});
