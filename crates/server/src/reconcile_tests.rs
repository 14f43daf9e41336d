use super::*;

fn inst(name: &str, status: InstanceStatus) -> InstanceRecord {
    InstanceRecord::example(name, status, 40000)
}

fn labelled(name: &str, id: InstanceId) -> Labelled {
    Labelled {
        id: name.into(),
        name: name.into(),
        labels: HashMap::from([(labels::INSTANCE.to_owned(), id.to_string())]),
        running: true,
        paused: false,
    }
}

fn exited() -> ContainerObservation {
    ContainerObservation {
        id: "c0ffee".into(),
        name: "berth-db-0".into(),
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
fn a_verifications_throwaway_instance_is_never_repaired() {
    let mut t = inst("verify-0123456789ab", InstanceStatus::Available);
    t.project = crate::backup::verify::project();
    let mut o = Observed::default();
    o.members.insert(t.id, MemberSeen::Missing);
    assert_eq!(plan(&[t], &o), vec![]);
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

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = InstanceStatus> {
        proptest::sample::select(InstanceStatus::ALL.to_vec())
    }

    fn seen() -> impl Strategy<Value = MemberSeen> {
        prop_oneof![
            Just(MemberSeen::Missing),
            Just(MemberSeen::Healthy),
            Just(MemberSeen::NotAnswering("x".into())),
            Just(MemberSeen::Down(exited())),
        ]
    }

    fn tombstone() -> impl Strategy<Value = Tombstone> {
        proptest::sample::select(vec![
            Tombstone::Unknown,
            Tombstone::Live,
            Tombstone::DeletedKeptData,
            Tombstone::DeletedPurged,
        ])
    }

    proptest! {
        /// Whatever it sees, reconcile never touches a busy instance, never repairs one
        /// the user stopped, and removes a volume only when its instance was purged.
        #[test]
        fn plan_is_safe(
            members in proptest::collection::vec((status(), seen()), 0..6),
            orphans in proptest::collection::vec(tombstone(), 0..6),
        ) {
            let mut instances = vec![];
            let mut o = Observed::default();
            for (i, (st, seen)) in members.into_iter().enumerate() {
                let r = inst(&format!("i{i}"), st);
                o.members.insert(r.id, seen);
                o.volumes.push(labelled(&format!("vol-i{i}"), r.id));
                instances.push(r);
            }
            let mut purged = HashSet::new();
            for (i, t) in orphans.into_iter().enumerate() {
                let id = InstanceId::new_random();
                let name = format!("orphan-{i}");
                if t == Tombstone::DeletedPurged {
                    purged.insert(name.clone());
                }
                o.volumes.push(labelled(&name, id));
                o.tombstones.insert(id, t);
            }
            for action in plan(&instances, &o) {
                match action {
                    Action::Repair(id, _) | Action::Reconfigure(id, _) => {
                        let i = instances.iter().find(|i| i.id == id).expect("known instance");
                        prop_assert!(i.status.wants_running(), "repaired a {} instance", i.status);
                    }
                    Action::Observe(id, _, _) => {
                        let i = instances.iter().find(|i| i.id == id).expect("known instance");
                        prop_assert!(!i.status.is_busy(), "observed over a running task");
                    }
                    Action::RemoveVolume(name) => prop_assert!(purged.contains(&name), "removed {name}"),
                    Action::RemoveContainer(_) | Action::RemoveNetwork(_) | Action::ReportVolume(..) => {}
                }
            }
        }
    }
}
