//! The event log: written with the change it records, ordered, paged, pruned.

use super::*;
use berth_model::{EventKind, TaskOptions};

fn any(
    _: &std::collections::BTreeMap<String, String>,
    _: &InstanceRecord,
    _: u64,
) -> std::result::Result<(), String> {
    Ok(())
}

fn task(i: &InstanceRecord, kind: TaskKind) -> TaskRecord {
    TaskRecord::new(i, kind, TaskOptions::default(), &now())
}

fn all() -> EventFilter {
    EventFilter {
        limit: 1000,
        ..EventFilter::default()
    }
}

async fn kinds(store: &Store, f: &EventFilter) -> Vec<EventKind> {
    store
        .events(f)
        .await
        .expect("events")
        .iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn a_lifecycle_is_logged_in_order_with_each_change() {
    let store = Store::in_memory().await.expect("store");
    let seen = store.subscribe_events();
    let inst = InstanceRecord::example("db1", InstanceStatus::Creating, 40001);
    let mut create = task(&inst, TaskKind::Create);
    store
        .create_instance(&inst, &create, &any)
        .await
        .expect("create");
    assert!(
        seen.has_changed().expect("sender alive"),
        "followers are woken"
    );
    create.state = TaskState::Succeeded;
    store
        .finish_task(
            &create,
            Some(InstanceEvent::Succeeded(TaskKind::Create)),
            None,
        )
        .await
        .expect("finish");
    let mut stop = task(&inst, TaskKind::Stop);
    store
        .begin_task(inst.id, InstanceEvent::Began(TaskKind::Stop), &stop)
        .await
        .expect("stop");
    // A refused transition writes nothing, its event neither.
    let again = task(&inst, TaskKind::Stop);
    assert!(store
        .begin_task(inst.id, InstanceEvent::Began(TaskKind::Stop), &again)
        .await
        .is_err());
    stop.state = TaskState::Failed;
    stop.error = Some("stop_member: Docker said no".into());
    store
        .finish_task(
            &stop,
            Some(InstanceEvent::Failed(TaskKind::Stop)),
            Some("Docker said no"),
        )
        .await
        .expect("finish");
    assert_eq!(
        kinds(&store, &all()).await,
        [
            EventKind::TaskBegan,
            EventKind::InstanceCreated,
            EventKind::TaskSucceeded,
            EventKind::TaskBegan,
            EventKind::InstanceFailed,
            EventKind::TaskFailed,
        ]
    );
    let events = store.events(&all()).await.expect("events");
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events[4].message, "stop failed: Docker said no");
    assert!(events.iter().all(|e| e.instance.as_deref() == Some("db1")));
    // Paging with the cursor returns each event once.
    let mut after = 0;
    let mut paged = vec![];
    for _ in 0..10 {
        let page = store
            .events(&EventFilter {
                after,
                limit: 4,
                ..EventFilter::default()
            })
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page.into_iter().map(|e| e.seq));
    }
    assert_eq!(paged, events.iter().map(|e| e.seq).collect::<Vec<_>>());
    let other = EventFilter {
        instance: Some("db2".into()),
        ..all()
    };
    assert!(kinds(&store, &other).await.is_empty());
}

#[tokio::test]
async fn events_survive_a_reopen_and_pruning_says_how_far_it_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.db");
    {
        let store = Store::open(&path).await.expect("open");
        for i in 0..3 {
            store
                .record_event(&NewEvent {
                    instance_id: None,
                    instance_name: None,
                    kind: EventKind::Api,
                    message: format!("call {i}"),
                    details: json!({ "status": 202 }),
                })
                .await
                .expect("record");
        }
    }
    let store = Store::open(&path).await.expect("reopen");
    assert_eq!(store.events(&all()).await.expect("events").len(), 3);
    // Nothing is older than a day: nothing goes.
    assert_eq!(
        store
            .prune_events(std::time::Duration::from_secs(86400))
            .await
            .expect("prune"),
        0
    );
    let kept = store.events_retained().await.expect("retained");
    assert_eq!(kept.pruned_through, 0);
    assert_eq!(kept.latest_seq, 3);
    sqlx::query("UPDATE events SET time = '2000-01-01T00:00:00.000Z' WHERE seq <= 2")
        .execute(&store.pool)
        .await
        .expect("age two");
    assert_eq!(
        store
            .prune_events(std::time::Duration::from_secs(86400))
            .await
            .expect("prune"),
        2
    );
    let kept = store.events_retained().await.expect("retained");
    assert_eq!(kept.pruned_through, 2);
    assert_eq!(kept.oldest.map(|o| o.0), Some(3));
    // A seq is never given twice, even after the newest rows are pruned.
    sqlx::query("DELETE FROM events")
        .execute(&store.pool)
        .await
        .expect("empty");
    assert_eq!(
        store.events_retained().await.expect("retained").latest_seq,
        3
    );
}

#[test]
fn event_times_sort_as_text() {
    let a = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    let b = a + time::Duration::milliseconds(5);
    assert_eq!(event_time(a), "2023-11-14T22:13:20.000Z");
    assert!(event_time(a) < event_time(b));
}
