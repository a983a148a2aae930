//! AWS adapters of Tributary's ports: [`SqsQueue`] ([`Queue`](tributary_core::ports::Queue)), [`S3Store`]
//! ([`ObjectStore`](tributary_core::ports::ObjectStore)) and [`DynamoTable`]
//! ([`TableStore`](tributary_core::ports::TableStore)), [`S3Links`] (presigned
//! [`ResultLinks`](tributary_core::dsr::ResultLinks)), plus [`admin`] helpers that create resources for tests and
//! local tooling.
//!
//! This is the only crate that names `aws_sdk_*` types, and none of them appears in its public API: callers build
//! an [`AwsClients`] from the environment and ask it for adapters.
//!
//! ```no_run
//! # async fn demo() {
//! let aws = tributary_aws::AwsClients::from_env().await;
//! aws.warm().await;
//! let events = aws.sqs_queue("https://sqs.eu-west-1.amazonaws.com/123456789012/events");
//! let imports = aws.s3_store("my-bucket", "imports");
//! let table = aws.dynamo_table("tributary");
//! # let _ = (events, imports, table);
//! # }
//! ```

pub mod admin;
mod billing;
mod dynamo;
mod error;
mod links;
mod s3;
mod sqs;
mod workspace;

pub use billing::{AwsUsage, S3Usage, SqsUsage, Usage};
pub use dynamo::DynamoTable;
pub use links::{S3Links, MAX_LINK_LIFETIME};
pub use s3::{S3Store, S3Version};
pub use sqs::SqsQueue;
pub use workspace::{load_workspace, read_location};

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tributary_core::lambda::in_execution_environment;

/// Logging for a Lambda function: JSON lines without a timestamp (CloudWatch stamps every line), level from
/// `RUST_LOG` (default `info`). Every function's `main` calls it first.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
}

/// The environment variable that points every service at another endpoint (moto, LocalStack).
pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL";

/// One SDK configuration and a client per service. Cheap to clone (the clients share one HTTP connection pool);
/// build it once at cold start and hand out adapters.
#[derive(Clone, Debug)]
pub struct AwsClients {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    /// Whether S3 is addressed path-style, i.e. every bucket is on the one endpoint host.
    s3_path_style: bool,
    /// The warm-up [`from_env`](Self::from_env) starts in a Lambda execution environment, which
    /// [`warm`](Self::warm) waits for. Shared by the clones: the first `warm` on any of them takes it.
    warming: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// What every adapter made from these clients (and from their clones) asked of AWS.
    meters: Arc<billing::Meters>,
}

impl AwsClients {
    /// Loads the standard AWS configuration chain (environment, profile, container or instance credentials,
    /// region) with the latest behaviour version. `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` are
    /// honoured by the SDK itself; when any of them is set, S3 switches to path-style addressing, which local
    /// emulators need.
    ///
    /// In a Lambda execution environment (`AWS_LAMBDA_RUNTIME_API` is set) it also starts [`warm`](Self::warm)'s
    /// connections in the background, so that they open while init reads the workspace file instead of after it;
    /// `warm` then waits for them. Where Lambda puts the credentials and the region in the environment, they are
    /// taken from there directly rather than through the provider chains.
    pub async fn from_env() -> Self {
        let clients = Self::load(None).await;
        if in_execution_environment() {
            clients.start_warming();
        }
        clients
    }

    /// Like [`from_env`](Self::from_env), but every service talks to `endpoint_url` (an emulator, a VPC
    /// endpoint), whatever the environment says; S3 uses path-style addressing.
    pub async fn with_endpoint(endpoint_url: &str) -> Self {
        Self::load(Some(endpoint_url)).await
    }

