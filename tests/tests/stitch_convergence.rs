//! Identity resolution on the embedded store converges to the reference model: the same generated people,
//! processed in order, shuffled, and by 8 concurrent workers with 20 % of messages redelivered, give the
//! reference partition, traits and consent. With shared family devices (where limits make the result depend on
//! order, as in Segment) the store matches the reference replayed in the store's own commit order.

use std::sync::Arc;

use tributary_local::sqlite_table::SqliteTable;
use tributary_tests::people::{self, PeopleSpec};
use tributary_tests::stitching::{
    all_ids, assert_same_profiles, commit_order, reference_of, run_workers, store_profiles, workspace, Recorder,
};

fn table(dir: &tempfile::TempDir) -> Arc<Recorder<SqliteTable>> {
    let t = SqliteTable::open(&dir.path().join("tables.sqlite"), "profiles").expect("table");
    Arc::new(Recorder::new(t))
}

const PEOPLE: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_order_shuffled_and_concurrent_runs_all_give_the_reference_profiles() {
    let cfg = workspace();
    let stream = people::generate(&PeopleSpec { people: PEOPLE, seed: 7, ..PeopleSpec::default() });
    let expected = reference_of(&cfg, &stream.events);
    // Without limit conflicts the reference itself is order-independent and equals the generated truth.
    assert_eq!(expected.partition(), stream.truth_partition());
    let ids = all_ids(&expected);

    let runs = [
        ("in order, one worker", stream.events.clone(), 1, 1),
        ("shuffled, one worker", people::shuffled(&stream, 11), 1, 1),
        ("8 concurrent workers, 20 % redelivered", people::with_redeliveries(&stream.events, 0.2, 13), 8, 1),
        (
            "8 concurrent workers, batches of 10, shuffled and redelivered",
            people::with_redeliveries(&people::shuffled(&stream, 17), 0.2, 19),
            8,
            10,
        ),
    ];
    for (what, events, workers, batch) in runs {
        let dir = tempfile::tempdir().expect("dir");
        let t = table(&dir);
        run_workers(t.clone(), &cfg, events, workers, batch).await;
        let got = store_profiles(&*t, &ids).await;
        assert_same_profiles(&got, &expected.profiles(), what);
        // Every distinct event committed exactly once.
        assert_eq!(t.committed().len(), stream.events.len(), "{what}: one committed transaction per event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_devices_match_the_reference_in_commit_order_and_never_merge_two_users() {
    let cfg = workspace();
    let stream =
        people::generate(&PeopleSpec { people: PEOPLE, seed: 23, shared_devices: true, ..PeopleSpec::default() });
    assert!(stream.truth.iter().any(|p| p.borrowed.is_some()), "the generator must produce shared devices");

    for (what, events, workers) in [
        ("in order", stream.events.clone(), 1),
        ("shuffled", people::shuffled(&stream, 29), 1),
        (
            "8 concurrent workers, 20 % redelivered",
            people::with_redeliveries(&people::shuffled(&stream, 31), 0.2, 37),
            8,
        ),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let t = table(&dir);
        run_workers(t.clone(), &cfg, events.clone(), workers, 1).await;
        let order = commit_order(&t.committed(), &events);
        assert_eq!(order.len(), stream.events.len(), "{what}: one commit per distinct event");
        let expected = reference_of(&cfg, &order);
        let got = store_profiles(&*t, &all_ids(&expected)).await;
        assert_same_profiles(&got, &expected.profiles(), what);
        // Whatever the order, no profile ever holds two people's user ids.
        for p in &got {
            let users = p.ids.iter().filter(|i| i.kind == tributary_core::identity::IdType::UserId).count();
            assert!(users <= 1, "{what}: a profile holds {users} user ids: {:?}", p.ids);
        }
    }
}

#[tokio::test]
async fn replaying_a_processed_batch_changes_nothing_in_the_store() {
    let cfg = workspace();
    let stream = people::generate(&PeopleSpec { people: 10, seed: 41, ..PeopleSpec::default() });
    let dir = tempfile::tempdir().expect("dir");
    let t = table(&dir);
    run_workers(t.clone(), &cfg, stream.events.clone(), 1, 10).await;
    let mut before = t.inner().scan_all().await.expect("scan");
    before.sort_by(|a, b| a.key.cmp(&b.key));
    run_workers(t.clone(), &cfg, stream.events.clone(), 2, 10).await;
    let mut after = t.inner().scan_all().await.expect("scan");
    after.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(before.len(), after.len());
    assert!(before == after, "a replayed batch changed the store");
}
