use super::*;
use berth_model::{InstanceEvent, TaskKind, TaskOptions};

fn record(name: &str, port: u16) -> InstanceRecord {
    InstanceRecord::example(name, InstanceStatus::Creating, port)
}

/// A fit check that lets everything through.
fn any(
    _: &std::collections::BTreeMap<String, String>,
    _: &InstanceRecord,
    _: u64,
) -> std::result::Result<(), String> {
    Ok(())
}

fn create_task(i: &InstanceRecord) -> TaskRecord {
    TaskRecord::new(i, TaskKind::Create, TaskOptions::default(), &now())
}

/// Ends the instance's create task, as the task runner does: the instance is
/// available and no longer held.
pub(crate) async fn available(store: &Store, id: InstanceId) {
    let create = store
        .unfinished_tasks()
        .await
        .expect("tasks")
        .into_iter()
        .find(|t| t.instance_id == id && t.kind == TaskKind::Create)
        .expect("a create task");
    succeed(store, create).await;
}

/// A store with one available instance, `db1`, whose create has ended.
async fn an_available_instance() -> (Store, InstanceRecord) {
    let store = Store::in_memory().await.expect("store");
    let a = record("db1", 40001);
    store
        .create_instance(&a, &create_task(&a), &any)
        .await
        .expect("created");
    available(&store, a.id).await;
    (store, a)
}

/// Ends `task` as succeeded, with its instance's status, as the task runner does.
pub(crate) async fn succeed(store: &Store, mut task: TaskRecord) {
    task.state = berth_model::TaskState::Succeeded;
    store
        .finish_task(&task, Some(InstanceEvent::Succeeded(task.kind)), None)
        .await
        .expect("the task ends");
}

#[tokio::test]
async fn instance_and_task_are_written_together_and_read_back() {
    let store = Store::in_memory().await.expect("store");
    let inst = record("db1", 40001);
    let task = create_task(&inst);
    store
        .create_instance(&inst, &task, &any)
        .await
        .expect("created");
    let back = store
        .instance_by_name(&ProjectId::default_project(), "db1")
        .await
        .expect("found");
    // The create holds it from the start.
    assert_eq!(back.held_by, Some(task.id));
    assert_eq!(
        back,
        InstanceRecord {
            held_by: Some(task.id),
            ..inst
        }
    );
    assert_eq!(store.task(task.id).await.expect("task"), task);
    assert_eq!(store.unfinished_tasks().await.expect("list").len(), 1);
    // Both endpoints' ports are held: read-write and read-only.
    let mut ports = store.ports_in_use().await.expect("ports");
    ports.sort();
    assert_eq!(ports, vec![40001, inst.ro_port]);
}

#[tokio::test]
async fn duplicate_live_names_are_refused_and_nothing_is_written() {
    let store = Store::in_memory().await.expect("store");
    let a = record("db1", 40001);
    store
        .create_instance(&a, &create_task(&a), &any)
        .await
        .expect("first");
    let b = record("db1", 40002);
    let err = store
        .create_instance(&b, &create_task(&b), &any)
        .await
        .expect_err("dup");
    assert!(matches!(err, StoreError::NameTaken(_)), "{err}");
    assert_eq!(store.list_instances(None).await.expect("list").len(), 1);
    assert_eq!(store.list_tasks(None, 10).await.expect("tasks").len(), 1);
}

#[tokio::test]
async fn a_refused_transition_writes_no_task() {
    let store = Store::in_memory().await.expect("store");
    let a = record("db1", 40001);
    store
        .create_instance(&a, &create_task(&a), &any)
        .await
        .expect("created");
    let stop = TaskRecord::new(&a, TaskKind::Stop, TaskOptions::default(), &now());
    let create = store.unfinished_tasks().await.expect("tasks")[0].id;
    let err = store
        .begin_task(a.id, InstanceEvent::Began(TaskKind::Stop), &stop)
        .await
        .expect_err("busy creating");
    assert!(
        matches!(err, StoreError::Held { task, kind: TaskKind::Create, .. } if task == create),
        "{err}"
    );
    assert!(store.task(stop.id).await.is_err());
}