    async fn load(endpoint_url: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(client) = amazon_roots_client(endpoint_url) {
            loader = loader.http_client(client);
        }
        if let Some(region) = lambda_region_with_env_credentials() {
            // Lambda gives the execution role's credentials and the region as variables; the default chains would
            // find them there too, after building their other providers (profile files, SSO, web identity,
            // container, instance metadata) for nothing.
            loader = loader
                .region(aws_config::Region::new(region))
                .credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new());
        }
        let sdk = loader.load().await;
        let overridden = sdk.endpoint_url().is_some() || endpoint_override_in_env();
        let s3_conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(overridden).build();
        AwsClients {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            s3_path_style: overridden,
            warming: Arc::default(),
            meters: Arc::default(),
        }
    }

    /// The queue at `url` (a full SQS queue URL).
    pub fn sqs_queue(&self, url: impl Into<String>) -> SqsQueue {
        SqsQueue::new(self.sqs.clone(), url.into(), self.meters.clone())
    }

    /// Objects in `bucket`, every key under `prefix` (`""` for the bucket root; a trailing `/` is added).
    pub fn s3_store(&self, bucket: impl Into<String>, prefix: impl Into<String>) -> S3Store {
        S3Store::new(self.s3.clone(), bucket.into(), &prefix.into(), self.meters.clone())
    }

    /// Presigned download links ([`ResultLinks`](tributary_core::dsr::ResultLinks)) to objects in `bucket` under
    /// `prefix` (`""` for the bucket root), e.g. DSR exports in the results bucket.
    pub fn s3_links(&self, bucket: impl Into<String>, prefix: impl Into<String>) -> S3Links {
        S3Links::new(self.s3.clone(), bucket.into(), &prefix.into())
    }

    /// The DynamoDB table `name`, with string keys `pk` (hash) and `sk` (range).
    pub fn dynamo_table(&self, name: impl Into<String>) -> DynamoTable {
        DynamoTable::new(self.dynamodb.clone(), name.into(), self.meters.dynamodb.clone())
    }

    /// What every queue, store and table made from these clients (or their clones) has asked of AWS since they
    /// were built or last [reset](Self::reset_usage): calls and what they bill (see `billing.rs`). Benchmarks
    /// price a workload with it.
    pub fn usage(&self) -> AwsUsage {
        self.meters.usage()
    }

    /// Sets [`usage`](Self::usage) back to zero (the tables' own [`DynamoTable::usage`] are left alone).
    pub fn reset_usage(&self) {
        self.meters.reset();
    }

    /// Opens a connection to each service with a cheap call, so that the first real request of an invocation does
    /// not pay for DNS and TLS. Call it during init; failures (including missing permissions, which still open the
    /// connection) are ignored. S3 is only warmed with path-style addressing: otherwise every bucket has its own
    /// host, which [`S3Store::warm`] opens. When [`from_env`](Self::from_env) already started the warm-up in the
    /// background, this waits for it instead of starting another.
    #[tracing::instrument(skip_all)]
    pub async fn warm(&self) {
        let started = self.warming.lock().ok().and_then(|mut w| w.take());
        match started {
            // A failed task (a panic inside the SDK) only means the connections are not warm: ignored too.
            Some(task) => drop(task.await),
            None => self.warm_connections().await,
        }
    }

    /// Starts the warm-up on the current tokio runtime; without one (another executor) `warm` does it later.
    fn start_warming(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let clients = self.clone();
        let task = runtime.spawn(async move { clients.warm_connections().await });
        if let Ok(mut warming) = self.warming.lock() {
            *warming = Some(task);
        }
    }

    fn warm_connections(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let sqs = self.sqs.list_queues().max_results(1).send();
        let dynamodb = self.dynamodb.list_tables().limit(1).send();
        let s3 = self.s3_path_style.then(|| self.s3.list_buckets().max_buckets(1).send());
        async move {
            let s3 = async move {
                match s3 {
                    Some(call) => Some(call.await.is_ok()),
                    None => None,
                }
            };
            let (a, b, c) = futures::join!(sqs, s3, dynamodb);
            tracing::debug!(sqs = a.is_ok(), s3 = ?b, dynamodb = c.is_ok(), "Connections warmed.");
        }
    }
}

/// An environment variable's value, if it is set to something other than blanks.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The region the environment names (`AWS_REGION`, else `AWS_DEFAULT_REGION`).
fn env_region() -> Option<String> {
    env_value("AWS_REGION").or_else(|| env_value("AWS_DEFAULT_REGION"))
}

/// In Lambda, the region when the execution role's credentials are in the environment, as Lambda puts them (SnapStart
/// gives them through a container endpoint instead: then the default chain is needed).
fn lambda_region_with_env_credentials() -> Option<String> {
    if !in_execution_environment()
        || env_value("AWS_ACCESS_KEY_ID").is_none()
        || env_value("AWS_SECRET_ACCESS_KEY").is_none()
    {
        return None;
    }
    env_region()
}

