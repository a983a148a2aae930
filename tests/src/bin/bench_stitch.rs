//! `bench-stitch`: identity-resolution throughput of the stitch handler on the embedded store, next to the
//! in-memory reference model on the same generated stream (baseline measured in the same run), and — when
//! `AWS_ENDPOINT_URL` names a moto server — the DynamoDB requests and billed units per event with the dollars per
//! million events at on-demand list prices.
//!
//! ```text
//! cargo run -p tributary-tests --release --bin bench-stitch -- [--people 300] [--dynamodb-people 20]
//! ```

use std::sync::Arc;
use std::time::Instant;

use tributary_core::benchmark::BenchRow;
use tributary_local::sqlite_table::SqliteTable;
use tributary_tests::people::{self, PeopleSpec};
use tributary_tests::stitching::{reference_of, run_workers, workspace, Shared};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cfg = workspace();
    let stream = people::generate(&PeopleSpec { people: arg("--people", 300), seed: 5, ..PeopleSpec::default() });
    let n = stream.events.len();

    let t = Instant::now();
    let reference = reference_of(&cfg, &stream.events);
    let reference_rate = n as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(reference.partition().len());

    let dir = tempfile::tempdir().expect("temp dir");
    let table = Arc::new(SqliteTable::open(&dir.path().join("tables.sqlite"), "profiles").expect("table"));
    let t = Instant::now();
    run_workers(Arc::new(Shared(table)), &cfg, stream.events.clone(), 1, 10).await;
    let embedded_rate = n as f64 / t.elapsed().as_secs_f64();

    println!("stitch benchmark: {n} events, {} people", stream.truth.len());
    println!("{:<44} {:>14} {:>10}", "run", "events/s", "ratio");
    println!("{:<44} {:>14.0} {:>10.2}", "reference model (in memory, baseline)", reference_rate, 1.0);
    println!(
        "{:<44} {:>14.0} {:>10.4}",
        "stitch handler, embedded SQLite store",
        embedded_rate,
        embedded_rate / reference_rate
    );
    let row = BenchRow::against(
        "stitch",
        "stitch handler, embedded SQLite store",
        "events/s",
        embedded_rate,
        "reference model (in memory)",
        reference_rate,
        None,
    );
    // Printed after the DynamoDB report too, so that every result line follows the human report.
    let mut rows = vec![row];

    if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|v| !v.is_empty()) {
        let aws = tributary_tests::aws_env::clients().await;
        let name = tributary_tests::aws_env::unique("bench-profiles");
        tributary_aws::admin::create_table(&aws, &name).await.expect("create table");
        let table = aws.dynamo_table(&name);
        let small =
            people::generate(&PeopleSpec { people: arg("--dynamodb-people", 20), seed: 5, ..PeopleSpec::default() });
        let m = small.events.len() as f64;
        let t = Instant::now();
        run_workers(Arc::new(Shared(Arc::new(table.clone()))), &cfg, small.events.clone(), 1, 10).await;
        let rate = m / t.elapsed().as_secs_f64();
        let u = table.usage();
        println!();
        println!("DynamoDB adapter on moto: {} events ({rate:.0} events/s against the emulator)", small.events.len());
        println!(
            "per event: {:.2} reads, {:.2} transactions ({:.2} items), {:.2} RRU, {:.2} WRU",
            u.requests_read as f64 / m,
            u.requests_transact as f64 / m,
            u.transact_items as f64 / m,
            u.rru / m,
            u.wru as f64 / m
        );
        let dollars = u.dollars() / m * 1e6;
        println!("cost: ${dollars:.3} per million events (on-demand: $0.625/M WRU, $0.125/M RRU; request units only)");
        // A figure on record: there is no same-run baseline for it, and no target for stitch's share of the cost.
        rows.push(BenchRow {
            bench: "stitch".into(),
            measure: "DynamoDB request units (adapter count, on moto)".into(),
            unit: "USD per million events".into(),
            ours: dollars,
            baseline_name: None,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
        });
    } else {
        println!("(set AWS_ENDPOINT_URL to a moto server to also measure DynamoDB requests and cost per event)");
    }
    for row in rows {
        println!("{}", row.line());
    }
}