#[tokio::test]
async fn a_task_holds_its_instance_from_its_begin_to_its_end() {
    let store = Store::in_memory().await.expect("store");
    let a = record("db1", 40001);
    store
        .create_instance(&a, &create_task(&a), &any)
        .await
        .expect("created");
    let held = store.instance(a.id).await.expect("read").expect("there");
    assert!(held.held_by.is_some(), "the create holds it");
    available(&store, a.id).await;
    let inst = store.instance(a.id).await.expect("read").expect("there");
    assert_eq!(inst.held_by, None, "given back at the create's end");
    let backup = TaskRecord::new(&inst, TaskKind::Backup, TaskOptions::default(), &now());
    let began = store
        .begin_task(a.id, InstanceEvent::Began(TaskKind::Backup), &backup)
        .await
        .expect("backup begins");
    assert_eq!(began.held_by, Some(backup.id));
    // Another task is refused, naming the holder; nothing of it is written.
    let stop = TaskRecord::new(&inst, TaskKind::Stop, TaskOptions::default(), &now());
    let err = store
        .begin_task(a.id, InstanceEvent::Began(TaskKind::Stop), &stop)
        .await
        .expect_err("held");
    assert!(
        matches!(err, StoreError::Held { task, kind: TaskKind::Backup, .. } if task == backup.id),
        "{err}"
    );
    assert!(err.to_string().contains(&backup.id.to_string()), "{err}");
    assert!(store.task(stop.id).await.is_err());
    // A restart of the store (the control plane's crash) keeps the hold.
    let reread = store.instance(a.id).await.expect("read").expect("there");
    assert_eq!(reread.held_by, Some(backup.id));
    // The end of a task that does not hold the instance leaves the hold alone.
    let mut stranger = stop.clone();
    stranger.state = TaskState::Failed;
    store
        .finish_task(&stranger, None, None)
        .await
        .expect("ends");
    assert_eq!(
        store
            .instance(a.id)
            .await
            .expect("read")
            .expect("there")
            .held_by,
        Some(backup.id)
    );
    succeed(&store, backup.clone()).await;
    assert_eq!(
        store
            .instance(a.id)
            .await
            .expect("read")
            .expect("there")
            .held_by,
        None
    );
    store
        .begin_task(a.id, InstanceEvent::Began(TaskKind::Stop), &stop)
        .await
        .expect("the stop begins once the backup ended");
}

#[tokio::test]
async fn deleted_names_can_be_reused_and_tombstones_remain() {
    let (store, a) = an_available_instance().await;
    let del = TaskRecord::new(
        &a,
        TaskKind::Delete,
        TaskOptions {
            purge: true,
            ..Default::default()
        },
        &now(),
    );
    store
        .begin_task(a.id, InstanceEvent::Began(TaskKind::Delete), &del)
        .await
        .expect("deleting");
    store.mark_purged(a.id).await.expect("purged");
    store
        .apply_event(a.id, InstanceEvent::Succeeded(TaskKind::Delete), None)
        .await
        .expect("deleted");
    assert_eq!(
        store.tombstone(a.id).await.expect("t"),
        Tombstone::DeletedPurged
    );
    assert_eq!(
        store.tombstone(InstanceId::new_random()).await.expect("t"),
        Tombstone::Unknown
    );
    let b = record("db1", 40001);
    store
        .create_instance(&b, &create_task(&b), &any)
        .await
        .expect("name reusable");
    assert_eq!(store.tombstone(b.id).await.expect("t"), Tombstone::Live);
}

