use super::*;
use berth_model::{CpuMillis, CreateRequest, HostCapacity, ProjectId, Secret};

fn inst(name: &str, status: InstanceStatus) -> InstanceRecord {
    let host = HostCapacity {
        cpus: CpuMillis::from_millis(2000).expect("valid"),
        memory_mib: 8192,
        disk_free_mib: 100_000,
    };
    let (name, spec) = CreateRequest {
        name: name.into(),
        engine: "postgres".into(),
        ..Default::default()
    }
    .validate(&host)
    .expect("valid");
    InstanceRecord {
        id: InstanceId::new_random(),
        name,
        project: ProjectId::default_project(),
        spec,
        status,
        status_detail: None,
        port: 40000,
        pending_restart: vec![],
        param_group: None,
        params_revision: 0,
        superuser_password: Secret::new("pw"),
        agent_token: Secret::new("tok"),
        created_at: String::new(),
        updated_at: String::new(),
    }
}

fn labelled(name: &str, id: InstanceId) -> Labelled {
    Labelled {
        name: name.into(),
        labels: HashMap::from([(labels::INSTANCE.to_owned(), id.to_string())]),
        running: true,
    }
}

fn exited() -> ContainerObservation {
    ContainerObservation {
        running: false,
        status: "exited".into(),
        exit_code: Some(137),
        ip: None,
        host_port: None,
    }
}

#[test]
fn a_missing_or_dead_member_of_a_running_instance_is_repaired() {
    let a = inst("a", InstanceStatus::Available);
    let b = inst("b", InstanceStatus::Unavailable);
    let mut o = Observed::default();
    o.members.insert(a.id, MemberSeen::Missing);
    o.members.insert(b.id, MemberSeen::Down(exited()));
    let actions = plan(&[a.clone(), b.clone()], &o);
    assert!(
        matches!(&actions[0], Action::Repair(id, why) if *id == a.id && why.contains("missing"))
    );
    assert!(matches!(&actions[1], Action::Repair(id, why) if *id == b.id && why.contains("137")));
    assert_eq!(actions.len(), 2);
}

#[test]
fn stopped_and_busy_instances_are_left_alone() {
    let stopped = inst("s", InstanceStatus::Stopped);
    let creating = inst("c", InstanceStatus::Creating);
    let mut o = Observed::default();
    o.members.insert(stopped.id, MemberSeen::Down(exited()));
    o.members.insert(creating.id, MemberSeen::Missing);
    let actions = plan(&[stopped.clone(), creating], &o);
    assert_eq!(
        actions,
        vec![Action::Observe(
            stopped.id,
            InstanceEvent::ObservedDown,
            Some("container is exited".into())
        )]
    );
}

#[test]
fn status_follows_health() {
    let a = inst("a", InstanceStatus::Available);
    let b = inst("b", InstanceStatus::Unavailable);
    let steady = inst("c", InstanceStatus::Available);
    let mut o = Observed::default();
    o.members.insert(
        a.id,
        MemberSeen::NotAnswering("engine is restarting".into()),
    );
    o.members.insert(b.id, MemberSeen::Healthy);
    o.members.insert(steady.id, MemberSeen::Healthy);
    let actions = plan(&[a.clone(), b.clone(), steady], &o);
    assert_eq!(
        actions,
        vec![
            Action::Observe(
                a.id,
                InstanceEvent::ObservedDown,
                Some("engine is restarting".into())
            ),
            Action::Observe(b.id, InstanceEvent::ObservedHealthy, None),
        ]
    );
}

#[test]
fn a_newer_group_revision_is_applied_to_healthy_instances_only() {
    let mut a = inst("a", InstanceStatus::Available);
    a.param_group = Some("g".into());
    a.params_revision = 1;
    let mut current = inst("b", InstanceStatus::Available);
    current.param_group = Some("g".into());
    current.params_revision = 2;
    let mut down = inst("c", InstanceStatus::Available);
    down.param_group = Some("g".into());
    let mut o = Observed::default();
    o.group_revisions.insert("g".into(), 2);
    o.members.insert(a.id, MemberSeen::Healthy);
    o.members.insert(current.id, MemberSeen::Healthy);
    o.members
        .insert(down.id, MemberSeen::NotAnswering("x".into()));
    let actions = plan(&[a.clone(), current, down.clone()], &o);
    assert_eq!(
        actions,
        vec![
            Action::Reconfigure(a.id, 2),
            Action::Observe(down.id, InstanceEvent::ObservedDown, Some("x".into())),
        ]
    );
}

#[test]
fn orphans_go_but_data_stays_unless_purged() {
    let live = inst("live", InstanceStatus::Available);
    let gone = InstanceId::new_random();
    let kept = InstanceId::new_random();
    let unknown = InstanceId::new_random();
    let mut o = Observed::default();
    o.members.insert(live.id, MemberSeen::Healthy);
    o.containers = vec![
        labelled("berth-live-0", live.id),
        labelled("berth-gone-0", gone),
    ];
    o.networks = vec![labelled("net-live", live.id), labelled("net-gone", gone)];
    o.volumes = vec![
        labelled("vol-live", live.id),
        labelled("vol-gone", gone),
        labelled("vol-kept", kept),
        labelled("vol-unknown", unknown),
    ];
    assert_eq!(
        unowned_ids(std::slice::from_ref(&live), &o),
        HashSet::from([gone, kept, unknown])
    );
    o.tombstones = HashMap::from([
        (gone, Tombstone::DeletedPurged),
        (kept, Tombstone::DeletedKeptData),
        (unknown, Tombstone::Unknown),
    ]);
    let actions = plan(&[live], &o);
    assert_eq!(
        actions,
        vec![
            Action::RemoveContainer("berth-gone-0".into()),
            Action::RemoveNetwork("net-gone".into()),
            Action::RemoveVolume("vol-gone".into()),
            Action::ReportVolume(
                "vol-unknown".into(),
                "labelled for this site but its instance is unknown to the store; kept, since it may hold data"
            ),
        ]
    );
}
