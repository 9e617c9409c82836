//! A small evaluator of IAM identity policies, enough to judge the calls the daemon and the CLI
//! make (recorded by [`super::aws_proxy`]) against the shipped documents in `deploy/ecs/`.
//!
//! Covered: `Effect` Allow/Deny, `Action`/`NotAction` and `Resource`/`NotResource` as a string or a
//! list with `*` and `?` wildcards (actions compared case-insensitively), and `Condition` blocks
//! with the String and Arn operators (values ORed, keys and operators ANDed; a missing key fails a
//! positive operator and satisfies a negated one). An explicit Deny wins; otherwise any Allow
//! allows; otherwise the call is implicitly denied. Any other condition operator makes loading
//! fail, so a policy using one cannot be judged wrongly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::aws_proxy::{AwsCall, Target};

/// Repository path of a shipped deployment file.
pub fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/ecs")
        .join(name)
}

/// One authorization the request context asks IAM for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Authorization {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the statement with this Sid (or index).
    Allowed(String),
    /// An explicit Deny statement matched.
    ExplicitDeny(String),
    /// No statement allows it.
    ImplicitDeny,
}

#[derive(Debug, Clone)]
struct Statement {
    sid: String,
    allow: bool,
    actions: Vec<String>,
    not_action: bool,
    resources: Vec<String>,
    not_resource: bool,
    /// (operator, key, values)
    conditions: Vec<(String, String, Vec<String>)>,
}

/// A parsed identity policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    statements: Vec<Statement>,
}

const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
];

fn strings(v: &Value, what: &str) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .unwrap_or_else(|| panic!("{what}: not a string: {x}"))
                    .to_string()
            })
            .collect(),
        other => panic!("{what}: expected a string or a list, got {other}"),
    }
}

impl Policy {
    pub fn load(path: &Path) -> Policy {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Policy::parse(&path.display().to_string(), &doc)
    }

    pub fn parse(name: &str, doc: &Value) -> Policy {
        assert_eq!(doc["Version"], "2012-10-17", "{name}: policy Version");
        let statements = match &doc["Statement"] {
            Value::Array(a) => a.clone(),
            s @ Value::Object(_) => vec![s.clone()],
            other => panic!("{name}: Statement is {other}"),
        };
        let statements = statements
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let sid = st["Sid"].as_str().map_or_else(|| format!("#{i}"), str::to_string);
                let allow = match st["Effect"].as_str() {
                    Some("Allow") => true,
                    Some("Deny") => false,
                    other => panic!("{name} {sid}: Effect {other:?}"),
                };
                let (actions, not_action) = match (st.get("Action"), st.get("NotAction")) {
                    (Some(a), None) => (strings(a, &sid), false),
                    (None, Some(a)) => (strings(a, &sid), true),
                    _ => panic!("{name} {sid}: exactly one of Action and NotAction"),
                };
                let (resources, not_resource) = match (st.get("Resource"), st.get("NotResource")) {
                    (Some(r), None) => (strings(r, &sid), false),
                    (None, Some(r)) => (strings(r, &sid), true),
                    _ => panic!("{name} {sid}: exactly one of Resource and NotResource"),
                };
                let mut conditions = Vec::new();
                if let Some(block) = st.get("Condition") {
                    for (op, keys) in block.as_object().expect("Condition object") {
                        assert!(
                            OPERATORS.contains(&op.as_str()),
                            "{name} {sid}: condition operator {op} is not supported by this evaluator"
                        );
                        for (key, values) in keys.as_object().expect("condition keys") {
                            conditions.push((op.clone(), key.to_ascii_lowercase(), strings(values, &sid)));
                        }
                    }
                }
                Statement {
                    sid,
                    allow,
                    actions,
                    not_action,
                    resources,
                    not_resource,
                    conditions,
                }
            })
            .collect();
        Policy {
            name: name.to_string(),
            statements,
        }
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Statement {
    fn applies(&self, req: &Authorization) -> bool {
        let action = self
            .actions
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), &req.action.to_ascii_lowercase()));
        let resource = self.resources.iter().any(|r| glob(r, &req.resource));
        action != self.not_action
            && resource != self.not_resource
            && self.conditions.iter().all(|(op, key, values)| {
                let negated = op.contains("Not");
                let Some(actual) = req.context.get(key) else {
                    return negated;
                };
                let like = op.ends_with("Like");
                let hit = values
                    .iter()
                    .any(|v| if like { glob(v, actual) } else { v == actual });
                hit != negated
            })
    }
}

/// IAM's decision for one authorization under the union of `policies`.
pub fn decide(policies: &[Policy], req: &Authorization) -> Decision {
    let matching: Vec<&Statement> = policies
        .iter()
        .flat_map(|p| &p.statements)
        .filter(|s| s.applies(req))
        .collect();
    if let Some(deny) = matching.iter().find(|s| !s.allow) {
        return Decision::ExplicitDeny(deny.sid.clone());
    }
    matching
        .first()
        .map_or(Decision::ImplicitDeny, |s| Decision::Allowed(s.sid.clone()))
}

