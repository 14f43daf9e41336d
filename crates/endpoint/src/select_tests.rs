use super::*;
use proptest::prelude::*;

fn ok(member: &str, r: RoleReport) -> Probe {
    Probe {
        member: member.to_owned(),
        outcome: Ok(r),
    }
}

fn silent(member: &str) -> Probe {
    Probe {
        member: member.to_owned(),
        outcome: Err("timed out".to_owned()),
    }
}

fn ro_members(s: &Selection) -> Vec<&str> {
    s.ro.iter().map(|t| t.member.as_str()).collect()
}

#[test]
fn writes_go_to_the_one_ready_primary_and_reads_to_fresh_replicas() {
    let s = select(
        &[
            ok("m0", RoleReport::example(Role::Primary, true, None)),
            ok("m1", RoleReport::example(Role::Replica, true, Some(0.0))),
            ok("m2", RoleReport::example(Role::Replica, true, Some(30.0))),
            silent("m3"),
        ],
        10.0,
        None,
    );
    assert_eq!(s.rw.as_deref(), Some("m0"));
    assert_eq!(s.rw_keep.as_deref(), Some("m0"));
    assert_eq!(ro_members(&s), ["m1"]);
    assert!(!s.ro_fallback);
    let excluded: Vec<_> = s.members.iter().map(|m| m.excluded.is_some()).collect();
    assert_eq!(excluded, [false, false, true, true]);
    assert!(s.members[2]
        .excluded
        .as_deref()
        .is_some_and(|e| e.contains("above the maximum")));
}

#[test]
fn two_primaries_get_no_writes_and_keep_no_writer() {
    let s = select(
        &[
            ok("m0", RoleReport::example(Role::Primary, true, None)),
            ok("m1", RoleReport::example(Role::Primary, true, None)),
        ],
        10.0,
        Some("m0"),
    );
    assert_eq!(s.rw, None);
    assert_eq!(s.rw_keep, None);
    assert!(s.rw_reason.as_deref().is_some_and(|r| r.contains("m0, m1")));
    assert!(s.ro.is_empty() && !s.ro_fallback && s.ro_reason.is_some());
}

#[test]
fn a_silent_primary_keeps_its_writers_but_a_demoted_one_does_not() {
    let replica = || ok("m1", RoleReport::example(Role::Replica, true, Some(0.0)));
    let s = select(&[silent("m0"), replica()], 10.0, Some("m0"));
    assert_eq!((s.rw, s.rw_keep.as_deref()), (None, Some("m0")));
    let demoted = ok("m0", RoleReport::example(Role::Replica, true, Some(0.0)));
    let s = select(&[demoted, replica()], 10.0, Some("m0"));
    assert_eq!(s.rw_keep, None);
    let moved = ok("m1", RoleReport::example(Role::Primary, true, None));
    let s = select(&[silent("m0"), moved], 10.0, Some("m0"));
    assert_eq!(s.rw_keep.as_deref(), Some("m1"));
}

#[test]
fn with_no_qualifying_replica_reads_fall_back_to_the_primary() {
    let s = select(
        &[
            ok("m0", RoleReport::example(Role::Primary, true, None)),
            ok("m1", RoleReport::example(Role::Replica, false, Some(0.0))),
            ok("m2", RoleReport::example(Role::Replica, true, None)),
        ],
        10.0,
        None,
    );
    assert!(s.ro_fallback);
    assert_eq!(ro_members(&s), ["m0"]);
    assert!(s
        .ro_reason
        .as_deref()
        .is_some_and(|r| r.contains("none of 2 replicas")));
    assert!(s.members[2]
        .excluded
        .as_deref()
        .is_some_and(|e| e.contains("lag unknown")));
}

#[test]
fn weight_falls_with_lag_probe_time_and_full_slots() {
    let base = RoleReport::example(Role::Replica, true, Some(0.0));
    assert_eq!(weight(&base, 10.0), 1000);
    let lagging = RoleReport::example(Role::Replica, true, Some(7.5));
    assert_eq!(weight(&lagging, 10.0), 250);
    let slow = RoleReport {
        probe_ms: Some(10.0),
        ..base.clone()
    };
    assert_eq!(weight(&slow, 10.0), 500);
    let full = RoleReport {
        connections: Some(100),
        max_connections: Some(100),
        ..base
    };
    assert_eq!(weight(&full, 10.0), 50);
}

