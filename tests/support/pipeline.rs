//! The profile pipeline in process on real components: a fresh migrated database (`PgStore`), the
//! shared Redis under a key prefix of its own (`GraphCache`), and `BedrockGenerator` talking to a
//! fresh fake Converse server. Also the small hand-made collection the pipeline tests profile.

use std::sync::Arc;

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use profile_worker::cache::GraphCache;
use profile_worker::config::GeneratorConfig;
use profile_worker::consumer::{Delivery, Handler, Outcome};
use profile_worker::generate::bedrock::BedrockGenerator;
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::model::{Job, StoredProfile};
use profile_worker::pipeline::message::Message;
use profile_worker::pipeline::{Pipeline, Settings};
use profile_worker::store::{JobStore, PgStore, ProfileStore};
use serde_json::Value;

use super::bedrock::{FakeBedrock, sdk_config};
use super::db::TestDb;
use super::redis::{cache_config, shared_url, unique_prefix};

/// The Bedrock id `haiku` resolves to, and its price (USD per million tokens).
pub const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
pub const HAIKU_PRICE: (f64, f64) = (0.80, 4.00);

/// A small collection with one case per narrative rule:
/// - author 1 (romantic, 1795–1821) and author 2 (victorian, 1840–1900) both published by
///   publisher 2: author 1's neighbours are publisher 2 (no trigger) and author 2 (cross-era
///   bridge → relationship story);
/// - publisher 3 published authors 10–14: five publisher edges make it a hub (five narratives
///   wanted, three allowed);
/// - author 20 has one book with publisher 4: one edge, no trigger;
/// - author 30 only has EVALUATING and REMOVED books: no qualifying book;
/// - binder 1 bound author 2's book.
pub const COLLECTION: &str = "
INSERT INTO authors (id, name, birth_year, death_year) VALUES
  (1, 'Percy Romantic', 1795, 1821), (2, 'Thomas Victorian', 1840, 1900),
  (10, 'Hub Author A', 1840, 1890), (11, 'Hub Author B', 1841, 1891),
  (12, 'Hub Author C', 1842, 1892), (13, 'Hub Author D', 1843, 1893),
  (14, 'Hub Author E', 1844, 1894), (20, 'Lone Author', 1850, 1910),
  (30, 'Unowned Author', 1850, 1910);
INSERT INTO publishers (id, name, founded_year) VALUES
  (2, 'Smith, Elder', 1816), (3, 'Macmillan', 1843), (4, 'Small Press', 1870);
INSERT INTO binders (id, name) VALUES (1, 'Riviere');
INSERT INTO books (id, title, author_id, publisher_id, binder_id, status, year_start, updated_at) VALUES
  (1, 'Odes', 1, 2, NULL, 'ON_HAND', 1820, now() - interval '10 days'),
  (2, 'Wessex Tales', 2, 2, 1, 'IN_TRANSIT', 1888, now() - interval '10 days'),
  (10, 'Hub Book A', 10, 3, NULL, 'ON_HAND', 1870, now() - interval '10 days'),
  (11, 'Hub Book B', 11, 3, NULL, 'ON_HAND', 1871, now() - interval '10 days'),
  (12, 'Hub Book C', 12, 3, NULL, 'ON_HAND', 1872, now() - interval '10 days'),
  (13, 'Hub Book D', 13, 3, NULL, 'ON_HAND', 1873, now() - interval '10 days'),
  (14, 'Hub Book E', 14, 3, NULL, 'ON_HAND', 1874, now() - interval '10 days'),
  (20, 'Lone Book', 20, 4, NULL, 'ON_HAND', 1880, now() - interval '10 days'),
  (30, 'Maybe Book', 30, 4, NULL, 'EVALUATING', 1880, now() - interval '10 days'),
  (31, 'Gone Book', 30, 4, NULL, 'REMOVED', 1881, now() - interval '10 days');
INSERT INTO users (id, cognito_sub, role) VALUES (1, 'admin-sub', 'admin');
";

/// An ad-hoc message body, as the message module builds it.
pub fn body(entity: &str) -> String {
    message(None, entity, false)
}

/// A message body, as the message module builds it (the original producer's style).
pub fn message(job_id: Option<&str>, entity: &str, force: bool) -> String {
    Message {
        job_id: job_id.map(str::to_string),
        entity: entity.parse().expect("type:id"),
        force,
    }
    .body()
}

/// `body` as an older producer sends it: with the `owner_id` key the daemon ignores.
pub fn with_owner_id(body: &str, owner_id: i32) -> String {
    let mut value: Value = serde_json::from_str(body).expect("a JSON body");
    value["owner_id"] = Value::from(owner_id);
    value.to_string()
}

