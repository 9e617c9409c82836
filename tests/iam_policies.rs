//! Permissions proven, not assumed: the real binary (daemon and `enqueue`) runs end to end with
//! its SQS and Bedrock traffic going through recording proxies; every recorded call, translated to
//! the production ARNs of deploy/ecs/task-definition.json, must be allowed by the shipped policy of
//! its principal (task role for the daemon, enqueue policy for producers). moto does not enforce
//! IAM, so this is the only thing standing between a missing permission and a crash-looping pod.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use profile_worker::generate::CallKind;
use profile_worker::model::JobStatus;
use profile_worker::store::JobStore;
use serde_json::{Value, json};
use support::aws_proxy::{AwsCall, RecordingProxy};
use support::bedrock::{FakeBedrock, FakeReply};
use support::daemon::{Daemon, command};
use support::db::TestDb;
use support::iam::{Authorization, Decision, Deployment, Policy, decide, deploy_file, glob};
use support::sqs::{TestQueue, counts, eventually, moto_url};

const HANG_GUARD: Duration = Duration::from_secs(120);

fn cli(env: &[(&str, &str)], args: &[&str]) -> Value {
    let mut cmd: Command = command();
    cmd.args(args).envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn shipped(name: &str) -> Policy {
    Policy::load(&deploy_file(name))
}

/// A copy of a shipped policy file with `edit` applied, written to disk and loaded from there.
fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> Policy {
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy_file(name)).unwrap()).unwrap();
    edit(&mut doc);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    Policy::load(&path)
}

/// Removes `action` from every statement of a policy document (statements left empty go).
fn without_action(doc: &mut Value, action: &str) {
    let statements = doc["Statement"].as_array_mut().unwrap();
    for st in statements.iter_mut() {
        let list = match &st["Action"] {
            Value::String(a) => vec![Value::String(a.clone())],
            Value::Array(a) => a.clone(),
            _ => continue,
        };
        st["Action"] = Value::Array(list.into_iter().filter(|a| a != action).collect());
    }
    statements.retain(|st| st["Action"].as_array().is_some_and(|a| !a.is_empty()));
}

