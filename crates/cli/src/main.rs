//! `tributary`: run the whole platform on one machine, check a workspace file, print its schema, benchmark.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

// Many small allocations across threads (JSON values in the delivery and ingest paths): mimalloc handles them
// with less contention than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audiences;
mod bench;
mod bench_audiences;
mod bench_deliver;
mod bench_import;
mod bench_table;
mod import;
mod quarantine;
mod redrive;
mod sources;

#[derive(Parser)]
#[command(name = "tributary", version, about = "Tributary: a customer data platform on AWS Lambda, runnable locally.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform locally with embedded storage (SQLite queues and tables, a directory for objects).
    Serve {
        /// Workspace file (YAML). Without one, a demo workspace is created and its keys printed.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where queues, tables and objects are kept.
        #[arg(long, default_value = ".tributary")]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8088")]
        addr: SocketAddr,
    },
    /// Workspace configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Benchmarks that print ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Events held back by a tracking plan: list, show, and redrive those that now pass.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// Per-source governance reports.
    Sources {
        #[command(subcommand)]
        command: sources::SourcesCommand,
    },
    /// Dead letters: deliveries given up on (the delivery DLQ), or with `--events` the events DLQ (events of erased
    /// people are dropped on the way back): list them, or move them back.
    Redrive(redrive::RedriveArgs),
    /// Import a partner or broker file through the local stack (as S3 would hand it to the import function).
    Import(import::ImportArgs),
    /// List a source's file imports (status, counts) in the local data directory.
    Imports(import::ImportsArgs),
    /// Audience tools: preview a definition against the local profiles.
    Audiences {
        #[command(subcommand)]
        command: audiences::AudiencesCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a workspace file; every problem is printed as FILE:LINE:COLUMN: message.
    Check { file: PathBuf },
    /// Print the JSON Schema of the workspace file.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, data_dir, addr } => serve(config, data_dir, addr),
        Command::Config { command: ConfigCommand::Check { file } } => config_check(&file),
        Command::Config { command: ConfigCommand::Schema } => {
            println!("{}", serde_json::to_string_pretty(&tributary_core::config::json_schema()).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { command } => bench::run(command).map(|_| ExitCode::SUCCESS),
        Command::Quarantine { command } => quarantine::run(command),
        Command::Sources { command } => sources::run(command),
        Command::Redrive(args) => redrive::run(args),
        Command::Import(args) => import::run(args),
        Command::Imports(args) => import::list(args),
        Command::Audiences { command } => audiences::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match tributary_core::config::load(&text) {
        Ok(cfg) => {
            println!(
                "{}: ok (workspace {:?}, {} sources, {} management keys)",
                file.display(),
                cfg.workspace,
                cfg.sources.len(),
                cfg.management_keys.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                match e.location {
                    Some((line, col)) => {
                        eprintln!("{}:{line}:{col}: {}", file.display(), e.message)
                    }
                    None => eprintln!("{}: {}", file.display(), e.message),
                }
            }
            eprintln!("{}: {} problem(s)", file.display(), errors.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Metric lines go to the log at debug level locally (on Lambda they go to stdout for CloudWatch).
struct LogMetrics;

impl tributary_ingest::MetricsSink for LogMetrics {
    fn emit(&self, line: String) {
        tracing::debug!(target: "tributary::metrics", "{line}");
    }
}

fn serve(config: Option<PathBuf>, data_dir: PathBuf, addr: SocketAddr) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data = tributary_local::runtime::DataDir(data_dir.clone());
    let workspace = match &config {
        Some(path) => tributary_local::runtime::load_workspace(path)?,
        None => {
            let (cfg, keys) = tributary_local::runtime::demo_workspace(&data)?;
            println!("demo workspace (no --config given)");
            println!("  write key:      {}", keys.write_key);
            println!("  management key: {}", keys.management_key);
            cfg
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let platform = tributary_local::runtime::start(
            tributary_local::runtime::PlatformOptions { data_dir, addr, workspace },
            LogMetrics,
        )
        .await?;
        println!("tributary listening on http://{}", platform.addr);
        std::io::stdout().flush().ok();
        wait_for_signal().await;
        eprintln!("shutting down: finishing in-flight requests and batches");
        platform.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
