//! Loading the workspace file at cold start, from S3 or from the deployment package.

use anyhow::Context;
use tributary_core::config::WorkspaceConfig;
use tributary_core::ports::ObjectStore;

use crate::AwsClients;

/// Reads and checks the workspace file named by `uri`: `s3://bucket/key` or a path. Errors name the location and
/// the line of each problem.
pub async fn load_workspace(clients: &AwsClients, uri: &str) -> anyhow::Result<WorkspaceConfig> {
    let text = read_location(clients, uri).await?;
    tributary_core::config::load(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("{uri}: {e}")).collect();
        anyhow::anyhow!(lines.join("\n"))
    })
}

/// The text at `s3://bucket/key` or at a path inside the deployment package. Errors name the location, never the
/// content (it may be a private key).
pub async fn read_location(clients: &AwsClients, uri: &str) -> anyhow::Result<String> {
    let bytes = match uri.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, key) =
                rest.split_once('/').with_context(|| format!("{uri}: must look like s3://bucket/key"))?;
            clients
                .s3_store(bucket, "")
                .get(key)
                .await
                .map_err(|e| anyhow::anyhow!("reading {uri}: {e}"))?
                .with_context(|| format!("{uri} does not exist"))?
        }
        None => std::fs::read(uri).with_context(|| format!("reading {uri}"))?,
    };
    String::from_utf8(bytes).with_context(|| format!("{uri} is not UTF-8 text"))
}
