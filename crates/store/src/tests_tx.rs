//! Checks and writes that must happen in one transaction, and the store on disk
//! under concurrent writers (what `berth serve` really runs on).

use super::*;
use berth_model::{InstanceEvent, MemoryMib, ParamGroup, TaskKind, TaskOptions};
use std::collections::BTreeMap;

fn record(name: &str, port: u16, status: InstanceStatus) -> InstanceRecord {
    InstanceRecord::example(name, status, port)
}

fn task(i: &InstanceRecord, kind: TaskKind, options: TaskOptions) -> TaskRecord {
    TaskRecord::new(i, kind, options, &now())
}

/// The rule used here: `big = on` needs at least 1024 MiB.
fn big_needs_a_gib(
    params: &BTreeMap<String, String>,
    inst: &InstanceRecord,
    memory: u64,
) -> std::result::Result<(), String> {
    if params.get("big").is_some_and(|v| v == "on") && memory < 1024 {
        return Err(format!(
            "instance {}: big needs 1GiB, it has {memory}MiB",
            inst.name
        ));
    }
    Ok(())
}

fn group(name: &str) -> ParamGroup {
    ParamGroup {
        name: name.parse().expect("name"),
        engine: berth_model::EngineKind::Postgres,
        version: berth_model::EngineKind::Postgres.default_version(),
        description: String::new(),
        revision: 1,
        params: Default::default(),
        created_at: now(),
        updated_at: now(),
    }
}

/// Inserts `i` with its create task.
async fn insert(store: &Store, i: &InstanceRecord) {
    store
        .create_instance(
            i,
            &task(i, TaskKind::Create, TaskOptions::default()),
            &big_needs_a_gib,
        )
        .await
        .expect("created");
}

async fn on_disk() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("berth.db"))
        .await
        .expect("store");
    (dir, store)
}

