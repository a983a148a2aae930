//! Cold-start benchmark of the Lambda bootstraps that `scripts/lambda-build.sh` builds.
//!
//! For each binary it serves a local Lambda Runtime API on loopback, starts the `bootstrap` with the environment
//! Lambda gives a function (plus the function's own variables from infra/template.yaml), and times the span from
//! the process start to its first `GET /2018-06-01/runtime/invocation/next`: the init phase, which Lambda reports
//! as Init Duration. With `--invoke` it also answers that request with one cheap event and times the response.
//! Runs are interleaved (every round runs the hello-world baseline and each function once), so that each ratio
//! compares numbers taken under the same load.
//!
//! The AWS side of init (the workspace file read from S3, the connections opened by `warm`) needs an endpoint:
//! - `AWS_ENDPOINT_URL` set (e.g. the moto server of scripts/test.sh): the bench creates a bucket with the
//!   workspace file and the signing key, a table and the queues there, and the functions read them at init.
//! - `--moto PATH/moto_server [--tls]`: the bench starts its own moto server; with `--tls` it serves HTTPS with a
//!   certificate made for the run, so that init includes the TLS handshakes (and aws-lc's entropy seeding) that
//!   real endpoints cost. The functions trust it through `SSL_CERT_FILE` (the system roots plus this one).
//! - `--offline`: no endpoint at all. The files are read from disk and every AWS call is refused at once (one
//!   attempt), which measures the init the functions do on their own: SDK configuration, clients, parsing.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use tributary_aws::AwsClients;
use tributary_core::benchmark::BenchRow;
use tributary_core::ports::ObjectStore;

/// The functions of infra/template.yaml (`BuildProperties.Binary`).
const FUNCTIONS: [&str; 8] =
    ["ingest", "stitch", "deliver", "profile-api", "import", "audiences", "dsr-api", "dsr-worker"];
const WORKSPACE_YAML: &str = include_str!("../../../../events/workspace.yaml");
const SIGNING_PEM: &str = include_str!("../../../../events/dsr/signing.pem");
const APIGW_HEALTH: &str = include_str!("../../../../events/apigw/health.json");
const APIGW_TRACK: &str = include_str!("../../../../events/apigw/track.json");
/// The target for a function's median init against the baseline's (README, "Benchmarks"): what each result line
/// reports, whatever `--max-ratio` a caller gates on.
const TARGET_RATIO: f64 = 2.0;
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

#[derive(Parser, Debug)]
#[command(about = "Times each Lambda bootstrap from process start to its first Runtime API request, next to a \
                   hello-world lambda_runtime binary measured in the same run.")]
struct Args {
    /// Counted runs per binary.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Rounds run first and not counted (page cache, the emulator's first requests).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Where the bootstraps are: DIR/<name>/bootstrap.
    #[arg(long, default_value = "target/lambda")]
    lambda_dir: PathBuf,
    /// The functions to run (comma-separated); default all eight.
    #[arg(long, value_delimiter = ',')]
    functions: Vec<String>,
    /// The baseline binary under --lambda-dir.
    #[arg(long, default_value = "hello-lambda")]
    baseline: String,
    /// Also answer the first request with one cheap event and time the function's response.
    #[arg(long)]
    invoke: bool,
    /// Exit with an error when a function's median init is more than this many times the baseline's.
    #[arg(long)]
    max_ratio: Option<f64>,
    /// Start this moto_server for the run instead of using AWS_ENDPOINT_URL.
    #[arg(long, value_name = "MOTO_SERVER")]
    moto: Option<PathBuf>,
    /// With --moto: HTTPS with a certificate made for the run, so that init pays for TLS as on AWS.
    #[arg(long, requires = "moto")]
    tls: bool,
    /// No AWS endpoint even if AWS_ENDPOINT_URL is set: files from disk, every AWS call refused.
    #[arg(long, conflicts_with = "moto")]
    offline: bool,
    /// Limit for one run.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// An extra variable for every function process, NAME=VALUE (repeatable), e.g. RUST_LOG=debug.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    extra_env: Vec<String>,
    /// Where the run's files go (workspace file, certificates, each binary's log of its last run).
    #[arg(long, default_value = "target/cold-start")]
    work_dir: PathBuf,
    /// Run each bootstrap under this command (split at spaces), to see where init goes, e.g.
    /// --wrap "strace -f -tt -o target/cold-start/strace.txt" --runs 1 --warmup 0 --functions ingest.
    #[arg(long)]
    wrap: Option<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cold-start: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let functions: Vec<String> = if args.functions.is_empty() {
        FUNCTIONS.iter().map(|f| f.to_string()).collect()
    } else {
        args.functions.clone()
    };
    std::fs::create_dir_all(&args.work_dir).with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work_dir = args.work_dir.canonicalize()?;

