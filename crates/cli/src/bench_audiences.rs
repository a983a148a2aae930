//! `tributary bench audiences`: root profiles evaluated per second by a full audience pass (the refresh function's
//! own code: root index pages over parallel segments, each profile's document and memberships read, every audience
//! evaluated, memberships written where they changed) next to a plain read of the same profiles from the same
//! store (the same index pages and segments, each page's documents read in one batch and decoded, nothing
//! evaluated), rounds alternating.
//!
//! The store is the embedded SQLite table `tributary serve` uses, seeded with profiles shaped like stitch writes
//! them (traits from two sources, consent, identifier counts, event counters). The first pass, where members enter
//! and their events are sent, is reported on its own; the rounds measure the steady state, where a pass finds
//! memberships current.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tributary_audiences::{Audiences, RefreshRequest, RefreshSettings};
use tributary_core::audience::{day_of, EventCounters};
use tributary_core::benchmark::BenchRow;
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{Condition, Item, TableStore, WriteOp, MAX_TRANSACT_ITEMS, ROOT_PROFILES};
use tributary_core::profile::layout::profile_key;
use tributary_core::profile::{ConsentEntry, ProfileDoc, Stamp, TraitEntry};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_local::sqlite_table::SqliteTable;

const SEGMENTS: u32 = 4;
const PAGE: usize = 100;
const CONCURRENCY: usize = 4;
const DAY: i64 = 86_400_000;
/// 2026-11-02T00:00:00Z: the profiles' data and the passes' clock.
const NOW: i64 = 1_793_577_600_000 + 12 * 3_600_000;

const WORKSPACE: &str = r#"
workspace: bench-audiences
consent:
  purposes: [{ id: analytics }, { id: advertising }]
audiences:
  - id: pro
    rule: { trait: plan, equals: pro }
  - id: eu-high-value
    rule:
      all:
        - { trait: country, in: [DE, FR, NL, ES, IT] }
        - { trait: score, gte: 70 }
  - id: recent-buyers
    rule: { performed: Order Completed, at_least: 2, in_last_days: 30 }
  - id: reachable-ads
    rule: { all: [{ has_identifier: email }, { consent: advertising }] }
  - id: first-party-lapsed
    rule:
      all:
        - { trait: last_login, within_last_days: 90, classes: [1P] }
        - { not: { performed: Viewed, in_last_days: 14 } }
"#;

/// Profile `n`, as stitch writes it: a mix that puts some profiles in each audience.
fn profile(n: u64) -> ProfileDoc {
    let stamp =
        |source: &str| Stamp { ts: NOW - DAY, received: NOW - DAY, source: source.into(), message_id: format!("m{n}") };
    let t = |value: Value, class: DataPartyClass, source: &str| TraitEntry {
        value,
        at: stamp(source),
        class,
        set_once: false,
    };
    let mut doc = ProfileDoc {
        created_at: NOW - 200 * DAY,
        first_seen: NOW - 200 * DAY,
        last_seen: NOW,
        events: 40,
        ..Default::default()
    };
    let first = DataPartyClass::FirstParty;
    doc.traits.insert("plan".into(), t(json!(["free", "pro", "team"][(n % 3) as usize]), first, "web"));
    doc.traits.insert("country".into(), t(json!(["DE", "US", "FR", "GB", "NL"][(n % 5) as usize]), first, "web"));
    doc.traits.insert("score".into(), t(json!(n % 100), DataPartyClass::ThirdParty, "broker"));
    doc.traits.insert("name".into(), t(json!(format!("Person {n}")), first, "web"));
    doc.traits.insert("last_login".into(), t(json!("2026-10-20T08:00:00Z"), first, "web"));
    doc.traits.insert("industry".into(), t(json!("retail"), DataPartyClass::ThirdParty, "broker"));
    for (purpose, granted) in [("analytics", true), ("advertising", !n.is_multiple_of(4))] {
        doc.consent.insert(purpose.into(), ConsentEntry { granted, at: stamp("web") });
    }
    doc.counts.insert("user_id".into(), 1);
    doc.counts.insert("anonymous_id".into(), 2);
    if n.is_multiple_of(2) {
        doc.counts.insert("email".into(), 1);
    }
    let mut counters = EventCounters::new();
    let today = day_of(NOW);
    for d in 0..(n % 12) {
        counters.record("Order Completed", today - (d * 5) as i64 % 40, 90, 100);
        counters.record("Viewed", today - (d * 3) as i64 % 20, 90, 100);
    }
    doc.counters = counters;
    doc
}

