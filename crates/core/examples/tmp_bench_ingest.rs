// TEMPORARY (helper's throwaway timing; deleted before hand-back).
use std::hint::black_box;
use std::time::Instant;
use tributary_core::ingest::{self, sample::realistic_batch, Limits, RequestContext, Route};

fn main() {
    let body = realistic_batch(100);
    let limits = Limits::default();
    let ctx = RequestContext {
        received_at: time::OffsetDateTime::now_utc(),
        source_ip: Some("198.51.100.1".into()),
        user_agent: Some("analytics-python/2.3.4".into()),
    };
    let iters = 2000;
    let mut best_base = f64::MAX;
    let mut best_pipe = f64::MAX;
    let (mut p_parse, mut p_proc, mut p_pack) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..iters {
            let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(v);
        }
        best_base = best_base.min(t.elapsed().as_secs_f64() / iters as f64);
        let t = Instant::now();
        for _ in 0..iters {
            let v = ingest::parse_body(black_box(&body), &limits).unwrap();
            let p = ingest::process(Route::Batch, v, &ctx, &limits).unwrap();
            let msgs = ingest::pack("src_1", &p.accepted, 256 * 1024);
            black_box(msgs);
        }
        best_pipe = best_pipe.min(t.elapsed().as_secs_f64() / iters as f64);
        // breakdown
        let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
        for _ in 0..iters {
            let t0 = Instant::now();
            let v = ingest::parse_body(black_box(&body), &limits).unwrap();
            let t1 = Instant::now();
            let p = ingest::process(Route::Batch, v, &ctx, &limits).unwrap();
            let t2 = Instant::now();
            let msgs = ingest::pack("src_1", &p.accepted, 256 * 1024);
            let t3 = Instant::now();
            black_box(msgs);
            drop(p);
            a += (t1 - t0).as_secs_f64();
            b += (t2 - t1).as_secs_f64();
            c += (t3 - t2).as_secs_f64();
        }
        p_parse = p_parse.min(a / iters as f64);
        p_proc = p_proc.min(b / iters as f64);
        p_pack = p_pack.min(c / iters as f64);
    }
    println!("body {} bytes", body.len());
    println!(
        "baseline from_slice::<Value>: {:.1} us ({:.0} MB/s)",
        best_base * 1e6,
        body.len() as f64 / best_base / 1e6
    );
    println!(
        "pipeline parse+process+pack: {:.1} us ({:.0} MB/s)",
        best_pipe * 1e6,
        body.len() as f64 / best_pipe / 1e6
    );
    println!(
        "  parse {:.1} us, process {:.1} us, pack {:.1} us",
        p_parse * 1e6,
        p_proc * 1e6,
        p_pack * 1e6
    );
    println!(
        "throughput ratio pipeline/baseline = {:.3}",
        best_base / best_pipe
    );
}
