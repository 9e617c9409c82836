//! The producer snippets of docs/deploy.md (aws CLI, boto3, Node with AWS SDK v3), executed as
//! written against moto — only the queue name and region are swapped for the test's — through the
//! recording proxy: each must deliver a message the daemon accepts, and every call it makes must be
//! allowed by deploy/ecs/enqueue-policy.json. The tools come from tools/producers (scripts/services).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use profile_worker::pipeline::message::parse;
use support::aws_proxy::RecordingProxy;
use support::iam::{Deployment, Policy, deploy_file};
use support::sqs::{TestQueue, moto_url};

const DOC_QUEUE: &str = "bluemoxon-prod-profile-generation-jobs";
const DOC_REGION: &str = "us-west-2";

/// The fenced block after `<!-- producer-snippet: NAME -->` in docs/deploy.md.
fn snippet(name: &str) -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy.md"))
        .unwrap();
    let marker = format!("<!-- producer-snippet: {name} -->");
    let after = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/deploy.md has no {marker}"))
        .1;
    let block = after.trim_start().split_once('\n').expect("fence line").1;
    block
        .split_once("\n```")
        .expect("closing fence")
        .0
        .to_string()
}

fn producers_dir() -> PathBuf {
    let dir = std::env::var("PW_TEST_PRODUCERS").unwrap_or_else(|_| {
        panic!("PW_TEST_PRODUCERS is unset: run scripts/test (scripts/services installs the producer tools)")
    });
    PathBuf::from(dir)
}

/// Runs one snippet with the test's queue and region, its AWS calls going to `endpoint`.
fn run(name: &str, queue: &str, endpoint: &str) {
    let code = snippet(name)
        .replace(DOC_QUEUE, queue)
        .replace(DOC_REGION, "us-east-1");
    let tools = producers_dir();
    let mut cmd = match name {
        "aws-cli" => {
            // AWS CLI v1 replaces any configured SQS endpoint with its built-in one unless
            // --endpoint-url is given, so an `aws` shim first on PATH adds it; the snippet's text
            // runs unchanged.
            let shim = tools.join("shim");
            std::fs::create_dir_all(&shim).unwrap();
            std::fs::write(
                shim.join("aws"),
                format!(
                    "#!/bin/sh\nexec {} --endpoint-url \"$AWS_ENDPOINT_URL_SQS\" \"$@\"\n",
                    tools.join("venv/bin/aws").display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(shim.join("aws"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            let mut c = Command::new("bash");
            c.args(["-euo", "pipefail", "-c", &code]);
            c.env(
                "PATH",
                format!(
                    "{}:{}",
                    shim.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
            c
        }
        "boto3" => {
            let mut c = Command::new(tools.join("venv/bin/python"));
            c.args(["-c", &code]);
            c
        }
        "node" => {
            // An ES module next to tools/producers/node_modules, so the import resolves.
            let file = tools.join(format!("snippet-{}.mjs", uuid::Uuid::new_v4().simple()));
            std::fs::write(&file, &code).unwrap();
            let mut c = Command::new("node");
            c.arg(&file);
            c
        }
        other => panic!("unknown snippet {other}"),
    };
    let out = cmd
        .env("AWS_ENDPOINT_URL_SQS", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap_or_else(|e| panic!("{name}: cannot start ({e}); run scripts/services start"));
    if name == "node" {
        for entry in std::fs::read_dir(&tools).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("snippet-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    assert!(
        out.status.success(),
        "{name} snippet failed:\n{code}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_documented_producer_sends_a_message_the_daemon_accepts() {
    let queue = TestQueue::create(&moto_url(), 3).await;
    let enqueue_policy = [Policy::load(&deploy_file("enqueue-policy.json"))];
    let deployment = Deployment::from_task_definition(&queue.name);
    for name in ["aws-cli", "boto3", "node"] {
        let proxy = RecordingProxy::start(&moto_url());
        run(name, &queue.name, &proxy.url());
        let messages = queue.drain().await;
        assert_eq!(messages.len(), 1, "{name} sent {messages:?}");
        let body = messages[0].body().unwrap_or_default();
        let message =
            parse(body, 65_536).unwrap_or_else(|p| panic!("{name}: {body}: {}", p.reason));
        assert_eq!(message.entity.to_string(), "author:42", "{name}");
        assert_eq!(message.job_id, None, "{name}");
        let calls = proxy.calls();
        let ops: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
        assert_eq!(ops, ["GetQueueUrl", "SendMessage"], "{name}");
        let denied = deployment.denials(&enqueue_policy, &calls);
        assert!(denied.is_empty(), "{name}: {denied:?}");
    }
}