/// The root certificates of Amazon Trust Services, which every AWS endpoint of the `aws` and `aws-us-gov`
/// partitions chains to.
const AMAZON_ROOTS_PEM: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// In Lambda, an HTTPS client like the SDK's default (rustls on aws-lc, proxy from the environment) that trusts only
/// the Amazon roots. The default reads and parses the system's whole bundle and certificate directory (~290
/// certificates), then turns them into trust anchors again for each client: about 40 % of a function's init CPU
/// (crates/bench `cold-start` under perf). `None`, i.e. the default client with the system's roots, outside Lambda;
/// with an `https` endpoint other than AWS's (an emulator or proxy with its own CA; a plain `http` emulator needs no
/// roots at all); when `SSL_CERT_FILE` or `SSL_CERT_DIR` names a trust store; and in the partitions whose endpoints
/// may chain elsewhere (China, ISO).
fn amazon_roots_client(endpoint_url: Option<&str>) -> Option<aws_sdk_s3::config::SharedHttpClient> {
    let amazon_only = tributary_core::lambda::built_in_tls_roots()
        && !endpoint_url.into_iter().chain(endpoint_overrides_in_env().iter().map(String::as_str)).any(is_https)
        && amazon_trust_services_region(&env_region().unwrap_or_default());
    amazon_only.then(|| {
        use aws_smithy_http_client::{proxy::ProxyConfig, tls, ConnectorBuilder};
        let trust = tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(AMAZON_ROOTS_PEM);
        // Infallible today (`build` only wraps the fields); on an error the SDK's default client is kept.
        let context = tls::TlsContext::builder().with_trust_store(trust).build().ok()?;
        let client = aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
            let mut builder = ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(context.clone());
            builder.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                builder.set_sleep_impl(components.sleep_impl());
            }
            builder.set_proxy_config(Some(ProxyConfig::from_env()));
            builder.build()
        });
        Some(client)
    })?
}

/// Whether `region` is in a partition whose endpoints present Amazon Trust Services certificates (`aws`,
/// `aws-us-gov`); an empty region (the SDK resolves it later) counts as not known.
fn amazon_trust_services_region(region: &str) -> bool {
    !region.is_empty() && !region.starts_with("cn-") && !region.contains("-iso")
}

fn is_https(url: &str) -> bool {
    url.trim().get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The values of `AWS_ENDPOINT_URL` and every `AWS_ENDPOINT_URL_<SERVICE>` that are set to something.
fn endpoint_overrides_in_env() -> Vec<String> {
    std::env::vars_os()
        .filter(|(k, v)| {
            let k = k.to_string_lossy();
            !v.is_empty() && (k == ENDPOINT_ENV || k.starts_with("AWS_ENDPOINT_URL_"))
        })
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .collect()
}

/// Whether `AWS_ENDPOINT_URL` or any `AWS_ENDPOINT_URL_<SERVICE>` is set to something.
fn endpoint_override_in_env() -> bool {
    !endpoint_overrides_in_env().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_roots_are_the_five_amazon_trust_services_anchors() {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(AMAZON_ROOTS_PEM)
            .collect::<Result<Vec<_>, _>>()
            .expect("the bundled PEM parses");
        assert_eq!(certs.len(), 5);
        for cert in &certs {
            webpki::anchor_from_trusted_cert(cert).expect("each certificate is a usable trust anchor");
        }
    }

    #[test]
    fn amazon_roots_only_where_endpoints_present_them() {
        for region in ["us-east-1", "eu-west-1", "us-gov-west-1", "ap-southeast-7"] {
            assert!(amazon_trust_services_region(region), "{region}");
        }
        for region in ["", "cn-north-1", "cn-northwest-1", "us-iso-east-1", "us-isob-east-1", "eu-isoe-west-1"] {
            assert!(!amazon_trust_services_region(region), "{region}");
        }
        assert!(is_https("https://localhost:4566") && is_https(" HTTPS://x"));
        assert!(!is_https("http://127.0.0.1:5000") && !is_https("") && !is_https("http"));
    }
}
