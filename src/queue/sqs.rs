//! `SqsQueue`: the [`Queue`] port on Amazon SQS (aws-sdk-sqs), also used against moto, fauxqs and
//! LocalStack through an endpoint override.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use super::{
    BatchFailure, MAX_BATCH, OutgoingMessage, Queue, QueueDepth, QueueError, ReceivedMessage,
};
use crate::config::{QueueConfig, sqs_attempt_timeout};

/// The SDK's own connect timeout under `BehaviorVersion::latest()`, restated because setting a
/// timeout config replaces the defaults.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// An SQS queue, with its dead-letter queue and redrive limit read once at start-up.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    max_receive_count: Option<u32>,
    dead_letter: Option<Arc<SqsQueue>>,
}

/// The queue's `RedrivePolicy` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Redrive {
    dead_letter_arn: String,
    max_receive_count: u32,
}

impl SqsQueue {
    /// Builds the SDK client on the process's shared AWS configuration ([`crate::aws`]; the
    /// endpoint from `queue.endpoint_url` when set) and resolves the queue, its redrive policy
    /// and its dead-letter queue. `wait` is the longest long poll the caller will ask for; every
    /// call's attempt timeout stays above it.
    pub async fn connect(
        sdk: &SdkConfig,
        queue: &QueueConfig,
        wait: Duration,
    ) -> Result<Self, QueueError> {
        let client = build_client(sdk, queue, wait);
        let url = queue_url(&client, queue).await?;
        let redrive = read_redrive(&client, &url).await?;
        // A dead-letter queue that is missing stops start-up with the setting to fix: poison
        // and failed messages would otherwise find nowhere to go. GetQueueUrl proves it exists
        // with the permission the task role already has on it (deploy/ecs/task-role-policy.json).
        let dead_letter_url = if !queue.dead_letter_url.is_empty() {
            let dl = &queue.dead_letter_url;
            let (account, name) = split_queue_url(dl).ok_or_else(|| {
                QueueError::Rejected(format!("queue.dead_letter_url {dl:?} is not a queue URL"))
            })?;
            resolve_url(&client, name, Some(account))
                .await
                .map_err(|e| missing_dead_letter(e, &format!("queue.dead_letter_url {dl}")))?;
            Some(dl.clone())
        } else if let Some(r) = &redrive {
            let (account, name) = split_arn(&r.dead_letter_arn).ok_or_else(|| {
                QueueError::Rejected(format!(
                    "RedrivePolicy of {url} names an invalid dead-letter ARN {:?}",
                    r.dead_letter_arn
                ))
            })?;
            Some(
                resolve_url(&client, name, Some(account))
                    .await
                    .map_err(|e| {
                        missing_dead_letter(
                            e,
                            &format!(
                                "{} (the RedrivePolicy of {url}; queue.dead_letter_url overrides it)",
                                r.dead_letter_arn
                            ),
                        )
                    })?,
            )
        } else {
            None
        };
        let dead_letter = dead_letter_url.map(|dl| {
            Arc::new(SqsQueue {
                client: client.clone(),
                url: dl,
                max_receive_count: None,
                dead_letter: None,
            })
        });
        Ok(Self {
            client,
            url,
            max_receive_count: redrive.map(|r| r.max_receive_count),
            dead_letter,
        })
    }

    /// The queue URL in use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue URL, when there is one.
    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dead_letter.as_deref().map(SqsQueue::url)
    }

    /// The dead-letter queue, when there is one.
    pub fn dead_letter(&self) -> Option<&SqsQueue> {
        self.dead_letter.as_deref()
    }

    /// The SDK client, for the operations outside the [`Queue`] port (the console's DLQ tools).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// A queue for producers (`enqueue`): resolves only the URL, so sending needs no more than
    /// `sqs:SendMessage` and `sqs:GetQueueUrl` on the main queue (deploy/ecs/enqueue-policy.json).
    /// It has no dead-letter queue and no redrive limit.
    pub async fn connect_sender(sdk: &SdkConfig, queue: &QueueConfig) -> Result<Self, QueueError> {
        let client = build_client(sdk, queue, Duration::ZERO);
        let url = queue_url(&client, queue).await?;
        Ok(Self {
            client,
            url,
            max_receive_count: None,
            dead_letter: None,
        })
    }
}