async fn seed(table: &SqliteTable, profiles: u64) -> anyhow::Result<()> {
    let mut ops = Vec::with_capacity(MAX_TRANSACT_ITEMS);
    for n in 0..profiles {
        let id = format!("prof_{n:024}");
        let mut attrs = profile(n).to_attrs();
        attrs.insert(ROOT_PROFILES.attribute.into(), Value::String(id.clone()));
        ops.push(WriteOp::Put {
            item: Item { key: profile_key(&id), attrs, version: 1, expires_at: None },
            condition: Condition::None,
        });
        if ops.len() == MAX_TRANSACT_ITEMS || n + 1 == profiles {
            table.transact(std::mem::take(&mut ops)).await.map_err(|e| anyhow::anyhow!("seeding: {e}"))?;
        }
    }
    Ok(())
}

/// The baseline: every root profile read and decoded, over the same segments, pages and concurrency.
async fn plain_read(table: &SqliteTable) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let segments = (0..SEGMENTS).map(|segment| async move {
        let mut read = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let page = table.scan_index(&ROOT_PROFILES, segment, SEGMENTS, cursor.as_deref(), PAGE).await?;
            let items = table.get_many(&page.keys).await?;
            let docs: Vec<ProfileDoc> =
                items.into_iter().flatten().filter_map(|i| ProfileDoc::from_attrs(&i.attrs).ok()).collect();
            read += std::hint::black_box(docs).len() as u64;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok::<_, tributary_core::ports::PortError>(read),
            }
        }
    });
    let mut total = 0;
    for r in futures::future::join_all(segments).await {
        total += r.map_err(|e| anyhow::anyhow!("plain read: {e}"))?;
    }
    Ok((total, total as f64 / start.elapsed().as_secs_f64()))
}

/// One full pass of the refresh; profiles evaluated, and per second.
async fn full_pass(refresh: &Audiences<SqliteTable, SqliteQueue, MemoryMetrics>) -> anyhow::Result<(u64, f64, u64)> {
    let start = Instant::now();
    let report = refresh.handle(RefreshRequest { full: true }, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(report.full_pass_done, "the full pass did not finish: {report:?}");
    Ok((report.evaluated, report.evaluated as f64 / secs, report.entered))
}

pub fn audiences_bench(profiles: u64, rounds: u32) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir()?;
        let tables = dir.path().join("tables.sqlite");
        let open_table = || SqliteTable::open(&tables, "profiles").map_err(|e| anyhow::anyhow!("{e}"));
        let table = open_table()?;
        seed(&table, profiles).await?;
        let workspace: Arc<WorkspaceConfig> =
            Arc::new(tributary_core::config::load(WORKSPACE).map_err(|e| anyhow::anyhow!("{e:?}"))?);
        let queues = dir.path().join("queues.sqlite");
        let open = |name: &str| SqliteQueue::open(&queues, name, QueueOptions::default()).map_err(anyhow::Error::from);
        let settings = RefreshSettings { segments: SEGMENTS, page: PAGE, concurrency: CONCURRENCY, ..Default::default() };
        let refresh = Audiences::new(open_table()?, open("changes")?, open("delivery")?, MemoryMetrics::default(), workspace, settings)
            .map_err(anyhow::Error::msg)?
            .with_clock(|| NOW);

        let (first_n, first_rate, entered) = full_pass(&refresh).await?;
        anyhow::ensure!(first_n == profiles, "the first pass evaluated {first_n} of {profiles} profiles");

        let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (n, b) = plain_read(&table).await?;
            anyhow::ensure!(n == profiles, "the plain read found {n} of {profiles} profiles");
            let (n, o, _) = full_pass(&refresh).await?;
            anyhow::ensure!(n == profiles, "a pass evaluated {n} of {profiles} profiles");
            base.push(b);
            ours.push(o);
            ratios.push(o / b);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        let (b, o, r) = (median(&mut base), median(&mut ours), median(&mut ratios));
        println!("bench audiences: {profiles} root profiles, 5 audiences, {SEGMENTS} segments, {rounds} rounds per side (medians)");
        println!("  first pass ({entered} memberships entered and written)     {first_rate:>10.0} profiles/s");
        println!("  baseline: plain read (index pages, batched gets, decode)      {b:>10.0} profiles/s");
        println!("  full pass (read, evaluate 5 audiences, memberships current)   {o:>10.0} profiles/s");
        println!("  ratio, median of rounds                                       {r:>10.2}  ({lo:.2}-{hi:.2})  target >= 0.5");
        let row = BenchRow::against(
            "audiences",
            "full pass, 5 audiences, memberships current",
            "profiles/s",
            o,
            "plain read of the same profiles",
            b,
            None,
        );
        println!("{}", row.with_ratio(r, Some((0.5, true))).line());
        anyhow::Ok(())
    })
}
