//! SQS test helpers: a fresh queue and dead-letter queue per test on moto or fauxqs, created with
//! the real SDK, plus instrumented consumer handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use profile_worker::aws;
use profile_worker::config::{AwsConfig, QueueConfig};
use profile_worker::consumer::{ConsumerSettings, Delivery, Handler, Outcome};
use profile_worker::queue::SqsQueue;

/// Endpoint of the shared moto server (strict behaviour, small queues).
pub fn moto_url() -> String {
    required_env("PW_TEST_MOTO_URL")
}

/// Endpoint of the shared fauxqs server (volume).
pub fn fauxqs_url() -> String {
    required_env("PW_TEST_FAUXQS_URL")
}

fn required_env(name: &str) -> String {
    for var in [name, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if std::env::var(var).map_or(true, |v| v.is_empty()) {
            panic!(
                "{var} is unset: run scripts/test (it starts the local SQS servers and exports their URLs and dummy credentials)"
            );
        }
    }
    std::env::var(name).expect("checked above")
}

/// The AWS configuration of every test's own SDK clients: a fixed region and dummy credentials,
/// independent of the code under test.
pub async fn local_aws() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// An SDK client for a local SQS server, independent of the code under test.
pub async fn client(endpoint: &str) -> Client {
    let shared = local_aws().await;
    Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .build(),
    )
}

/// A fresh queue with its own dead-letter queue (RedrivePolicy with `max_receive_count`).
pub struct TestQueue {
    pub client: Client,
    pub endpoint: String,
    pub name: String,
    pub url: String,
    pub dlq_url: String,
}

impl TestQueue {
    pub async fn create(endpoint: &str, max_receive_count: u32) -> Self {
        let name = format!("pw-test-{}", uuid::Uuid::new_v4().simple());
        Self::create_named(endpoint, &name, max_receive_count).await
    }

    /// Creates (or re-creates after a server restart) the queue `name` and `name-dlq`.
    pub async fn create_named(endpoint: &str, name: &str, max_receive_count: u32) -> Self {
        Self::create_with_dlq_limit(endpoint, name, max_receive_count, None).await
    }

    /// Like [`TestQueue::create_named`], the dead-letter queue refusing messages over
    /// `dlq_max_bytes` when set (its `MaximumMessageSize`).
    pub async fn create_with_dlq_limit(
        endpoint: &str,
        name: &str,
        max_receive_count: u32,
        dlq_max_bytes: Option<u32>,
    ) -> Self {
        let client = client(endpoint).await;
        let name = name.to_string();
        let dlq_url = create_queue(
            &client,
            &format!("{name}-dlq"),
            dlq_max_bytes.map(|n| (QueueAttributeName::MaximumMessageSize, n.to_string())),
        )
        .await;
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes QueueArn")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("dead-letter queue has an ARN");
        let policy = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receive_count,
        })
        .to_string();
        let url = create_queue(
            &client,
            &name,
            Some((QueueAttributeName::RedrivePolicy, policy)),
        )
        .await;
        Self {
            client,
            endpoint: endpoint.to_string(),
            name,
            url,
            dlq_url,
        }
    }

    /// `[queue]` settings pointing at this queue by URL, DLQ from the RedrivePolicy.
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            url: self.url.clone(),
            name: String::new(),
            dead_letter_url: String::new(),
            endpoint_url: self.endpoint.clone(),
        }
    }

    /// The adapter under test, connected the way `run` connects it.
    pub async fn connect(&self, wait: Duration) -> SqsQueue {
        SqsQueue::connect(&aws::sdk_config(&aws()).await, &self.queue_config(), wait)
            .await
            .expect("SqsQueue connects to the test queue")
    }

    pub async fn send(&self, body: &str) -> String {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .expect("SendMessage")
            .message_id()
            .expect("message id")
            .to_string()
    }

    /// Purges the main queue (PurgeQueue), in-flight messages included.
    pub async fn purge(&self) {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .expect("PurgeQueue");
    }

    /// (visible, not visible) as the server reports them.
    pub async fn counts(&self) -> (u64, u64) {
        counts(&self.client, &self.url).await
    }

    /// Receives everything currently visible in the dead-letter queue (hides it for 60 s).
    pub async fn drain_dead_letters(&self) -> Vec<aws_sdk_sqs::types::Message> {
        receive_all(&self.client, &self.dlq_url).await
    }

    /// Receives everything currently visible in the main queue (hides it for 60 s).
    pub async fn drain(&self) -> Vec<aws_sdk_sqs::types::Message> {
        receive_all(&self.client, &self.url).await
    }
}