    let mut binaries = vec![Binary::new(&args.lambda_dir, &args.baseline, true)?];
    for f in &functions {
        binaries.push(Binary::new(&args.lambda_dir, f, false)?);
    }
    let mut extra_env = Vec::new();
    for kv in &args.extra_env {
        let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv}: expected NAME=VALUE"))?;
        extra_env.push((k.to_string(), v.to_string()));
    }

    // The harness's own SDK calls (creating resources) use the same dummy credentials as the functions.
    for (name, value) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", REGION)] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    let mut _moto = None;
    // `setting`: the backend in a few words for the result lines, whose ratios differ several-fold between them.
    let (backend, description, setting) = if args.offline {
        (Backend::Offline, "offline: workspace file from disk, AWS calls refused".to_string(), "offline")
    } else if let Some(moto_bin) = &args.moto {
        let moto = Moto::start(moto_bin, args.tls, &work_dir)?;
        let backend = Backend::Endpoint { url: moto.url.clone(), cert_file: moto.cert_file.clone() };
        let description = format!("own moto_server at {}{}", moto.url, if args.tls { " (TLS)" } else { "" });
        _moto = Some(moto);
        (backend, description, if args.tls { "moto, TLS" } else { "moto" })
    } else {
        match std::env::var("AWS_ENDPOINT_URL") {
            Ok(url) if !url.trim().is_empty() => {
                let cert_file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
                (Backend::Endpoint { url: url.clone(), cert_file }, format!("AWS_ENDPOINT_URL={url}"), "endpoint")
            }
            _ => (Backend::Offline, "offline (AWS_ENDPOINT_URL is not set): AWS calls refused".to_string(), "offline"),
        }
    };
    let resources = Resources::create(&backend, &work_dir)?;

    eprintln!(
        "cold-start: {} binaries, {} warm-up + {} counted runs each, interleaved; {description}",
        binaries.len(),
        args.warmup,
        args.runs
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    for round in 0..args.warmup + args.runs {
        let counted = round >= args.warmup;
        for b in &mut binaries {
            let env = process_env(b, &resources, &extra_env);
            let sample = run_once(b, &env, args.wrap.as_deref(), args.invoke, timeout, &work_dir)
                .with_context(|| format!("{} (round {}; its output is in {})", b.name, round + 1, b.log(&work_dir)))?;
            if counted {
                b.samples.push(sample);
            }
        }
        eprint!(".");
    }
    eprintln!();

    print_table(&binaries, args.runs, &description, args.invoke);
    let base = median(&binaries[0].init_ms());
    for b in &binaries[1..] {
        let measure = format!("{} init, {setting}", b.name);
        let row = BenchRow::against(
            "cold-start",
            &measure,
            "ms",
            median(&b.init_ms()),
            &args.baseline,
            base,
            Some((TARGET_RATIO, false)),
        );
        println!("{}", row.line());
    }
    let over: Vec<String> = match args.max_ratio {
        Some(max) => binaries[1..]
            .iter()
            .map(|b| (b, median(&b.init_ms()) / base))
            .filter(|(_, ratio)| *ratio > max)
            .map(|(b, ratio)| format!("{} {ratio:.2}x", b.name))
            .collect(),
        None => Vec::new(),
    };
    if !over.is_empty() {
        eprintln!("cold-start: above --max-ratio {}: {}", args.max_ratio.unwrap_or_default(), over.join(", "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One binary under test and its counted samples.
struct Binary {
    name: String,
    path: PathBuf,
    baseline: bool,
    size: u64,
    samples: Vec<Sample>,
}

#[derive(Clone, Copy)]
struct Sample {
    /// Process start to the first `GET …/invocation/next`.
    init: Duration,
    /// CPU time of all the process's threads by then (Linux), which predicts a fractional-vCPU Lambda better than
    /// this machine's wall clock does.
    init_cpu: Option<Duration>,
    /// Process start to the response of the first invocation (`--invoke`).
    first_response: Option<Duration>,
    /// Whether that response was an invocation error.
    failed: bool,
}

impl Binary {
    fn new(lambda_dir: &Path, name: &str, baseline: bool) -> anyhow::Result<Self> {
        let path = lambda_dir.join(name).join("bootstrap");
        let build = "build them with ./scripts/lambda-build.sh x86_64 (the host's architecture)";
        let head = read_head(&path).with_context(|| format!("{}: cannot read it; {build}", path.display()))?;
        // ELF e_machine (little-endian u16 at offset 18): the benchmark runs the binaries here, natively.
        let machine = match head.get(18..20) {
            Some(&[lo, hi]) if head.starts_with(b"\x7fELF") => u16::from_le_bytes([lo, hi]),
            _ => bail!("{} is not an ELF binary", path.display()),
        };
        let host = match std::env::consts::ARCH {
            "x86_64" => 0x3e,
            "aarch64" => 0xb7,
            other => bail!("unsupported host architecture {other}"),
        };
        if machine != host {
            bail!(
                "{} is built for another architecture than this {} host; {build}",
                path.display(),
                std::env::consts::ARCH
            );
        }
        let size = std::fs::metadata(&path)?.len();
        Ok(Binary { name: name.to_string(), path: path.canonicalize()?, baseline, size, samples: Vec::new() })
    }

    /// The function this binary is: its name up to a first `.`, so that builds can be compared in one run
    /// (`--functions ingest.before,ingest.after` with DIR/ingest.before/bootstrap and DIR/ingest.after/bootstrap).
    fn function(&self) -> &str {
        self.name.split('.').next().unwrap_or_default()
    }

    fn init_ms(&self) -> Vec<f64> {
        self.samples.iter().map(|s| ms(s.init)).collect()
    }

    fn init_cpu_ms(&self) -> Vec<f64> {
        self.samples.iter().filter_map(|s| s.init_cpu.map(ms)).collect()
    }

    fn response_ms(&self) -> Vec<f64> {
        self.samples.iter().filter_map(|s| s.first_response.map(ms)).collect()
    }

    fn log(&self, work_dir: &Path) -> String {
        work_dir.join(format!("{}.log", self.name)).display().to_string()
    }
}

fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(64);
    std::fs::File::open(path)?.take(64).read_to_end(&mut head)?;
    Ok(head)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------------------------
// The AWS side: an endpoint with the resources the functions read at init, or none.

enum Backend {
    Offline,
    Endpoint { url: String, cert_file: Option<PathBuf> },
}

/// What the functions' variables name.
struct Resources {
    /// Variables every function process gets (endpoint, retry limit, trust store).
    aws_env: Vec<(String, String)>,
    table: String,
    bucket: String,
    workspace_config: String,
    signing_key: String,
    /// Queue URLs by role: events, events-dlq, delivery, delivery-dlq, changes, changes-dlq, dsr, import.
    queues: BTreeMap<&'static str, String>,
}

const QUEUES: [&str; 8] =
    ["events", "events-dlq", "delivery", "delivery-dlq", "changes", "changes-dlq", "dsr", "import"];

impl Resources {
    fn create(backend: &Backend, work_dir: &Path) -> anyhow::Result<Self> {
        match backend {
            Backend::Offline => Self::offline(work_dir),
            Backend::Endpoint { url, cert_file } => {
                if let Some(file) = cert_file {
                    // The harness's own client must trust the run's certificate too.
                    std::env::set_var("SSL_CERT_FILE", file);
                }
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(Self::on_endpoint(url, cert_file.as_deref()))
            }
        }
    }

    /// Files on disk; the endpoint is a loopback port nobody listens on, so every call fails at once.
    fn offline(work_dir: &Path) -> anyhow::Result<Self> {
        let config = work_dir.join("workspace.yaml");
        let key = work_dir.join("signing.pem");
        std::fs::write(&config, WORKSPACE_YAML)?;
        std::fs::write(&key, SIGNING_PEM)?;
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let endpoint = format!("http://127.0.0.1:{closed}");
        Ok(Resources {
            aws_env: vec![("AWS_ENDPOINT_URL".into(), endpoint.clone()), ("AWS_MAX_ATTEMPTS".into(), "1".into())],
            table: "tributary-bench".into(),
            bucket: "tributary-bench".into(),
            workspace_config: config.display().to_string(),
            signing_key: key.display().to_string(),
            queues: QUEUES.iter().map(|q| (*q, format!("{endpoint}/{ACCOUNT}/bench-{q}"))).collect(),
        })
    }

    async fn on_endpoint(url: &str, cert_file: Option<&Path>) -> anyhow::Result<Self> {
        let aws = AwsClients::with_endpoint(url).await;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("bench-{}", &run[..12]);
        let fail = |what: &str| format!("creating {what} at {url} (is the emulator running?)");
        let bucket = tributary_aws::admin::create_bucket(&aws, &prefix).await.with_context(|| fail("a bucket"))?;
        let store = aws.s3_store(&bucket, "config");
        store.put("workspace.yaml", WORKSPACE_YAML.as_bytes().to_vec()).await.with_context(|| fail("an object"))?;
        store.put("signing.pem", SIGNING_PEM.as_bytes().to_vec()).await.with_context(|| fail("an object"))?;
        let table = tributary_aws::admin::create_table(&aws, &prefix).await.with_context(|| fail("a table"))?;
        let mut queues = BTreeMap::new();
        for q in QUEUES {
            let queue_url = tributary_aws::admin::create_queue(&aws, &format!("{prefix}-{q}"), None)
                .await
                .with_context(|| fail("a queue"))?;
            queues.insert(q, queue_url);
        }
        let mut aws_env = vec![("AWS_ENDPOINT_URL".to_string(), url.to_string())];
        if let Some(file) = cert_file {
            aws_env.push(("SSL_CERT_FILE".into(), file.display().to_string()));
        }
        Ok(Resources {
            aws_env,
            workspace_config: format!("s3://{bucket}/config/workspace.yaml"),
            signing_key: format!("s3://{bucket}/config/signing.pem"),
            table,
            bucket,
            queues,
        })
    }

    fn queue(&self, role: &str) -> String {
        self.queues.get(role).cloned().unwrap_or_default()
    }
}

/// A moto_server started for the run, stopped on drop.
struct Moto {
    child: Child,
    url: String,
    cert_file: Option<PathBuf>,
}

impl Moto {
    fn start(bin: &Path, tls: bool, work_dir: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut cert_file = None;
        if tls {
            let (cert, key, bundle) = write_certificates(work_dir)?;
            cmd.arg("-c").arg(cert).arg("-k").arg(key);
            cert_file = Some(bundle);
        }
        let log = std::fs::File::create(work_dir.join("moto.log"))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut moto =
            Moto { child, url: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }), cert_file };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = moto.child.try_wait()? {
                bail!("moto_server exited ({status}); see {}", work_dir.join("moto.log").display());
            }
            if Instant::now() > deadline {
                bail!("moto_server did not listen on port {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it. Returns (certificate, key, trust bundle): the bundle is the
/// system's roots plus the CA, so that the functions still parse a full root store, as on Lambda.
fn write_certificates(work_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tributary cold-start CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?.signed_by(&key, &ca)?;
    let (cert_file, key_file, bundle_file) =
        (work_dir.join("moto-cert.pem"), work_dir.join("moto-key.pem"), work_dir.join("ca-bundle.pem"));
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    let mut bundle = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    bundle.push_str(&ca.as_ref().pem());
    std::fs::write(&bundle_file, bundle)?;
    Ok((cert_file, key_file, bundle_file))
}

// ---------------------------------------------------------------------------------------------------------------
// One run: the process, its environment, the Runtime API it talks to.

/// The environment Lambda gives a function process (a clean one: nothing inherited from this shell), with the
/// function's variables from infra/template.yaml.
fn process_env(b: &Binary, r: &Resources, extra: &[(String, String)]) -> Vec<(String, String)> {
    let function_name = format!("tributary-{}", b.function());
    let memory = match b.function() {
        "stitch" | "deliver" | "import" | "audiences" => "512",
        "dsr-worker" => "1024",
        _ if b.baseline => "128",
        _ => "256",
    };
    let task_root = b.path.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "en_US.UTF-8"),
        ("TZ", ":UTC"),
        ("_HANDLER", "bootstrap"),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]0123456789abcdef0123456789abcdef"),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        // Lambda gives the execution role's temporary credentials this way.
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_SESSION_TOKEN", "test"),
        ("RUST_LOG", "info"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push(("LAMBDA_TASK_ROOT".into(), task_root));
    env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), function_name.clone()));
    env.push(("AWS_LAMBDA_LOG_GROUP_NAME".into(), format!("/aws/lambda/{function_name}")));
    env.extend(r.aws_env.iter().cloned());

    let queue = |role: &str| r.queue(role);
    let own: Vec<(&str, String)> = match b.function() {
        "ingest" => vec![
            ("EVENTS_QUEUE_URL", queue("events")),
            ("QUARANTINE_BUCKET", r.bucket.clone()),
            ("PROFILES_TABLE", r.table.clone()),
            ("WORKSPACE_CONFIG", r.workspace_config.clone()),
        ],
        "stitch" => vec![
            ("PROFILES_TABLE", r.table.clone()),
            ("DELIVERY_QUEUE_URL", queue("delivery")),
            ("CHANGES_QUEUE_URL", queue("changes")),
            ("WORKSPACE_CONFIG", r.workspace_config.clone()),
        ],
        "deliver" => vec![
            ("PROFILES_TABLE", r.table.clone()),
            ("DELIVERY_QUEUE_URL", queue("delivery")),
            ("DELIVERY_DLQ_URL", queue("delivery-dlq")),
            ("DELIVERY_MAX_RECEIVE_COUNT", "100".into()),
            ("WORKSPACE_CONFIG", r.workspace_config.clone()),
        ],
        "profile-api" => {
            vec![("PROFILES_TABLE", r.table.clone()), ("WORKSPACE_CONFIG", r.workspace_config.clone())]
        }
        "import" => vec![
            ("PROFILES_TABLE", r.table.clone()),
            ("EVENTS_QUEUE_URL", queue("events")),
            ("IMPORT_QUEUE_URL", queue("import")),
            ("IMPORT_BUCKET", r.bucket.clone()),
            ("WORKSPACE_CONFIG", r.workspace_config.clone()),
        ],
        "audiences" => vec![
            ("PROFILES_TABLE", r.table.clone()),
            ("CHANGES_QUEUE_URL", queue("changes")),
            ("DELIVERY_QUEUE_URL", queue("delivery")),
            ("WORKSPACE_CONFIG", r.workspace_config.clone()),
        ],
        "dsr-api" => vec![
            ("PROFILES_TABLE", r.table.clone()),
            ("DSR_QUEUE_URL", queue("dsr")),
            ("RESULTS_BUCKET", r.bucket.clone()),
            ("WORKSPACE_CONFIG", r.workspace_config.clone()),
            ("DSR_SIGNING_KEY", r.signing_key.clone()),
        ],
        "dsr-worker" => vec![
            ("PROFILES_TABLE", r.table.clone()),
            ("DSR_QUEUE_URL", queue("dsr")),
            ("RESULTS_BUCKET", r.bucket.clone()),
            ("WORKSPACE_CONFIG", r.workspace_config.clone()),
            ("DSR_SIGNING_KEY", r.signing_key.clone()),
            ("EVENTS_DLQ_URL", queue("events-dlq")),
            ("DELIVERY_DLQ_URL", queue("delivery-dlq")),
            ("CHANGES_DLQ_URL", queue("changes-dlq")),
            ("DELIVERY_QUEUE_URL", queue("delivery")),
            ("ARCHIVE_BUCKET", r.bucket.clone()),
            ("IMPORT_BUCKET", r.bucket.clone()),
        ],
        _ => Vec::new(),
    };
    env.extend(own.into_iter().map(|(k, v)| (k.to_string(), v)));
    env.extend(extra.iter().cloned());
    env
}

/// The event `--invoke` sends: a cheap request on each function's real path (the tracking API queues one event,
/// audiences run an incremental refresh, dsr-worker sweeps; SQS consumers get an empty batch).
fn invoke_event(name: &str) -> String {
    match name {
        "ingest" => APIGW_TRACK.to_string(),
        "profile-api" => APIGW_HEALTH.to_string(),
        "dsr-api" => APIGW_HEALTH.replace("/health", "/opendsr/v2/discovery"),
        "stitch" | "deliver" | "import" => r#"{"Records":[]}"#.to_string(),
        "dsr-worker" => r#"{"sweep":true}"#.to_string(),
        _ => "{}".to_string(),
    }
}

fn run_once(
    b: &Binary,
    env: &[(String, String)],
    wrap: Option<&str>,
    invoke: bool,
    timeout: Duration,
    work_dir: &Path,
) -> anyhow::Result<Sample> {
    let event = invoke.then(|| invoke_event(b.function()).into_bytes());
    // Under a wrapper (strace, perf) the process is not killed, which would lose the wrapper's report: the Runtime
    // API closes the connection instead and the runtime loop exits with an error.
    let hold = wrap.is_none();
    let arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:tributary-{}", b.function());
    let api = RuntimeApi::start(event, arn, hold)?;
    // The function's output goes to a file, as Lambda's goes to its log agent: a pipe nobody drains would block it.
    let log = std::fs::File::create(work_dir.join(format!("{}.log", b.name)))?;
    let mut wrapper = wrap.unwrap_or_default().split_whitespace();
    let mut cmd = match wrapper.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(wrapper).arg(&b.path);
            cmd
        }
        None => Command::new(&b.path),
    };
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", api.port))
        .current_dir(b.path.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);

    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", b.path.display()))?;
    let outcome = wait_for(&mut child, &api, start, invoke, timeout);
    if !hold {
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    api.stop();
    outcome
}

fn wait_for(
    child: &mut Child,
    api: &RuntimeApi,
    start: Instant,
    invoke: bool,
    timeout: Duration,
) -> anyhow::Result<Sample> {
    let mut init = None;
    let mut init_cpu = None;
    loop {
        match api.hits.recv_timeout(Duration::from_millis(20)) {
            Ok(Hit::Next(at)) => {
                if init.is_none() {
                    init = Some(at.saturating_duration_since(start));
                    // The process now waits for an event: its CPU time stays what init used.
                    init_cpu = cpu_time(child.id());
                    if !invoke {
                        let init = init.unwrap_or_default();
                        return Ok(Sample { init, init_cpu, first_response: None, failed: false });
                    }
                }
            }
            Ok(Hit::Response(at)) => return answered(init, init_cpu, start, at, false),
            // An error answer is still the function's first response (offline, every AWS call fails).
            Ok(Hit::InvocationError(at)) => return answered(init, init_cpu, start, at, true),
            Ok(Hit::InitError(body)) => bail!("init failed: {body}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait()? {
                    bail!("the process exited ({status}) before its first Runtime API request");
                }
                if start.elapsed() > timeout {
                    bail!("no Runtime API request within {timeout:?}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the Runtime API server stopped"),
        }
    }
}

fn answered(
    init: Option<Duration>,
    init_cpu: Option<Duration>,
    start: Instant,
    at: Instant,
    failed: bool,
) -> anyhow::Result<Sample> {
    let Some(init) = init else { bail!("a response before any request for an event") };
    Ok(Sample { init, init_cpu, first_response: Some(at.saturating_duration_since(start)), failed })
}

/// The CPU time of every thread of process `pid` (`/proc/<pid>/task/*/schedstat`, nanoseconds on the CPU).
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

// ---------------------------------------------------------------------------------------------------------------
// A minimal Lambda Runtime API (HTTP/1.1 on loopback, keep-alive, Content-Length bodies), one per run.

enum Hit {
    Next(Instant),
    Response(Instant),
    InvocationError(Instant),
    InitError(String),
}

struct RuntimeApi {
    port: u16,
    hits: mpsc::Receiver<Hit>,
    stop: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
}

impl RuntimeApi {
    /// `event`: what the first `next` returns; `None` leaves it unanswered: held open when `hold` (the process is
    /// killed after it), else closed.
    fn start(event: Option<Vec<u8>>, function_arn: String, hold: bool) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (tx, hits) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicBool::new(false));
        let event = Arc::new(event);
        let function_arn = Arc::new(function_arn);
        let acceptor = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (tx, event, served, arn) = (tx.clone(), event.clone(), served.clone(), function_arn.clone());
                    std::thread::spawn(move || {
                        let _ = serve(stream, &tx, event.as_ref().as_deref(), &served, &arn, hold);
                    });
                }
            })
        };
        Ok(RuntimeApi { port, hits, stop, acceptor })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = self.acceptor.join();
    }
}

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";