/// The SDK client on the process's shared AWS configuration, with the endpoint from
/// `queue.endpoint_url` when set. Every call's attempt timeout stays above `wait`, the longest
/// long poll the caller will ask for.
fn build_client(sdk: &SdkConfig, queue: &QueueConfig, wait: Duration) -> Client {
    let mut builder = aws_sdk_sqs::config::Builder::from(sdk).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(sqs_attempt_timeout(wait))
            .build(),
    );
    if !queue.endpoint_url.is_empty() {
        builder = builder.endpoint_url(&queue.endpoint_url);
    }
    Client::from_conf(builder.build())
}

/// `queue.url`, else the URL of `queue.name` (GetQueueUrl).
async fn queue_url(client: &Client, queue: &QueueConfig) -> Result<String, QueueError> {
    if queue.url.is_empty() {
        resolve_url(client, &queue.name, None).await
    } else {
        Ok(queue.url.clone())
    }
}

/// `ApproximateReceiveCount` of a received message, when SQS sent it.
pub(crate) fn receive_count(m: &aws_sdk_sqs::types::Message) -> Option<u32> {
    m.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|c| c.parse().ok())
}

/// The string-valued message attributes (our `outcome`, `reason`, … on dead letters).
pub(crate) fn string_attributes(m: &aws_sdk_sqs::types::Message) -> BTreeMap<String, String> {
    m.message_attributes()
        .map(|attrs| {
            attrs
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

async fn resolve_url(
    client: &Client,
    name: &str,
    owner: Option<&str>,
) -> Result<String, QueueError> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .set_queue_owner_aws_account_id(owner.filter(|a| !a.is_empty()).map(str::to_string))
        .send()
        .await
        .map_err(|e| classify(&format!("GetQueueUrl {name}"), e))?;
    out.queue_url()
        .map(str::to_string)
        .ok_or_else(|| QueueError::NotFound(format!("GetQueueUrl {name} returned no URL")))
}

async fn read_redrive(client: &Client, url: &str) -> Result<Option<Redrive>, QueueError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| classify(&format!("GetQueueAttributes {url}"), e))?;
    let Some(raw) = out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
    else {
        return Ok(None);
    };
    parse_redrive(raw).map(Some).ok_or_else(|| {
        QueueError::Rejected(format!("RedrivePolicy of {url} is not understood: {raw}"))
    })
}

/// Parses `{"deadLetterTargetArn": "...", "maxReceiveCount": 5}` (the count may be a string).
fn parse_redrive(raw: &str) -> Option<Redrive> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?.to_string();
    let count = match v.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(Redrive {
        dead_letter_arn: arn,
        max_receive_count: count,
    })
}

/// Names the dead-letter queue in a start-up error; an unreachable one stays transient (the
/// daemon waits for it like for the queue).
fn missing_dead_letter(err: QueueError, which: &str) -> QueueError {
    match err {
        QueueError::Transient(e) => QueueError::Transient(e),
        QueueError::NotFound(e) | QueueError::ReceiptInvalid(e) => {
            QueueError::NotFound(format!("dead-letter queue {which} does not exist: {e}"))
        }
        QueueError::Rejected(e) => {
            QueueError::Rejected(format!("dead-letter queue {which} refused: {e}"))
        }
    }
}

/// `https://sqs.region.amazonaws.com/account/name` (or a local server's
/// `http://host:port/account/name`) → (account, name).
fn split_queue_url(url: &str) -> Option<(&str, &str)> {
    let path = url.split_once("://")?.1.split_once('/')?.1;
    match path
        .trim_end_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        [account, name] if !account.is_empty() && !name.is_empty() => Some((account, name)),
        _ => None,
    }
}

/// `arn:aws:sqs:region:account:name` → (account, name).
fn split_arn(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, account, name] if !name.is_empty() => Some((account, name)),
        _ => None,
    }
}

