//! The graph's input read for [`super::PgStore`]: one snapshot of qualifying books, the entities
//! they reference and every AI connection.

use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::model::{AiConnectionRow, AuthorRow, BookLink, GraphRows, OrgRow, QUALIFYING_STATUSES};
use crate::store::schema::{ai_connections, authors, binders, books, publishers};

/// See [`crate::store::ProfileStore::graph_rows`]; runs inside the caller's read-only transaction.
/// Every select lists the row type's fields in order (they are `Queryable` by position).
pub(super) async fn load_graph_rows(
    conn: &mut AsyncPgConnection,
    include_binders: bool,
    max_books: i64,
) -> QueryResult<GraphRows> {
    let books: Vec<BookLink> = books::table
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
    let ids = |pick: fn(&BookLink) -> Option<i32>| {
        let mut v: Vec<i32> = books.iter().filter_map(pick).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let author_ids = ids(|b| b.author_id);
    let publisher_ids = ids(|b| b.publisher_id);
    let binder_ids = if include_binders {
        ids(|b| b.binder_id)
    } else {
        Vec::new()
    };

    let authors: Vec<AuthorRow> = authors::table
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
    // Publishers have no closed year.
    let no_closed_year = None::<i32>.into_sql::<Nullable<Integer>>();
    let publishers: Vec<OrgRow> = publishers::table
        .filter(publishers::id.eq_any(&publisher_ids))
        .order(publishers::id.asc())
        .select((
            publishers::id,
            publishers::name,
            publishers::tier,
            publishers::image_url,
            publishers::founded_year,
            no_closed_year,
        ))
        .load(conn)
        .await?;
    let binders: Vec<OrgRow> = if binder_ids.is_empty() {
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
    let ai_connections: Vec<AiConnectionRow> = ai_connections::table
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
        books,
        authors,
        publishers,
        binders,
        ai_connections,
    })
}