#[test]
fn the_spreader_follows_weights_exactly_and_interleaves() {
    let t = |m: &str, w| WeightedTarget {
        member: m.to_owned(),
        weight: w,
    };
    let targets = [t("a", 3), t("b", 1)];
    let mut sp = Spreader::default();
    let picks: Vec<String> = (0..4).filter_map(|_| sp.pick(&targets)).collect();
    assert_eq!(picks, ["a", "a", "b", "a"]);
    assert_eq!(sp.pick(&[]), None);
}

fn arb_report() -> impl Strategy<Value = Result<RoleReport, String>> {
    let role = prop_oneof![
        Just(None),
        Just(Some(Role::Primary)),
        Just(Some(Role::Replica))
    ];
    let r = (
        role,
        any::<bool>(),
        proptest::option::of(0.0f64..100.0),
        proptest::option::of(0.0f64..1000.0),
        proptest::option::of(0u32..200),
        proptest::option::of(0u32..200),
    )
        .prop_map(|(role, ready, lag, probe_ms, c, m)| RoleReport {
            role,
            ready,
            lag_seconds: lag,
            probe_ms,
            connections: c,
            max_connections: m,
            ..RoleReport::default()
        });
    prop_oneof![r.prop_map(Ok), Just(Err("down".to_owned()))]
}

proptest! {
    #[test]
    fn selection_never_breaks_its_rules(
        outcomes in proptest::collection::vec(arb_report(), 0..6),
        max_lag in 0.5f64..60.0,
        prev in proptest::option::of(0usize..6),
    ) {
        let probes: Vec<Probe> = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| Probe { member: format!("m{i}"), outcome })
            .collect();
        let prev = prev.map(|i| format!("m{i}"));
        let s = select(&probes, max_lag, prev.as_deref());
        let by_name = |m: &str| probes.iter().find(|p| p.member == m).and_then(|p| p.outcome.as_ref().ok());
        let ready_primaries = probes.iter().filter(|p| {
            p.outcome.as_ref().is_ok_and(|r| r.ready && r.role == Some(Role::Primary))
        }).count();
        // Writes go to a ready primary, and only when it is the only one.
        match &s.rw {
            Some(rw) => {
                prop_assert_eq!(ready_primaries, 1);
                let r = by_name(rw).expect("rw answered");
                prop_assert!(r.ready && r.role == Some(Role::Primary));
                prop_assert_eq!(s.rw_keep.as_ref(), Some(rw));
            }
            None => {
                prop_assert!(ready_primaries != 1);
                prop_assert!(s.rw_reason.is_some());
                if ready_primaries > 1 { prop_assert_eq!(&s.rw_keep, &None); }
            }
        }
        // Reads go to fresh ready replicas, or to the primary as a visible fallback.
        for t in &s.ro {
            prop_assert!(t.weight >= 1);
            let r = by_name(&t.member).expect("ro answered");
            if s.ro_fallback {
                prop_assert_eq!(Some(&t.member), s.rw.as_ref());
            } else {
                prop_assert!(r.ready && r.role == Some(Role::Replica));
                prop_assert!(r.lag_seconds.is_some_and(|l| l <= max_lag));
            }
        }
        prop_assert!(!s.ro.is_empty() || s.ro_reason.is_some());
        prop_assert_eq!(s.ro_fallback, s.ro_reason.is_some() && s.rw.is_some());
        prop_assert_eq!(s.members.len(), probes.len());
    }

    #[test]
    fn the_spreader_gives_each_target_its_weight(weights in proptest::collection::vec(1u32..20, 1..5)) {
        let targets: Vec<WeightedTarget> = weights.iter().enumerate()
            .map(|(i, w)| WeightedTarget { member: format!("m{i}"), weight: *w }).collect();
        let total: u32 = weights.iter().sum();
        let mut sp = Spreader::default();
        let mut counts = BTreeMap::new();
        for _ in 0..total {
            *counts.entry(sp.pick(&targets).expect("a target")).or_insert(0u32) += 1;
        }
        for t in &targets {
            prop_assert_eq!(counts.get(&t.member).copied().unwrap_or(0), t.weight);
        }
    }
}
