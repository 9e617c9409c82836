//! The graph's input read for [`super::PgStore`]: one snapshot of qualifying books, the entities
//! they reference and every AI connection.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::model::{AiConnectionRow, AuthorRow, BookLink, GraphRows, OrgRow, QUALIFYING_STATUSES};
use crate::store::schema::{ai_connections, authors, binders, books, publishers};

type LinkTuple = (i32, Option<i32>, Option<i32>, Option<i32>);
type AuthorTuple = (
    i32,
    String,
    Option<i32>,
    Option<i32>,
    Option<String>,
    Option<String>,
);
type PublisherTuple = (i32, String, Option<String>, Option<String>, Option<i32>);
type BinderTuple = (
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i32>,
);

type AiTuple = (
    String,
    i32,
    String,
    i32,
    String,
    Option<String>,
    f64,
    Option<String>,
);

/// See [`crate::store::ProfileStore::graph_rows`]; runs inside the caller's read-only transaction.
pub(super) async fn load_graph_rows(
    conn: &mut AsyncPgConnection,
    include_binders: bool,
    max_books: i64,
) -> QueryResult<GraphRows> {
    let links: Vec<LinkTuple> = books::table
        .filter(books::status.eq_any(QUALIFYING_STATUSES))
        .order(books::id.asc())
        .limit(max_books.max(0))
        .select((
            books::id,
            books::author_id,
            books::publisher_id,
            books::binder_id,
        ))
        .load(conn)
        .await?;
    let ids = |pick: fn(&LinkTuple) -> Option<i32>| {
        let mut v: Vec<i32> = links.iter().filter_map(pick).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let author_ids = ids(|b| b.1);
    let publisher_ids = ids(|b| b.2);
    let binder_ids = if include_binders {
        ids(|b| b.3)
    } else {
        Vec::new()
    };

    let authors: Vec<AuthorTuple> = authors::table
        .filter(authors::id.eq_any(&author_ids))
        .order(authors::id.asc())
        .select((
            authors::id,
            authors::name,
            authors::birth_year,
            authors::death_year,
            authors::tier,
            authors::image_url,
        ))
        .load(conn)
        .await?;
    let publishers: Vec<PublisherTuple> = publishers::table
        .filter(publishers::id.eq_any(&publisher_ids))
        .order(publishers::id.asc())
        .select((
            publishers::id,
            publishers::name,
            publishers::tier,
            publishers::image_url,
            publishers::founded_year,
        ))
        .load(conn)
        .await?;
    let binders: Vec<BinderTuple> = if binder_ids.is_empty() {
        Vec::new()
    } else {
        binders::table
            .filter(binders::id.eq_any(&binder_ids))
            .order(binders::id.asc())
            .select((
                binders::id,
                binders::name,
                binders::tier,
                binders::image_url,
                binders::founded_year,
                binders::closed_year,
            ))
            .load(conn)
            .await?
    };
    let ai: Vec<AiTuple> = ai_connections::table
        .order(ai_connections::id.asc())
        .select((
            ai_connections::source_type,
            ai_connections::source_id,
            ai_connections::target_type,
            ai_connections::target_id,
            ai_connections::relationship,
            ai_connections::sub_type,
            ai_connections::confidence,
            ai_connections::evidence,
        ))
        .load(conn)
        .await?;

    Ok(GraphRows {
        books: links
            .into_iter()
            .map(|(id, author_id, publisher_id, binder_id)| BookLink {
                id,
                author_id,
                publisher_id,
                binder_id,
            })
            .collect(),
        authors: authors
            .into_iter()
            .map(
                |(id, name, birth_year, death_year, tier, image_url)| AuthorRow {
                    id,
                    name,
                    birth_year,
                    death_year,
                    tier,
                    image_url,
                },
            )
            .collect(),
        publishers: publishers
            .into_iter()
            .map(|(id, name, tier, image_url, founded_year)| OrgRow {
                id,
                name,
                tier,
                image_url,
                founded_year,
                closed_year: None,
            })
            .collect(),
        binders: binders
            .into_iter()
            .map(
                |(id, name, tier, image_url, founded_year, closed_year)| OrgRow {
                    id,
                    name,
                    tier,
                    image_url,
                    founded_year,
                    closed_year,
                },
            )
            .collect(),
        ai_connections: ai.into_iter().map(ai_row).collect(),
    })
}

fn ai_row(t: AiTuple) -> AiConnectionRow {
    let (
        source_type,
        source_id,
        target_type,
        target_id,
        relationship,
        sub_type,
        confidence,
        evidence,
    ) = t;
    AiConnectionRow {
        source_type,
        source_id,
        target_type,
        target_id,
        relationship,
        sub_type,
        confidence,
        evidence,
    }
}