/// The production names the shipped policies are written for, read from the ECS task definition,
/// and the test queue that stands in for them.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub region: String,
    pub account: String,
    pub queue: String,
    pub dead_letter_queue: String,
    /// The test's queue name; `{test_queue}-dlq` is its dead-letter queue.
    pub test_queue: String,
    /// ARN of the database secret (`DATABASE_SECRET_ARN`); the one secret a test reads stands
    /// for it.
    pub database_secret: String,
}

impl Deployment {
    /// From `deploy/ecs/task-definition.json`, mapping `test_queue` onto its queue.
    pub fn from_task_definition(test_queue: &str) -> Deployment {
        let path = deploy_file("task-definition.json");
        let td: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let env: BTreeMap<String, String> = td["containerDefinitions"][0]["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        let queue = env["BMX_PROFILE_GENERATION_QUEUE_NAME"].clone();
        let dead_letter_queue = env
            .get("PROFILE_WORKER_QUEUE__DEAD_LETTER_URL")
            .map_or_else(
                || format!("{queue}-dlq"),
                |u| u.rsplit('/').next().unwrap().to_string(),
            );
        Deployment {
            region: env["AWS_REGION"].clone(),
            account: td["taskRoleArn"]
                .as_str()
                .unwrap()
                .split(':')
                .nth(4)
                .unwrap()
                .into(),
            queue,
            dead_letter_queue,
            test_queue: test_queue.to_string(),
            database_secret: env["DATABASE_SECRET_ARN"].clone(),
        }
    }

    /// The authorizations IAM evaluates for one call, in production names.
    pub fn authorizations(&self, call: &AwsCall) -> Result<Vec<Authorization>, String> {
        let plain = |action: String, resource: String| Authorization {
            action,
            resource,
            context: BTreeMap::new(),
        };
        match (&call.target, call.service.as_str()) {
            (Target::Queue { name, .. }, "sqs") => {
                let prod = if *name == self.test_queue {
                    &self.queue
                } else if *name == format!("{}-dlq", self.test_queue) {
                    &self.dead_letter_queue
                } else {
                    return Err(format!("{call:?}: a queue the test did not set up"));
                };
                // The batch APIs are authorized by their single-message actions.
                let action = call
                    .operation
                    .strip_suffix("Batch")
                    .unwrap_or(&call.operation);
                Ok(vec![plain(
                    format!("sqs:{action}"),
                    format!("arn:aws:sqs:{}:{}:{prod}", self.region, self.account),
                )])
            }
            (Target::Model(id), "bedrock") => {
                // Converse is authorized as InvokeModel, ConverseStream as InvokeModelWithResponseStream.
                let action = match call.operation.as_str() {
                    "Converse" | "InvokeModel" => "bedrock:InvokeModel",
                    "ConverseStream" | "InvokeModelWithResponseStream" => {
                        "bedrock:InvokeModelWithResponseStream"
                    }
                    other => return Err(format!("unknown Bedrock operation {other}")),
                };
                let geo = ["us.", "eu.", "apac.", "global."]
                    .iter()
                    .find_map(|p| id.strip_prefix(p));
                Ok(match geo {
                    // Through an inference profile: the profile, then the model it routes to in
                    // the source region, with the profile in the request context.
                    Some(model) => {
                        let profile = format!(
                            "arn:aws:bedrock:{}:{}:inference-profile/{id}",
                            self.region, self.account
                        );
                        vec![
                            plain(action.into(), profile.clone()),
                            Authorization {
                                action: action.into(),
                                resource: format!(
                                    "arn:aws:bedrock:{}::foundation-model/{model}",
                                    self.region
                                ),
                                context: [("bedrock:inferenceprofilearn".to_string(), profile)]
                                    .into(),
                            },
                        ]
                    }
                    None => vec![plain(
                        action.into(),
                        format!("arn:aws:bedrock:{}::foundation-model/{id}", self.region),
                    )],
                })
            }
            (Target::Secret(_), "secretsmanager") => Ok(vec![plain(
                format!("secretsmanager:{}", call.operation),
                self.database_secret.clone(),
            )]),
            _ => Err(format!("{call:?}: no IAM mapping for this call")),
        }
    }

    /// Every denial of `calls` under `policies`, one line each; empty when all are allowed.
    pub fn denials(&self, policies: &[Policy], calls: &[AwsCall]) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for call in calls {
            if !seen.insert(call.clone()) {
                continue;
            }
            match self.authorizations(call) {
                Err(e) => out.push(e),
                Ok(auths) => {
                    for a in auths {
                        match decide(policies, &a) {
                            Decision::Allowed(_) => {}
                            d => out.push(format!(
                                "{} on {} ({}{}): {d:?}",
                                a.action,
                                a.resource,
                                call.operation,
                                if a.context.is_empty() {
                                    String::new()
                                } else {
                                    format!(", context {:?}", a.context)
                                }
                            )),
                        }
                    }
                }
            }
        }
        out
    }
}