fn serve(
    stream: TcpStream,
    tx: &mpsc::Sender<Hit>,
    event: Option<&[u8]>,
    served: &AtomicBool,
    arn: &str,
    hold: bool,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some((method, path, body)) = read_request(&mut reader)? {
        let now = Instant::now();
        match (method.as_str(), path.as_str()) {
            ("GET", NEXT) => {
                let _ = tx.send(Hit::Next(now));
                match event {
                    Some(event) if !served.swap(true, Ordering::SeqCst) => {
                        let deadline =
                            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(60);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                             lambda-runtime-aws-request-id: 00000000-0000-4000-8000-000000000001\r\n\
                             lambda-runtime-deadline-ms: {}\r\nlambda-runtime-invoked-function-arn: {arn}\r\n\
                             lambda-runtime-trace-id: Root=1-00000000-000000000000000000000001;Sampled=0\r\n\r\n",
                            event.len(),
                            deadline.as_millis()
                        );
                        out.write_all(head.as_bytes())?;
                        out.write_all(event)?;
                    }
                    // Long-poll forever, as Lambda does between invocations; the process is killed.
                    _ if hold => {
                        let mut sink = Vec::new();
                        let _ = reader.read_to_end(&mut sink);
                        return Ok(());
                    }
                    _ => return Ok(()),
                }
            }
            ("POST", p) if p.starts_with("/2018-06-01/runtime/invocation/") && p.ends_with("/response") => {
                let _ = tx.send(Hit::Response(now));
                out.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
            }
            ("POST", p) if p.starts_with("/2018-06-01/runtime/invocation/") && p.ends_with("/error") => {
                let _ = tx.send(Hit::InvocationError(now));
                out.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
            }
            ("POST", INIT_ERROR) => {
                let _ = tx.send(Hit::InitError(String::from_utf8_lossy(&body).into_owned()));
                out.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
            }
            _ => out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?,
        }
    }
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

