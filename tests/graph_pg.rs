//! The graph read from real PostgreSQL through `PgStore::graph_rows`: the golden collection gives
//! the original's graph, the qualifying-status filter holds, and `max_books` / `truncated` work
//! through the store (reference §5, §10.8; issue 5).

mod support;

use chrono::Utc;
use profile_worker::graph::{GraphParams, build, from_json};
use profile_worker::store::ProfileStore;
use support::db::TestDb;
use support::graph::{assert_matches_golden, fixture, golden_rows};

#[tokio::test]
async fn golden_collection_read_from_postgres_matches_the_original() {
    let db = TestDb::with_fixture().await;
    let params = GraphParams::default();
    let rows = db
        .store()
        .graph_rows(params.include_binders, params.max_books.into())
        .await
        .expect("graph rows");
    assert_eq!(
        rows,
        golden_rows(params.max_books as usize, params.include_binders),
        "the store reads what the fixture holds, ordered by id"
    );

    let ours = build(&rows, &params, Utc::now());
    let golden = from_json(&fixture("python-graph-small.json")).expect("golden parses");
    assert_matches_golden(&ours, &golden, &rows);
}

#[tokio::test]
async fn only_in_transit_and_on_hand_books_reach_the_graph() {
    let db = TestDb::migrated().await;
    db.exec(
        "INSERT INTO authors (id, name, birth_year) VALUES
           (1, 'On Hand', 1850), (2, 'In Transit', 1850), (3, 'Evaluating', 1850),
           (4, 'Removed', 1850), (5, 'Mixed', 1850);
         INSERT INTO publishers (id, name) VALUES (1, 'Owned Press'), (2, 'Unowned Press');
         INSERT INTO binders (id, name) VALUES (1, 'Owned Bindery'), (2, 'Unowned Bindery');
         INSERT INTO books (id, title, author_id, publisher_id, binder_id, status) VALUES
           (1, 'a', 1, 1, 1, 'ON_HAND'),
           (2, 'b', 2, 1, NULL, 'IN_TRANSIT'),
           (3, 'c', 3, 2, 2, 'EVALUATING'),
           (4, 'd', 4, 2, 2, 'REMOVED'),
           (5, 'e', 5, 1, NULL, 'ON_HAND'),
           (6, 'f', 5, 2, 2, 'SOLD'),
           (7, 'g', NULL, 1, NULL, 'ON_HAND');",
    )
    .await;
    let rows = db.store().graph_rows(true, 5000).await.unwrap();
    let ids = |v: &mut dyn Iterator<Item = i32>| v.collect::<Vec<i32>>();
    assert_eq!(ids(&mut rows.books.iter().map(|b| b.id)), [1, 2, 5, 7]);
    assert_eq!(ids(&mut rows.authors.iter().map(|a| a.id)), [1, 2, 5]);
    assert_eq!(ids(&mut rows.publishers.iter().map(|p| p.id)), [1]);
    assert_eq!(ids(&mut rows.binders.iter().map(|b| b.id)), [1]);

    let graph = build(&rows, &GraphParams::default(), Utc::now());
    assert_eq!(graph.meta.total_books, 4, "the authorless book counts too");
    let node_ids: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        node_ids,
        [
            "author:1",
            "author:2",
            "author:5",
            "publisher:1",
            "binder:1"
        ]
    );
    let mixed = graph.node("author:5").unwrap();
    assert_eq!(mixed.book_count, 1, "only the qualifying book counts");
    assert_eq!(mixed.book_ids, [5]);
    assert!(!graph.meta.truncated);

    let without_binders = db.store().graph_rows(false, 5000).await.unwrap();
    assert!(without_binders.binders.is_empty());
    assert_eq!(without_binders.books, rows.books);
}

#[tokio::test]
async fn max_books_limits_the_read_and_marks_the_graph_truncated() {
    let db = TestDb::with_fixture().await;
    let store = db.store();

    let all = store.graph_rows(true, 5000).await.unwrap();
    assert!(all.books.len() < 5000);
    let graph = build(&all, &GraphParams::default(), Utc::now());
    assert!(!graph.meta.truncated);
    assert_eq!(graph.meta.total_books as usize, all.books.len());

    let params = GraphParams {
        max_books: 100,
        ..GraphParams::default()
    };
    let limited = store
        .graph_rows(params.include_binders, params.max_books.into())
        .await
        .unwrap();
    assert_eq!(
        limited,
        golden_rows(100, true),
        "the first 100 qualifying books by id"
    );
    assert_eq!(limited.books[..], all.books[..100]);
    let graph = build(&limited, &params, Utc::now());
    assert!(graph.meta.truncated);
    assert_eq!(graph.meta.total_books, 100);
    let referenced = |id: &str| {
        limited.books.iter().any(|b| {
            let owner = b.author_id.map(|a| format!("author:{a}"));
            owner.as_deref() == Some(id)
        })
    };
    for node in graph.nodes.iter().filter(|n| n.id.starts_with("author:")) {
        assert!(
            referenced(&node.id),
            "{} comes from the first 100 books",
            node.id
        );
    }

    // Exactly at the limit is "truncated" (the original compares with ==).
    let exact = store
        .graph_rows(true, all.books.len() as i64)
        .await
        .unwrap();
    let params = GraphParams {
        max_books: all.books.len() as u32,
        ..GraphParams::default()
    };
    assert!(build(&exact, &params, Utc::now()).meta.truncated);
}