#[tokio::test]
async fn site_id_is_stable_and_tokens_are_looked_up_by_hash() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("berth.db");
    let site = {
        let store = Store::open(&path).await.expect("open");
        assert!(!store.has_tokens().await.expect("tokens"));
        store.insert_token("admin", "abc123").await.expect("insert");
        store.site_id().await.expect("site")
    };
    let store = Store::open(&path).await.expect("reopen");
    assert_eq!(store.site_id().await.expect("site"), site);
    assert_eq!(
        store.token_name("abc123").await.expect("lookup").as_deref(),
        Some("admin")
    );
    assert_eq!(store.token_name("abc124").await.expect("lookup"), None);
}

#[tokio::test]
async fn spec_changes_and_group_attachments_travel_with_their_task() {
    use berth_model::{MemoryMib, ParamGroup};
    let (store, a) = an_available_instance().await;
    // Resize: the task carries the target; the spec follows once Docker applied it.
    let mut spec = a.spec.clone();
    spec.memory = MemoryMib::from_mib(2048).expect("valid");
    let resize = TaskRecord::new(&a, TaskKind::Resize, TaskOptions::default(), &now());
    let after = store
        .begin_resize(a.id, &spec, &resize, &any)
        .await
        .expect("resizing");
    assert_eq!(after.status, InstanceStatus::Modifying);
    let memory_now = || async {
        store
            .instance(a.id)
            .await
            .expect("read")
            .expect("live")
            .spec
            .memory
            .mib()
    };
    assert_eq!(
        memory_now().await,
        a.spec.memory.mib(),
        "not before Docker applied it"
    );
    store.set_spec(a.id, &spec).await.expect("applied");
    assert_eq!(memory_now().await, 2048);
    // A second change while the first runs is refused and writes nothing.
    let again = TaskRecord::new(&a, TaskKind::Resize, TaskOptions::default(), &now());
    assert!(store
        .begin_resize(a.id, &a.spec, &again, &any)
        .await
        .is_err());
    assert_eq!(
        store
            .instance(a.id)
            .await
            .expect("read")
            .expect("live")
            .spec
            .memory
            .mib(),
        2048
    );
    assert!(store.task(again.id).await.is_err());
    succeed(&store, resize).await;

    // Groups: revisions bump on change, attachments block deletion.
    let g = ParamGroup {
        name: "web".parse().expect("name"),
        engine: berth_model::EngineKind::Postgres,
        version: berth_model::EngineKind::Postgres.default_version(),
        description: String::new(),
        revision: 1,
        params: Default::default(),
        created_at: now(),
        updated_at: now(),
    };
    store.create_group(&g).await.expect("group");
    assert!(matches!(
        store.create_group(&g).await,
        Err(StoreError::GroupTaken(_))
    ));
    let set = [("work_mem".to_owned(), "64MB".to_owned())].into();
    let changed = store
        .update_group("web", &set, &[], &any)
        .await
        .expect("set");
    assert_eq!(changed.revision, 2);
    assert_eq!(changed.params["work_mem"], "64MB");
    store
        .attach_group(a.id, Some("web"), None, &any)
        .await
        .expect("attached");
    assert!(matches!(
        store.delete_group("web").await,
        Err(StoreError::GroupInUse { .. })
    ));
    assert_eq!(
        store.instances_with_group("web").await.expect("list").len(),
        1
    );
    store
        .params_applied(a.id, 2, Some(&["shared_buffers".to_owned()]))
        .await
        .expect("pending");
    // A restart applies every pending setting.
    let restart = TaskRecord::new(&a, TaskKind::Restart, TaskOptions::default(), &now());
    store
        .begin_task(a.id, InstanceEvent::Began(TaskKind::Restart), &restart)
        .await
        .expect("restarting");
    store
        .apply_event(a.id, InstanceEvent::Succeeded(TaskKind::Restart), None)
        .await
        .expect("restarted");
    assert!(store
        .instance(a.id)
        .await
        .expect("read")
        .expect("live")
        .pending_restart
        .is_empty());
    store
        .attach_group(a.id, None, None, &any)
        .await
        .expect("detached");
    store.delete_group("web").await.expect("deleted");
    assert!(matches!(
        store.group("web").await,
        Err(StoreError::NoSuchGroup(_))
    ));
}