/// One request: method, path, body. `None` at the end of the connection.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<(String, String, Vec<u8>)>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((method, path, body)))
}

// ---------------------------------------------------------------------------------------------------------------
// The report.

/// Median (mean of the two middle values for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn print_table(binaries: &[Binary], runs: usize, description: &str, invoke: bool) {
    let base = median(&binaries[0].init_ms());
    let base_response = median(&binaries[0].response_ms());
    println!(
        "\nCold start: process start to the first Runtime API request ({runs} runs each, interleaved; {description})"
    );
    // "+ms": the median's excess over the baseline's, which is what a function adds to Lambda's own init (the
    // hello world's ~14 ms Init Duration on arm64), whereas the ratio depends on how fast this machine starts one.
    print!(
        "| {:<23} | {:>9} | {:>7} | {:>6} | {:>6} | {:>6} |",
        "binary", "median ms", "p90 ms", "+ms", "ratio", "CPU ms"
    );
    if invoke {
        print!(" {:>17} | {:>14} |", "first response ms", "response ratio");
    }
    println!(" {:>10} |", "binary MiB");
    let dashes = |n: usize| "-".repeat(n);
    print!("|{}|{}:|{}:|{}:|{}:|{}:|", dashes(25), dashes(10), dashes(8), dashes(7), dashes(7), dashes(7));
    if invoke {
        print!("{}:|{}:|", dashes(18), dashes(15));
    }
    println!("{}:|", dashes(11));
    for b in binaries {
        let init = b.init_ms();
        let label = if b.baseline { format!("{} (baseline)", b.name) } else { b.name.clone() };
        print!(
            "| {label:<23} | {:>9.1} | {:>7.1} | {:>6.1} | {:>6.2} | {:>6.1} |",
            median(&init),
            percentile(&init, 90.0),
            median(&init) - base,
            median(&init) / base,
            median(&b.init_cpu_ms())
        );
        if invoke {
            let response = median(&b.response_ms());
            print!(" {response:>17.1} | {:>14.2} |", response / base_response);
        }
        println!(" {:>10.2} |", b.size as f64 / 1_048_576.0);
    }
    let failed: Vec<String> = binaries
        .iter()
        .map(|b| (b, b.samples.iter().filter(|s| s.failed).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(b, n)| format!("{} {n}/{}", b.name, b.samples.len()))
        .collect();
    if !failed.is_empty() {
        println!("Invocations answered with an error (counted as responses): {}", failed.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 90.0), 9.0);
        assert_eq!(percentile(&v, 100.0), 10.0);
        assert_eq!(percentile(&[5.0], 90.0), 5.0);
    }

    #[test]
    fn reads_keep_alive_requests_with_bodies() {
        let wire = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n\
                     POST /2018-06-01/runtime/invocation/1/response HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let mut reader = BufReader::new(&wire[..]);
        let (method, path, body) = read_request(&mut reader).unwrap().unwrap();
        assert_eq!((method.as_str(), path.as_str(), body.len()), ("GET", NEXT, 0));
        let (method, path, body) = read_request(&mut reader).unwrap().unwrap();
        assert_eq!(
            (method.as_str(), path.as_str(), body),
            ("POST", "/2018-06-01/runtime/invocation/1/response", b"{}".to_vec())
        );
        assert!(read_request(&mut reader).unwrap().is_none());
    }

    #[test]
    fn every_function_gets_its_template_variables() {
        let dir = std::env::temp_dir().join(format!("tributary-cold-start-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Resources::offline(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        for f in FUNCTIONS {
            let b = Binary {
                name: format!("{f}.variant"),
                path: PathBuf::from("/x/bootstrap"),
                baseline: false,
                size: 0,
                samples: vec![],
            };
            let env = process_env(&b, &r, &[]);
            let has = |k: &str| env.iter().any(|(name, v)| name == k && !v.is_empty());
            assert!(has("WORKSPACE_CONFIG") && has("PROFILES_TABLE"), "{f}");
            assert!(has("AWS_LAMBDA_FUNCTION_NAME") && has("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), "{f}");
        }
    }
}
