//! Loading the workspace file at cold start, from S3 or from the deployment package.

use anyhow::Context;
use tributary_core::config::WorkspaceConfig;
use tributary_core::ports::ObjectStore;

use crate::AwsClients;

/// Reads and checks the workspace file named by `uri`: `s3://bucket/key` or a path. Errors name the location and
/// the line of each problem.
pub async fn load_workspace(clients: &AwsClients, uri: &str) -> anyhow::Result<WorkspaceConfig> {
    let text = match uri.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, key) = rest.split_once('/').context("WORKSPACE_CONFIG must look like s3://bucket/key")?;
            let bytes = clients
                .s3_store(bucket, "")
                .get(key)
                .await
                .map_err(|e| anyhow::anyhow!("reading workspace config {uri}: {e}"))?
                .with_context(|| format!("workspace config {uri} does not exist"))?;
            String::from_utf8(bytes).context("workspace config is not UTF-8")?
        }
        None => std::fs::read_to_string(uri).with_context(|| format!("reading workspace config {uri}"))?,
    };
    tributary_core::config::load(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("{uri}: {e}")).collect();
        anyhow::anyhow!(lines.join("\n"))
    })
}