/// Maps an SDK error onto what the caller must do.
pub(crate) fn classify<E>(
    context: &str,
    err: SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    let text = match &err {
        // The service's own code and message say it all; the raw response is noise.
        SdkError::ServiceError(_) => {
            format!("{context}: {code}: {}", err.message().unwrap_or_default())
        }
        _ => format!("{context}: {}", DisplayErrorContext(&err)),
    };
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            QueueError::Transient(text)
        }
        SdkError::ServiceError(_) => classify_code(&code, status, text),
        _ => QueueError::Rejected(text),
    }
}

/// Whether SQS says this receipt no longer owns its message. Besides the two modelled codes,
/// SQS answers `InvalidParameterValue` about the `ReceiptHandle` parameter for a handle whose
/// visibility ran out ("The receipt handle has expired") or whose message was received again
/// or deleted ("Message does not exist or is not available for visibility timeout change").
fn receipt_no_longer_owned(code: &str, text: &str) -> bool {
    code.contains("ReceiptHandleIsInvalid")
        || code.contains("MessageNotInflight")
        || (code.contains("InvalidParameterValue") && text.contains("ReceiptHandle"))
}

fn classify_code(code: &str, status: Option<u16>, text: String) -> QueueError {
    if receipt_no_longer_owned(code, &text) {
        QueueError::ReceiptInvalid(text)
    } else if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
        QueueError::NotFound(text)
    } else if code.contains("Throttl")
        || code == "RequestThrottled"
        || code.contains("ServiceUnavailable")
        || code.contains("InternalError")
        || status.is_some_and(|s| s >= 500 || s == 429)
    {
        QueueError::Transient(text)
    } else {
        QueueError::Rejected(text)
    }
}

fn failures(entries: &[aws_sdk_sqs::types::BatchResultErrorEntry]) -> Vec<BatchFailure> {
    let mut out: Vec<BatchFailure> = entries
        .iter()
        .filter_map(|e| {
            Some(BatchFailure {
                index: e.id().parse().ok()?,
                code: e.code().to_string(),
                message: e.message().unwrap_or_default().to_string(),
                sender_fault: e.sender_fault(),
            })
        })
        .collect();
    out.sort_by_key(|f| f.index);
    out
}

