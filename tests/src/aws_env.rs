//! The AWS tier's environment: the moto server named by `AWS_ENDPOINT_URL`, dummy credentials, fresh names.

use std::sync::Once;

use tributary_aws::AwsClients;

/// The endpoint of the emulator; panics with instructions when unset (the AWS tier never skips).
pub fn endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "AWS_ENDPOINT_URL is not set. The AWS tier runs against a moto server and never skips: run \
             ./scripts/test.sh, or start one (`pip install \"moto[server]\"`, `moto_server -H 127.0.0.1 -p 5055 &`) \
             and set AWS_ENDPOINT_URL=http://127.0.0.1:5055"
        ),
    }
}

/// Sets dummy credentials and region unless the environment has them, once, before any client is built.
pub fn init() -> String {
    let url = endpoint();
    static DEFAULTS: Once = Once::new();
    DEFAULTS.call_once(|| {
        for (name, value) in
            [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")]
        {
            if std::env::var_os(name).is_none_or(|v| v.is_empty()) {
                // Safe enough here: called once, before the test starts any thread that reads the environment.
                std::env::set_var(name, value);
            }
        }
    });
    url
}

/// Clients configured from the environment, as the functions build them (one per test: pools belong to the
/// test's runtime).
pub async fn clients() -> AwsClients {
    init();
    AwsClients::from_env().await
}

/// A resource name unique to this run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
