//! The SAM template deployed on the moto emulator by `infra/emulator.py`, and what the stack gives each function:
//! its environment variables (as Lambda would set them, Refs resolved by CloudFormation), the queue that triggers it,
//! the HTTP routes and schedules that invoke it. Functions are named by their cargo binary (the template's
//! `BuildProperties.Binary`), so a test reaches the crate whose `lambda::build` the binary runs.

use std::collections::BTreeMap;
use std::env::VarError;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The Python that has moto, boto3 and aws-sam-translator: `TRIBUTARY_PYTHON` (set by scripts/test.sh), else the
/// repository's venv. Panics with instructions when neither exists: the AWS tier never skips.
pub fn python() -> PathBuf {
    let path = match std::env::var("TRIBUTARY_PYTHON") {
        Ok(p) if !p.trim().is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".test-tools/venv/bin/python"),
    };
    assert!(
        path.is_file(),
        "no Python for infra/emulator.py at {}: run `bash scripts/test.sh --setup-only` (it creates \
         .test-tools/venv with moto, boto3 and aws-sam-translator), or set TRIBUTARY_PYTHON to such a Python",
        path.display()
    );
    path
}

/// One queue → function wiring of the template (an SQS event source mapping), resolved to the deployed queue.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The template's logical id of the mapping.
    pub logical_id: String,
    /// The cargo binary of the function it invokes.
    pub binary: String,
    /// The queue's logical id, URL and ARN.
    pub queue: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: usize,
    pub function_response_types: Vec<String>,
}

/// A stack created on the emulator, as `infra/emulator.py deploy` reports it.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub report: Value,
}