/// The pipeline wired to real components, fresh for one test.
pub struct Harness {
    pub db: TestDb,
    pub fake: FakeBedrock,
    pub store: Arc<PgStore>,
    pub metrics: Arc<Metrics>,
    pub pipeline: Pipeline,
}

impl Harness {
    /// A migrated database holding [`COLLECTION`]; default settings, fast Bedrock retries.
    pub async fn new() -> Harness {
        Self::with(|_, _| {}).await
    }

    /// As [`Harness::new`], letting the test adjust the pipeline and generator settings.
    pub async fn with(configure: impl FnOnce(&mut Settings, &mut GeneratorConfig)) -> Harness {
        let db = TestDb::migrated().await;
        db.exec(COLLECTION).await;
        Self::build(db, configure).await
    }

    /// As [`Harness::with`], on the reference fixture collection (264 entities with qualifying
    /// books) instead of [`COLLECTION`].
    pub async fn on_fixture(
        configure: impl FnOnce(&mut Settings, &mut GeneratorConfig),
    ) -> Harness {
        let db = TestDb::with_fixture().await;
        db.exec("INSERT INTO users (id, cognito_sub, role) VALUES (1, 'admin-sub', 'admin') ON CONFLICT DO NOTHING")
            .await;
        Self::build(db, configure).await
    }

    async fn build(
        db: TestDb,
        configure: impl FnOnce(&mut Settings, &mut GeneratorConfig),
    ) -> Harness {
        let fake = FakeBedrock::start().await;
        let config = profile_worker::config::defaults();
        let mut settings = Settings::from_config(&config);
        let mut generator_config = fake.generator_config();
        configure(&mut settings, &mut generator_config);
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(db.store());
        let cache = GraphCache::with_key_prefix(
            &cache_config(&shared_url()),
            metrics.clone(),
            &Health::new(),
            &unique_prefix(),
        )
        .expect("cache builds");
        let generator =
            BedrockGenerator::new(&sdk_config().await, &generator_config, metrics.clone());
        let pipeline = Pipeline::new(
            store.clone(),
            cache,
            Arc::new(generator),
            metrics.clone(),
            settings,
        );
        Harness {
            db,
            fake,
            store,
            metrics,
            pipeline,
        }
    }

    /// Hands one body to the pipeline as a first delivery (more attempts to come).
    pub async fn deliver(&self, body: &str) -> Outcome {
        self.deliver_attempt(body, 1, false).await
    }

    /// Hands `job`'s message for `entity` (not forced) to the pipeline as a first delivery.
    pub async fn deliver_for(&self, job: &str, entity: &str) -> Outcome {
        self.deliver(&message(Some(job), entity, false)).await
    }

    /// Hands one body to the pipeline as delivery `attempt`.
    pub async fn deliver_attempt(
        &self,
        body: &str,
        attempt: u32,
        is_last_attempt: bool,
    ) -> Outcome {
        let delivery = Delivery {
            message_id: uuid::Uuid::new_v4().to_string(),
            body: body.to_string(),
            receive_count: attempt,
            attempt,
            is_last_attempt,
        };
        super::redis::guard(self.pipeline.handle(&delivery)).await
    }

    pub async fn profile(&self, entity: &str) -> Option<StoredProfile> {
        self.store
            .profile(entity.parse().unwrap())
            .await
            .expect("read profile")
    }

    /// Inserts a job of user 1 with `total` entities in `status`; returns its id.
    pub async fn create_job(&self, total: i32, status: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.db
            .exec(&format!(
                "INSERT INTO profile_generation_jobs (id, status, owner_id, total_entities) \
                 VALUES ('{id}', '{status}', 1, {total})"
            ))
            .await;
        id
    }

    pub async fn job(&self, id: &str) -> Job {
        self.store
            .job(id)
            .await
            .expect("read job")
            .expect("job exists")
    }

    /// Rows of `sql` as a JSON array of objects.
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        rows(&self.db, sql).await
    }

    /// `generator_requests_total{call, result}`.
    pub fn requests(&self, call: &str, result: &str) -> u64 {
        self.metrics
            .generator_requests
            .with_label_values(&[call, result])
            .get()
    }
}

#[derive(QueryableByName)]
struct JsonText {
    #[diesel(sql_type = Text)]
    v: String,
}

/// Rows of `sql` on `db` as a JSON array of objects (`json_agg` of the query).
pub async fn rows(db: &TestDb, sql: &str) -> Vec<Value> {
    let wrapped = format!("SELECT COALESCE(json_agg(t), '[]')::text AS v FROM ({sql}) t");
    let mut conn = db.conn().await;
    let out: JsonText = diesel::sql_query(&wrapped)
        .get_result(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}\n{wrapped}"));
    match serde_json::from_str(&out.v).expect("json_agg is JSON") {
        Value::Array(rows) => rows,
        other => panic!("expected an array, got {other}"),
    }
}