#[tokio::test]
async fn a_port_held_by_an_instance_is_refused_naming_it() {
    let (_dir, store) = on_disk().await;
    let a = record("alpha", 41001, InstanceStatus::Creating);
    insert(&store, &a).await;
    let b = record("beta", 41001, InstanceStatus::Creating);
    let err = store
        .create_instance(
            &b,
            &task(&b, TaskKind::Create, TaskOptions::default()),
            &big_needs_a_gib,
        )
        .await
        .expect_err("port taken");
    assert!(
        matches!(&err, StoreError::PortTaken { port: 41001, instance } if instance == "alpha"),
        "{err}"
    );
    assert!(
        store.instance(b.id).await.expect("read").is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn a_group_change_that_does_not_fit_an_instance_being_shrunk_writes_nothing() {
    let (_dir, store) = on_disk().await;
    let mut a = record("alpha", 41002, InstanceStatus::Creating);
    a.spec.memory = MemoryMib::from_mib(2048).expect("valid");
    insert(&store, &a).await;
    crate::tests::available(&store, a.id).await;
    store.create_group(&group("web")).await.expect("group");
    store
        .attach_group(a.id, Some("web"), None, &big_needs_a_gib)
        .await
        .expect("attached");
    // A resize to 512MiB is in flight: the spec still says 2GiB.
    let mut small = a.spec.clone();
    small.memory = MemoryMib::from_mib(512).expect("valid");
    let resize = task(
        &a,
        TaskKind::Resize,
        TaskOptions {
            memory_mib: Some(512),
            ..Default::default()
        },
    );
    store
        .begin_resize(a.id, &small, &resize, &big_needs_a_gib)
        .await
        .expect("resizing");
    let set = BTreeMap::from([("big".to_owned(), "on".to_owned())]);
    let err = store
        .update_group("web", &set, &[], &big_needs_a_gib)
        .await
        .expect_err("does not fit the target");
    assert!(
        matches!(err, StoreError::Refused(ref why) if why.contains("512MiB")),
        "{err}"
    );
    let g = store.group("web").await.expect("group");
    assert_eq!((g.revision, g.params.len()), (1, 0), "nothing was written");
}

#[tokio::test]
async fn a_resize_below_what_the_group_needs_is_refused_in_its_transaction() {
    let (_dir, store) = on_disk().await;
    let mut a = record("alpha", 41003, InstanceStatus::Creating);
    a.spec.memory = MemoryMib::from_mib(2048).expect("valid");
    insert(&store, &a).await;
    crate::tests::available(&store, a.id).await;
    store.create_group(&group("web")).await.expect("group");
    let set = BTreeMap::from([("big".to_owned(), "on".to_owned())]);
    store
        .update_group("web", &set, &[], &big_needs_a_gib)
        .await
        .expect("fits 2GiB");
    store
        .attach_group(a.id, Some("web"), None, &big_needs_a_gib)
        .await
        .expect("attached");
    let mut small = a.spec.clone();
    small.memory = MemoryMib::from_mib(512).expect("valid");
    let resize = task(&a, TaskKind::Resize, TaskOptions::default());
    assert!(matches!(
        store
            .begin_resize(a.id, &small, &resize, &big_needs_a_gib)
            .await,
        Err(StoreError::Refused(_))
    ));
    let back = store.instance(a.id).await.expect("read").expect("live");
    assert_eq!(back.status, InstanceStatus::Available, "status untouched");
    assert!(store.task(resize.id).await.is_err(), "no task written");
}

/// Many control-plane requests at once against the real on-disk store: exactly one
/// task may begin per instance; the others are refused and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_task_begins_per_instance_under_concurrent_requests() {
    let (_dir, store) = on_disk().await;
    let a = record("alpha", 41004, InstanceStatus::Creating);
    insert(&store, &a).await;
    crate::tests::available(&store, a.id).await;
    let kinds = [
        TaskKind::Stop,
        TaskKind::Restart,
        TaskKind::Delete,
        TaskKind::Reconfigure,
    ];
    let attempts: Vec<_> = (0..32)
        .map(|n| {
            let store = store.clone();
            let a = a.clone();
            let kind = kinds[n % kinds.len()];
            tokio::spawn(async move {
                let t = task(&a, kind, TaskOptions::default());
                let r = store.begin_task(a.id, InstanceEvent::Began(kind), &t).await;
                (t.id, r)
            })
        })
        .collect();
    let mut began = vec![];
    let mut refused = vec![];
    for h in attempts {
        let (id, r) = h.await.expect("joined");
        match r {
            Ok(_) => began.push(id),
            Err(StoreError::Held { .. } | StoreError::InvalidTransition { .. }) => refused.push(id),
            Err(e) => panic!("unexpected store error: {e}"),
        }
    }
    assert_eq!(began.len(), 1, "exactly one task began");
    assert_eq!(refused.len(), 31);
    for id in refused {
        assert!(
            store.task(id).await.is_err(),
            "a refused task is not stored"
        );
    }
    let unfinished: Vec<_> = store
        .unfinished_tasks()
        .await
        .expect("list")
        .into_iter()
        .filter(|t| t.kind != TaskKind::Create)
        .map(|t| t.id)
        .collect();
    assert_eq!(unfinished, began);
}

#[tokio::test]
async fn ports_move_only_while_creating_and_only_to_free_ones() {
    let (_dir, store) = on_disk().await;
    let a = record("alpha", 41011, InstanceStatus::Creating);
    let b = record("beta", 41012, InstanceStatus::Available);
    for i in [&a, &b] {
        insert(&store, i).await;
    }
    let ports = |i: Option<InstanceRecord>| i.map(|i| (i.port, i.ro_port));

    let err = store
        .move_ports(a.id, 41013, 41012)
        .await
        .expect_err("beta holds it");
    assert!(
        matches!(&err, StoreError::PortTaken { port: 41012, instance } if instance == "beta"),
        "{err}"
    );
    assert_eq!(
        ports(store.instance(a.id).await.expect("read")),
        Some((41011, 51011))
    );

    store.move_ports(a.id, 41013, 41014).await.expect("moved");
    assert_eq!(
        ports(store.instance(a.id).await.expect("read")),
        Some((41013, 41014))
    );
    // Its own old ports are no one's now; its new ones are its own.
    store
        .move_ports(a.id, 41013, 41011)
        .await
        .expect("moved again");

    let err = store
        .move_ports(b.id, 41015, 41016)
        .await
        .expect_err("beta has been available");
    assert!(err.to_string().contains("stay as they are"), "{err}");
    assert_eq!(
        ports(store.instance(b.id).await.expect("read")),
        Some((41012, 51012))
    );
}

#[tokio::test]
async fn a_term_is_raised_alone_and_never_lowered() {
    let (_dir, store) = on_disk().await;
    let mut a = record("alpha", 41021, InstanceStatus::Available);
    a.topology.term = 4;
    insert(&store, &a).await;
    let read = |s: &Store| {
        let s = s.clone();
        async move {
            s.instance(a.id)
                .await
                .expect("read")
                .expect("there")
                .topology
        }
    };
    store.raise_term(a.id, 6).await.expect("raised");
    let t = read(&store).await;
    assert_eq!(t.term, 6);
    assert_eq!(t.members, a.topology.members, "the rest is as it was");
    store.raise_term(a.id, 5).await.expect("no-op");
    assert_eq!(read(&store).await.term, 6, "never lowered");
    // A topology read before the raise, written back, keeps the raised term and
    // brings the rest.
    let mut stale = a.topology.clone();
    stale.sync = 0;
    store.set_topology(a.id, &stale, None).await.expect("set");
    let t = read(&store).await;
    assert_eq!((t.term, t.sync), (6, 0));
    stale.term = 9;
    store.set_topology(a.id, &stale, None).await.expect("set");
    assert_eq!(read(&store).await.term, 9, "a promotion raises it");
}
