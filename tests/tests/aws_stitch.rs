//! The AWS tier of identity resolution: 4 concurrent stitch workers on the DynamoDB adapter (moto) give the
//! reference profiles, and the adapter's billing counters give the DynamoDB cost per event.

use std::sync::Arc;

use tributary_aws::admin;
use tributary_tests::aws_env;
use tributary_tests::people::{self, PeopleSpec};
use tributary_tests::stitching::{
    all_ids, assert_same_profiles, commit_order, reference_of, run_workers, store_profiles, workspace, Recorder,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_concurrent_workers_on_dynamodb_give_the_reference_profiles() {
    let aws = aws_env::clients().await;
    let name = aws_env::unique("profiles");
    admin::create_table(&aws, &name).await.expect("create table");
    let table = Arc::new(Recorder::new(aws.dynamo_table(&name)));

    let cfg = workspace();
    let stream = people::generate(&PeopleSpec { people: 8, seed: 43, shared_devices: true, ..PeopleSpec::default() });
    let events = people::with_redeliveries(&people::shuffled(&stream, 47), 0.2, 53);
    let deliveries = events.len();
    run_workers(table.clone(), &cfg, events.clone(), 4, 1).await;

    let order = commit_order(&table.committed(), &events);
    assert_eq!(order.len(), stream.events.len(), "one committed transaction per distinct event");
    let expected = reference_of(&cfg, &order);
    let got = store_profiles(&*table, &all_ids(&expected)).await;
    assert_same_profiles(&got, &expected.profiles(), "4 workers on DynamoDB (moto)");

    let usage = table.inner().usage();
    let n = stream.events.len() as f64;
    println!(
        "dynamodb: {} events ({deliveries} deliveries): {:.2} reads, {:.2} transactions, {:.2} RRU, {:.2} WRU per event \
         = ${:.3} per million events",
        stream.events.len(),
        usage.requests_read as f64 / n,
        usage.requests_transact as f64 / n,
        usage.rru / n,
        usage.wru as f64 / n,
        usage.dollars() / n * 1e6
    );
    assert!(usage.requests_transact as usize >= stream.events.len(), "every event is one transaction at least");
}
