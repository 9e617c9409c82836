//! Any bytes as a queue message body: the parser never panics, and whatever it accepts round-trips
//! through `Message::body` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_worker_contract::message::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = parse(body, 65_536) {
        assert_eq!(parse(&message.body(), 65_536), Ok(message));
    }
});