pub fn aws() -> AwsConfig {
    AwsConfig {
        region: "us-east-1".into(),
    }
}

async fn create_queue(
    client: &Client,
    name: &str,
    attribute: Option<(QueueAttributeName, String)>,
) -> String {
    let mut req = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "30");
    if let Some((key, value)) = attribute {
        req = req.attributes(key, value);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("CreateQueue {name}: {e:?}"))
        .queue_url()
        .expect("queue url")
        .to_string()
}

pub async fn counts(client: &Client, url: &str) -> (u64, u64) {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("GetQueueAttributes");
    let get = |n: QueueAttributeName| {
        out.attributes()
            .and_then(|a| a.get(&n))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

async fn receive_all(client: &Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        if out.messages().is_empty() {
            return all;
        }
        all.extend(out.messages().iter().cloned());
    }
}

/// Consumer settings for tests: short long-poll and grace, frequent depth polls.
pub fn settings(concurrency: usize) -> ConsumerSettings {
    ConsumerSettings {
        concurrency,
        wait: Duration::from_secs(1),
        visibility: Duration::from_secs(30),
        max_attempts: 5,
        retry_base: Duration::from_secs(1),
        retry_cap: Duration::from_secs(4),
        unready_after: 2,
        grace: Duration::from_secs(5),
        depth_interval: Duration::from_secs(1),
        deadline: Duration::from_secs(600),
    }
}

type BoxedFn =
    dyn Fn(Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync + 'static;

/// A handler made from an async closure.
pub struct FnHandler(Box<BoxedFn>);

#[async_trait]
impl Handler for FnHandler {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        (self.0)(delivery.clone()).await
    }
}

/// Wraps an async closure as a consumer handler.
pub fn handler<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(FnHandler(Box::new(move |d| Box::pin(f(d)))))
}

/// Polls `cond` every 50 ms until it holds; panics after `limit` (a hang guard, not a timing
/// assertion).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_every(Duration::from_millis(50), what, limit, cond).await;
}

/// [`eventually`] polling every `period`, for conditions that are costly to check (a CLI run).
pub async fn poll_every<F, Fut>(period: Duration, what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(period).await;
    }
}

/// A moto server of a test's own, for tests that stop and restart SQS. The binary comes from
/// `PW_TEST_MOTO_BIN`, else `tools/moto/bin/moto_server` of the checkout (scripts/services).
pub struct OwnMoto {
    child: std::process::Child,
    pub port: u16,
}

impl OwnMoto {
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind port 0")
            .local_addr()
            .expect("local addr")
            .port()
    }

    /// Starts moto on `port` and waits until it answers.
    pub async fn start(port: u16) -> Self {
        let bin = std::env::var("PW_TEST_MOTO_BIN").unwrap_or_else(|_| {
            format!("{}/tools/moto/bin/moto_server", env!("CARGO_MANIFEST_DIR"))
        });
        assert!(
            std::path::Path::new(&bin).is_file(),
            "moto_server not found at {bin}: run scripts/services start or set PW_TEST_MOTO_BIN"
        );
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Self { child, port };
        let sdk = client(&moto.url()).await;
        eventually("moto answers", Duration::from_secs(60), || {
            let sdk = sdk.clone();
            async move { sdk.list_queues().send().await.is_ok() }
        })
        .await;
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