impl Deployment {
    /// Translates infra/template.yaml (or the template `TRIBUTARY_TEMPLATE` names, to prove a draft before it
    /// replaces the real one) and creates it on the emulator at `endpoint` with these parameters (blocking: a few
    /// seconds). Panics with the script's output when the deployment fails.
    pub fn create(endpoint: &str, stack_name: &str, parameters: &[(&str, &str)]) -> Deployment {
        let root = workspace_root();
        let template = match std::env::var("TRIBUTARY_TEMPLATE") {
            Ok(t) if !t.trim().is_empty() => PathBuf::from(t),
            _ => root.join("infra/template.yaml"),
        };
        let mut cmd = Command::new(python());
        cmd.arg(root.join("infra/emulator.py"))
            .args(["deploy", "--endpoint", endpoint, "--stack-name", stack_name, "--template"])
            .arg(&template)
            .current_dir(&root);
        for (name, value) in parameters {
            cmd.arg("--parameter").arg(format!("{name}={value}"));
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("running infra/emulator.py: {e}"));
        assert!(
            out.status.success(),
            "infra/emulator.py deploy failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("infra/emulator.py printed no JSON report ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
        });
        Deployment { report }
    }

    /// The logical id of the one function built from `binary`; panics unless exactly one is.
    pub fn function_id(&self, binary: &str) -> String {
        let ids: Vec<String> =
            self.functions().into_iter().filter(|(_, f)| f["binary"] == binary).map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 1, "the stack should have exactly one function built from binary {binary}: {ids:?}");
        ids[0].clone()
    }

    /// Every function of the stack by logical id.
    pub fn functions(&self) -> BTreeMap<String, Value> {
        let all = self.report["functions"].as_object().expect("the report lists functions");
        all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The cargo binary of the function with this logical id.
    pub fn binary_of(&self, logical_id: &str) -> String {
        let f = &self.report["functions"][logical_id];
        f["binary"].as_str().unwrap_or_else(|| panic!("function {logical_id} has no Binary: {f}")).to_string()
    }

    /// The environment variables the stack gives the function built from `binary`.
    pub fn environment(&self, binary: &str) -> BTreeMap<String, String> {
        let env = &self.report["functions"][self.function_id(binary)]["environment"];
        let vars = env.as_object().unwrap_or_else(|| panic!("{binary}: no environment in {env}"));
        vars.iter().map(|(k, v)| (k.clone(), v.as_str().expect("variables are strings").to_string())).collect()
    }

    /// `std::env::var` as the deployed function would see it: its variables and nothing else.
    pub fn env_of(&self, binary: &str) -> impl Fn(&str) -> Result<String, VarError> {
        let vars = self.environment(binary);
        move |name: &str| vars.get(name).cloned().ok_or(VarError::NotPresent)
    }

    /// One variable of the function built from `binary`; panics when the stack does not set it.
    pub fn var(&self, binary: &str, name: &str) -> String {
        self.environment(binary).remove(name).unwrap_or_else(|| panic!("the stack gives {binary} no {name}"))
    }

    /// Every SQS trigger of the stack.
    pub fn triggers(&self) -> Vec<Trigger> {
        let all = self.report["event_source_mappings"].as_array().expect("the report lists event source mappings");
        all.iter()
            .map(|m| {
                let text = |field: &str| {
                    m[field].as_str().unwrap_or_else(|| panic!("event source mapping without {field}: {m}")).to_string()
                };
                Trigger {
                    logical_id: text("logical_id"),
                    binary: self.binary_of(&text("function")),
                    queue: text("queue"),
                    queue_url: text("queue_url"),
                    queue_arn: text("event_source_arn"),
                    // CloudFormation's default for SQS.
                    batch_size: m["batch_size"].as_u64().unwrap_or(10) as usize,
                    function_response_types: m["function_response_types"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect(),
                }
            })
            .collect()
    }

    /// The one SQS trigger of the function built from `binary`.
    pub fn trigger_of(&self, binary: &str) -> Trigger {
        let found: Vec<Trigger> = self.triggers().into_iter().filter(|t| t.binary == binary).collect();
        assert_eq!(found.len(), 1, "{binary} should have exactly one SQS trigger: {found:?}");
        found.into_iter().next().expect("one trigger")
    }

    /// A queue of the stack by logical id (`url`, `arn`, `attributes`).
    pub fn queue(&self, logical_id: &str) -> &Value {
        let q = &self.report["queues"][logical_id];
        assert!(q.is_object(), "no queue {logical_id} in the stack");
        q
    }

    /// The logical id of the queue at `url`.
    pub fn queue_id_by_url(&self, url: &str) -> String {
        let queues = self.report["queues"].as_object().expect("the report lists queues");
        let found = queues.iter().find(|(_, q)| q["url"] == url).map(|(id, _)| id.clone());
        found.unwrap_or_else(|| panic!("{url} is not a queue of the stack"))
    }

    /// The logical id of the queue with this ARN.
    pub fn queue_id_by_arn(&self, arn: &str) -> String {
        let queues = self.report["queues"].as_object().expect("the report lists queues");
        let found = queues.iter().find(|(_, q)| q["arn"] == arn).map(|(id, _)| id.clone());
        found.unwrap_or_else(|| panic!("{arn} is not a queue of the stack"))
    }

    /// The cargo binary of the function behind `method path` on the HTTP API (path parameters match one segment).
    pub fn route(&self, method: &str, path: &str) -> String {
        let routes = self.report["http_routes"].as_array().expect("the report lists HTTP routes");
        let matches = |template: &str| {
            let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
            t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
        };
        let found: Vec<&Value> =
            routes.iter().filter(|r| r["method"] == method && matches(r["path"].as_str().unwrap_or(""))).collect();
        assert_eq!(found.len(), 1, "the HTTP API should route {method} {path} to one function: {found:?}");
        assert_eq!(found[0]["payload_format_version"], "2.0", "{method} {path}: payload format 2.0");
        let function = found[0]["function"].as_str().unwrap_or_else(|| panic!("{method} {path}: no function"));
        self.binary_of(function)
    }

    /// The inputs the stack's schedules invoke the function built from `binary` with.
    pub fn schedule_inputs(&self, binary: &str) -> Vec<Value> {
        let id = self.function_id(binary);
        let schedules = self.report["schedules"].as_array().expect("the report lists schedules");
        schedules
            .iter()
            .filter(|s| s["function"] == id.as_str())
            .map(|s| serde_json::from_str(s["input"].as_str().unwrap_or("{}")).expect("a schedule's input is JSON"))
            .collect()
    }

    /// A bucket of the stack by logical id (`name`, `versioning`, `notification_configuration`).
    pub fn bucket(&self, logical_id: &str) -> &Value {
        let b = &self.report["buckets"][logical_id];
        assert!(b.is_object(), "no bucket {logical_id} in the stack");
        b
    }

    /// The logical id of the bucket named `name`.
    pub fn bucket_id_by_name(&self, name: &str) -> String {
        let buckets = self.report["buckets"].as_object().expect("the report lists buckets");
        let found = buckets.iter().find(|(_, b)| b["name"] == name).map(|(id, _)| id.clone());
        found.unwrap_or_else(|| panic!("{name} is not a bucket of the stack"))
    }

    /// A table of the stack by its name (`key_schema`, `attribute_definitions`, `global_secondary_indexes`).
    pub fn table_by_name(&self, name: &str) -> &Value {
        let tables = self.report["tables"].as_object().expect("the report lists tables");
        let found = tables.values().find(|t| t["name"] == name);
        found.unwrap_or_else(|| panic!("{name} is not a table of the stack"))
    }
}
