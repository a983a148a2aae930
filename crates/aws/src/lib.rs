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

pub use billing::Usage;
pub use dynamo::DynamoTable;
pub use links::{S3Links, MAX_LINK_LIFETIME};
pub use s3::{S3Store, S3Version};
pub use sqs::SqsQueue;
pub use workspace::{load_workspace, read_location};

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

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

/// Set by Lambda in every execution environment: where the function's runtime loop polls for invocations.
const LAMBDA_RUNTIME_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

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
        if in_lambda() {
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
        }
    }

    /// The queue at `url` (a full SQS queue URL).
    pub fn sqs_queue(&self, url: impl Into<String>) -> SqsQueue {
        SqsQueue::new(self.sqs.clone(), url.into())
    }

    /// Objects in `bucket`, every key under `prefix` (`""` for the bucket root; a trailing `/` is added).
    pub fn s3_store(&self, bucket: impl Into<String>, prefix: impl Into<String>) -> S3Store {
        S3Store::new(self.s3.clone(), bucket.into(), &prefix.into())
    }

    /// Presigned download links ([`ResultLinks`](tributary_core::dsr::ResultLinks)) to objects in `bucket` under
    /// `prefix` (`""` for the bucket root), e.g. DSR exports in the results bucket.
    pub fn s3_links(&self, bucket: impl Into<String>, prefix: impl Into<String>) -> S3Links {
        S3Links::new(self.s3.clone(), bucket.into(), &prefix.into())
    }

    /// The DynamoDB table `name`, with string keys `pk` (hash) and `sk` (range).
    pub fn dynamo_table(&self, name: impl Into<String>) -> DynamoTable {
        DynamoTable::new(self.dynamodb.clone(), name.into())
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

/// Whether this process runs in a Lambda execution environment.
fn in_lambda() -> bool {
    std::env::var_os(LAMBDA_RUNTIME_ENV).is_some_and(|v| !v.is_empty())
}

/// In Lambda, the region when the execution role's credentials are in the environment, as Lambda puts them (SnapStart
/// gives them through a container endpoint instead: then the default chain is needed).
fn lambda_region_with_env_credentials() -> Option<String> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if !in_lambda() || set("AWS_ACCESS_KEY_ID").is_none() || set("AWS_SECRET_ACCESS_KEY").is_none() {
        return None;
    }
    set("AWS_REGION").or_else(|| set("AWS_DEFAULT_REGION"))
}

/// Whether `AWS_ENDPOINT_URL` or any `AWS_ENDPOINT_URL_<SERVICE>` is set to something.
fn endpoint_override_in_env() -> bool {
    std::env::vars_os().any(|(k, v)| {
        let k = k.to_string_lossy();
        !v.is_empty() && (k == ENDPOINT_ENV || k.starts_with("AWS_ENDPOINT_URL_"))
    })
}