/// The entries of one batch call, each with its index as id (how [`failures`] names them); more
/// than [`MAX_BATCH`] is an error.
fn batch_entries<I, T>(
    call: &str,
    items: &[I],
    entry: impl Fn(String, &I) -> Result<T, QueueError>,
) -> Result<Vec<T>, QueueError> {
    if items.len() > MAX_BATCH {
        return Err(QueueError::Rejected(format!(
            "{call} of {} entries; SQS accepts at most {MAX_BATCH}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| entry(i.to_string(), item))
        .collect()
}

/// A batch entry the SDK could not build (a required field missing).
fn unbuilt(e: aws_sdk_sqs::error::BuildError) -> QueueError {
    QueueError::Rejected(e.to_string())
}

fn attribute_values(
    attributes: &BTreeMap<String, String>,
) -> Result<Option<std::collections::HashMap<String, MessageAttributeValue>>, QueueError> {
    if attributes.is_empty() {
        return Ok(None);
    }
    attributes
        .iter()
        .map(|(k, v)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map(|value| (k.clone(), value))
                .map_err(|e| QueueError::Rejected(format!("message attribute {k}: {e}")))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[async_trait]
impl Queue for SqsQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(secs(wait))
            .visibility_timeout(secs(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .customize()
            // One attempt: a retried receive after a lost reply strands what the first one took.
            .config_override(
                aws_sdk_sqs::config::Builder::default()
                    .retry_config(RetryConfig::standard().with_max_attempts(1)),
            )
            .send()
            .await
            .map_err(|e| classify("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| ReceivedMessage {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: receive_count(m).unwrap_or(1),
                attributes: string_attributes(m),
            })
            .collect())
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>, QueueError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let entries = batch_entries("DeleteMessageBatch", receipts, |id, receipt| {
            DeleteMessageBatchRequestEntry::builder()
                .id(id)
                .receipt_handle(receipt)
                .build()
                .map_err(unbuilt)
        })?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify("DeleteMessageBatch", e))?;
        Ok(failures(out.failed()))
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(timeout))
            .send()
            .await
            .map_err(|e| classify("ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let request = batch_entries(
            "ChangeMessageVisibilityBatch",
            entries,
            |id, (receipt, timeout)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id)
                    .receipt_handle(receipt)
                    .visibility_timeout(secs(*timeout))
                    .build()
                    .map_err(unbuilt)
            },
        )?;
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(request))
            .send()
            .await
            .map_err(|e| classify("ChangeMessageVisibilityBatch", e))?;
        Ok(failures(out.failed()))
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(&message.body)
            .set_message_attributes(attribute_values(&message.attributes)?)
            .send()
            .await
            .map_err(|e| classify("SendMessage", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let entries = batch_entries("SendMessageBatch", messages, |id, m| {
            SendMessageBatchRequestEntry::builder()
                .id(id)
                .message_body(&m.body)
                .set_message_attributes(attribute_values(&m.attributes)?)
                .build()
                .map_err(unbuilt)
        })?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify("SendMessageBatch", e))?;
        Ok(failures(out.failed()))
    }

    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| classify("GetQueueAttributes", e))?;
        let get = |name: QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    fn max_receive_count(&self) -> Option<u32> {
        self.max_receive_count
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>> {
        self.dead_letter.clone().map(|q| q as Arc<dyn Queue>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policy_parses_number_or_string_counts() {
        let expected = Some(Redrive {
            dead_letter_arn: "arn:aws:sqs:us-east-1:123456789012:dlq".into(),
            max_receive_count: 5,
        });
        assert_eq!(
            parse_redrive(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":5}"#
            ),
            expected
        );
        assert_eq!(
            parse_redrive(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":"5"}"#
            ),
            expected
        );
        assert_eq!(parse_redrive(r#"{"maxReceiveCount":5}"#), None);
    }

    #[test]
    fn queue_urls_split_into_account_and_name() {
        assert_eq!(
            split_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs-dlq"),
            Some(("123456789012", "jobs-dlq"))
        );
        assert_eq!(
            split_queue_url("http://127.0.0.1:5000/000000000000/q/"),
            Some(("000000000000", "q"))
        );
        assert_eq!(split_queue_url("jobs-dlq"), None);
        assert_eq!(split_queue_url("http://host/q"), None);
    }

    #[test]
    fn arn_splits_into_account_and_name() {
        assert_eq!(
            split_arn("arn:aws:sqs:eu-west-1:123456789012:jobs-dlq"),
            Some(("123456789012", "jobs-dlq"))
        );
        assert_eq!(split_arn("arn:aws:sns:eu-west-1:1:topic"), None);
        assert_eq!(split_arn("jobs-dlq"), None);
    }

    #[test]
    fn error_codes_map_to_caller_actions() {
        let t = || "x".to_string();
        assert!(matches!(
            classify_code("ReceiptHandleIsInvalid", Some(400), t()),
            QueueError::ReceiptInvalid(_)
        ));
        assert!(matches!(
            classify_code("AWS.SimpleQueueService.NonExistentQueue", Some(400), t()),
            QueueError::NotFound(_)
        ));
        assert!(classify_code("ThrottlingException", Some(400), t()).is_transient());
        assert!(classify_code("", Some(503), t()).is_transient());
        assert!(matches!(
            classify_code("InvalidParameterValue", Some(400), t()),
            QueueError::Rejected(_)
        ));
        for (code, message) in [
            ("ReceiptHandleIsInvalid", "The receipt handle has expired"),
            ("AWS.SimpleQueueService.ReceiptHandleIsInvalid", "x"),
            ("AWS.SimpleQueueService.MessageNotInflight", "x"),
            (
                "InvalidParameterValue",
                "Value AQEB for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.",
            ),
            (
                "InvalidParameterValue",
                "Value AQEB for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.",
            ),
        ] {
            let text = format!("ChangeMessageVisibility: {code}: {message}");
            assert!(
                matches!(
                    classify_code(code, Some(400), text),
                    QueueError::ReceiptInvalid(_)
                ),
                "{code}: {message}"
            );
        }
        assert!(matches!(
            classify_code(
                "InvalidParameterValue",
                Some(400),
                "SendMessage: InvalidParameterValue: Message must be shorter than 262144 bytes."
                    .into()
            ),
            QueueError::Rejected(_)
        ));
    }
}
