//! Golden parity: our graph of `collection-small.sql` against the one the original built from it
//! (`tests/data/fixtures/README.md` says what must match).
//!
//! The rows are read from the fixture's INSERT statements the way `Store::graph_rows` reads them
//! from PostgreSQL (qualifying books ordered by id, referenced entities, all AI connections).

mod support;

use chrono::Utc;
use profile_worker::graph::{GraphParams, build, from_json};
use support::graph::{assert_matches_golden, fixture, golden_rows};

#[test]
fn graph_of_the_golden_collection_matches_the_original() {
    let golden = from_json(&fixture("python-graph-small.json")).expect("golden parses");
    let params = GraphParams::default();
    let rows = golden_rows(params.max_books as usize, params.include_binders);
    let ours = build(&rows, &params, Utc::now());
    assert_matches_golden(&ours, &golden, &rows);
}

#[test]
fn golden_build_is_deterministic() {
    let params = GraphParams::default();
    let rows = golden_rows(params.max_books as usize, true);
    let at = Utc::now();
    assert_eq!(build(&rows, &params, at), build(&rows, &params, at));
}
