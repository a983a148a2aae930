//! CloudWatch Embedded Metric Format (EMF) lines. Lambda ships stdout to CloudWatch Logs, which turns these JSON
//! lines into metrics with no API call and no agent. Values are counts; dimensions never hold PII.

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "Tributary";

/// One EMF document: a set of dimensions and counters, all emitted at `timestamp_ms`.
#[derive(Debug, Clone, Default)]
pub struct Emf {
    dimensions: Vec<(String, String)>,
    counters: Vec<(String, u64)>,
}

impl Emf {
    pub fn new() -> Self {
        Emf::default()
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.to_string(), value.to_string()));
        self
    }

    pub fn count(mut self, name: &str, value: u64) -> Self {
        self.counters.push((name.to_string(), value));
        self
    }

    /// The JSON line, or `None` when there is nothing to report.
    pub fn line(&self, timestamp_ms: i64) -> Option<String> {
        if self.counters.is_empty() {
            return None;
        }
        let dims: Vec<&str> = self.dimensions.iter().map(|(k, _)| k.as_str()).collect();
        let metrics: Vec<Value> = self.counters.iter().map(|(n, _)| json!({"Name": n, "Unit": "Count"})).collect();
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [dims], "Metrics": metrics}]}),
        );
        for (k, v) in &self.dimensions {
            doc.insert(k.clone(), Value::String(v.clone()));
        }
        for (k, v) in &self.counters {
            doc.insert(k.clone(), json!(v));
        }
        Some(Value::Object(doc).to_string())
    }
}

/// Where metric lines go: stdout on Lambda (CloudWatch EMF), elsewhere in tests and the local runtime.
pub trait MetricsSink: Send + Sync {
    fn emit(&self, line: String);
}

/// Prints EMF lines to stdout, which Lambda ships to CloudWatch Logs.
pub struct StdoutMetrics;

impl MetricsSink for StdoutMetrics {
    fn emit(&self, line: String) {
        println!("{line}");
    }
}

/// Keeps the lines in memory (tests, local runtime).
#[derive(Default)]
pub struct MemoryMetrics(pub Mutex<Vec<String>>);

impl MetricsSink for MemoryMetrics {
    fn emit(&self, line: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(line);
        }
    }
}

impl<T: MetricsSink + ?Sized> MetricsSink for Arc<T> {
    fn emit(&self, line: String) {
        (**self).emit(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_has_the_cloudwatch_directive_and_values() {
        let line = Emf::new()
            .dimension("SourceId", "web")
            .count("EventsAccepted", 3)
            .count("Rejected.missing_id", 1)
            .line(42)
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 42);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0], "SourceId");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Name"], "Rejected.missing_id");
        assert_eq!(v["SourceId"], "web");
        assert_eq!(v["EventsAccepted"], 3);
        assert!(Emf::new().dimension("a", "b").line(0).is_none());
    }
}