fn operations(calls: &[AwsCall]) -> BTreeSet<String> {
    calls
        .iter()
        .map(|c| format!("{}:{}", c.service, c.operation))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_daemon_and_the_cli_is_allowed_by_the_shipped_policies() {
    let db = TestDb::migrated().await;
    support::jobs::seed_collection(&db).await;
    let queue = TestQueue::create(&moto_url(), 3).await;
    let fake = FakeBedrock::start().await;
    let producer_sqs = RecordingProxy::start(&moto_url());
    let daemon_sqs = RecordingProxy::start(&moto_url());
    let daemon_bedrock = RecordingProxy::start(&fake.url());
    let daemon_secrets = RecordingProxy::start(&moto_url());
    // The daemon knows the database by its secret, as the task definition deploys it.
    let secret_arn = support::secrets::create_database_secret(&db.url).await;

    // As deployed with the chart's defaults: the queue by name, no dead_letter_url (start-up
    // resolves the DLQ from the RedrivePolicy), a model behind an inference profile.
    let common = [
        ("DATABASE_URL", db.url.as_str()),
        ("BMX_PROFILE_GENERATION_QUEUE_NAME", queue.name.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let producer_url = producer_sqs.url();
    let mut producer_env = common.to_vec();
    producer_env.push(("PROFILE_WORKER_QUEUE__ENDPOINT_URL", &producer_url));
    cli(
        &producer_env,
        &["enqueue", "--entity", "author:1", "--json"],
    );
    let started = cli(&producer_env, &["enqueue", "--all", "--json"]);
    let job_id = started["job_id"].as_str().expect("job id").to_string();

    // One biography comes back through SQS (retry backoff), one message is poison (DLQ).
    fake.push(CallKind::Biography, [FakeReply::NoText]);
    queue.send("this is not a job message").await;
    let (sqs_url, bedrock_url) = (daemon_sqs.url(), daemon_bedrock.url());
    let secrets_url = daemon_secrets.url();
    let mut daemon_env: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .filter(|(k, _)| *k != "DATABASE_URL")
        .collect();
    daemon_env.extend([
        ("DATABASE_SECRET_ARN", secret_arn.as_str()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_url.as_str()),
        ("PROFILE_WORKER_QUEUE__ENDPOINT_URL", sqs_url.as_str()),
        ("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "1"),
        ("PROFILE_WORKER_CONSUMER__RETRY_BASE_SECONDS", "1"),
        ("PROFILE_WORKER_GENERATOR__BACKEND", "bedrock"),
        (
            "PROFILE_WORKER_GENERATOR__ENDPOINT_URL",
            bedrock_url.as_str(),
        ),
        ("PROFILE_WORKER_GENERATOR__RETRY_BASE_MS", "1"),
        ("ENTITY_PROFILE_MODEL", "sonnet"),
    ]);
    let daemon = Daemon::start(&daemon_env);
    let store = db.store();
    eventually("the job completes", HANG_GUARD, || {
        let (store, id) = (&store, job_id.clone());
        async move { store.job(&id).await.unwrap().unwrap().status == JobStatus::Completed }
    })
    .await;
    eventually("the poison message reaches the DLQ", HANG_GUARD, || {
        let (client, url) = (&queue.client, queue.dlq_url.clone());
        async move { counts(client, &url).await.0 == 1 }
    })
    .await;
    daemon.terminate_off_runtime(Duration::from_secs(60)).await;

    let deployment = Deployment::from_task_definition(&queue.name);
    let daemon_calls = [
        daemon_sqs.calls(),
        daemon_bedrock.calls(),
        daemon_secrets.calls(),
    ]
    .concat();
    let producer_calls = producer_sqs.calls();
    // The run exercised every kind of call the daemon makes, so the check below is not vacuous.
    let seen = operations(&daemon_calls);
    for op in [
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessageBatch",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "bedrock:Converse",
        "secretsmanager:GetSecretValue",
    ] {
        assert!(seen.contains(op), "the run made no {op}: {seen:?}");
    }
    let dlq = format!("{}-dlq", queue.name);
    assert!(
        daemon_calls.iter().any(|c| c.operation == "GetQueueUrl"
            && matches!(&c.target, support::aws_proxy::Target::Queue { name, .. } if *name == dlq)),
        "start-up resolved the DLQ by name"
    );
    assert_eq!(
        operations(&producer_calls),
        ["sqs:GetQueueUrl", "sqs:SendMessage", "sqs:SendMessageBatch"]
            .map(String::from)
            .into(),
        "enqueue calls"
    );

    let task_role = [shipped("task-role-policy.json")];
    let enqueue = [shipped("enqueue-policy.json")];
    let denied = deployment.denials(&task_role, &daemon_calls);
    assert!(
        denied.is_empty(),
        "deploy/ecs/task-role-policy.json denies calls the daemon makes:\n{}",
        denied.join("\n")
    );
    let denied = deployment.denials(&enqueue, &producer_calls);
    assert!(
        denied.is_empty(),
        "deploy/ecs/enqueue-policy.json denies calls `enqueue` makes:\n{}",
        denied.join("\n")
    );
    let needed: BTreeSet<String> = daemon_calls
        .iter()
        .flat_map(|c| deployment.authorizations(c).unwrap())
        .map(|a| format!("{} {}", a.action, a.resource))
        .collect();
    eprintln!(
        "daemon needs:\n{}",
        needed.iter().cloned().collect::<Vec<_>>().join("\n")
    );

    // The check fails when a needed permission is removed from a policy file: each action in turn.
    let actions: BTreeSet<String> = needed
        .iter()
        .map(|n| n.split(' ').next().unwrap().to_string())
        .collect();
    for action in &actions {
        let policy = edited("task-role-policy.json", |doc| without_action(doc, action));
        let denied = deployment.denials(&[policy], &daemon_calls);
        assert!(
            denied.iter().any(|d| d.starts_with(&format!("{action} "))),
            "removing {action} must be caught, got {denied:?}"
        );
    }
    for action in ["sqs:GetQueueUrl", "sqs:SendMessage"] {
        let policy = edited("enqueue-policy.json", |doc| without_action(doc, action));
        assert!(
            !deployment.denials(&[policy], &producer_calls).is_empty(),
            "{action}"
        );
    }
    // The policy as shipped before: GetQueueUrl on the main queue only, so the DLQ lookup fails.
    let before = edited("task-role-policy.json", |doc| {
        for st in doc["Statement"].as_array_mut().unwrap() {
            if st["Sid"] == "DeadLetterPoisonMessages" {
                st["Action"] = json!(["sqs:SendMessage"]);
            }
        }
    });
    assert_eq!(
        deployment.denials(&[before], &daemon_calls),
        vec![format!(
            "sqs:GetQueueUrl on arn:aws:sqs:us-west-2:123456789012:{} (GetQueueUrl): ImplicitDeny",
            deployment.dead_letter_queue
        )]
    );
    // An explicit Deny beside the shipped Allow wins.
    let deny = Policy::parse(
        "deny",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "NoDlq", "Effect": "Deny", "Action": "sqs:*", "Resource": "arn:aws:sqs:*:*:*-dlq"}]}),
    );
    let denied = deployment.denials(&[shipped("task-role-policy.json"), deny], &daemon_calls);
    assert!(
        denied
            .iter()
            .any(|d| d.ends_with("ExplicitDeny(\"NoDlq\")")),
        "{denied:?}"
    );
}

fn auth(action: &str, resource: &str, context: &[(&str, &str)]) -> Authorization {
    Authorization {
        action: action.into(),
        resource: resource.into(),
        context: context
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
    }
}

#[test]
fn the_evaluator_follows_iam_rules() {
    assert!(glob(
        "arn:aws:sqs:*:123:*-dlq",
        "arn:aws:sqs:us-west-2:123:jobs-dlq"
    ));
    assert!(!glob(
        "arn:aws:sqs:*:123:*-dlq",
        "arn:aws:sqs:us-west-2:123:jobs"
    ));
    assert!(glob("sqs:?etQueue*", "sqs:GetQueueUrl"));
    assert!(!glob("sqs:Get", "sqs:GetQueueUrl"));

    let policy = Policy::parse(
        "p",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Read", "Effect": "Allow", "Action": "SQS:get*", "Resource": "arn:aws:sqs:us-west-2:123:*"},
            {"Sid": "AllButDelete", "Effect": "Allow", "NotAction": ["sqs:Delete*", "sqs:Get*"], "Resource": "*"},
            {"Sid": "NoProd", "Effect": "Deny", "Action": "sqs:SendMessage", "Resource": "arn:aws:sqs:*:*:prod-*"},
            {"Sid": "ViaProfile", "Effect": "Allow", "Action": "bedrock:InvokeModel",
             "Resource": "arn:aws:bedrock:*::foundation-model/m",
             "Condition": {"StringLike": {"bedrock:InferenceProfileArn": "arn:aws:bedrock:*:123:inference-profile/*"}}}
        ]}),
    );
    let d = |a: Authorization| decide(std::slice::from_ref(&policy), &a);
    assert_eq!(
        d(auth("sqs:GetQueueUrl", "arn:aws:sqs:us-west-2:123:q", &[])),
        Decision::Allowed("Read".into())
    );
    assert_eq!(
        d(auth("sqs:GetQueueUrl", "arn:aws:sqs:us-east-1:123:q", &[])),
        Decision::ImplicitDeny
    );
    assert_eq!(
        d(auth(
            "sqs:DeleteMessage",
            "arn:aws:sqs:us-west-2:123:q",
            &[]
        )),
        Decision::ImplicitDeny
    );
    assert_eq!(
        d(auth("sqs:SendMessage", "arn:aws:sqs:us-west-2:123:q", &[])),
        Decision::Allowed("AllButDelete".into())
    );
    assert_eq!(
        d(auth(
            "sqs:SendMessage",
            "arn:aws:sqs:us-west-2:123:prod-q",
            &[]
        )),
        Decision::ExplicitDeny("NoProd".into())
    );
    let model = "arn:aws:bedrock:us-east-2::foundation-model/m";
    assert_eq!(
        d(auth("bedrock:InvokeModel", model, &[])),
        Decision::Allowed("AllButDelete".into()),
        "NotAction allows everything not listed"
    );
    let strict = Policy::parse(
        "q",
        &json!({"Version": "2012-10-17", "Statement": [policy_statement_via_profile()]}),
    );
    let ds = |a: Authorization| decide(std::slice::from_ref(&strict), &a);
    assert_eq!(
        ds(auth("bedrock:InvokeModel", model, &[])),
        Decision::ImplicitDeny
    );
    // Through an inference profile of the account only.
    for (profile, want) in [
        (
            "arn:aws:bedrock:us-west-2:123:inference-profile/us.m",
            Decision::Allowed("ViaProfile".into()),
        ),
        (
            "arn:aws:bedrock:us-west-2:999:inference-profile/us.m",
            Decision::ImplicitDeny,
        ),
    ] {
        let via = [("bedrock:InferenceProfileArn", profile)];
        assert_eq!(
            ds(auth("bedrock:InvokeModel", model, &via)),
            want,
            "{profile}"
        );
    }
}

fn policy_statement_via_profile() -> Value {
    json!({"Sid": "ViaProfile", "Effect": "Allow", "Action": "bedrock:InvokeModel",
           "Resource": "arn:aws:bedrock:*::foundation-model/m",
           "Condition": {"StringLike": {"bedrock:InferenceProfileArn": "arn:aws:bedrock:*:123:inference-profile/*"}}})
}

#[test]
#[should_panic(expected = "not supported by this evaluator")]
fn an_unsupported_condition_operator_is_refused() {
    Policy::parse(
        "p",
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}),
    );
}
