//! Which replica a failover promotes, if any: pure, from what each replica's agent
//! said just now and what the control plane last saw of the primary.
//!
//! With `ANY K` synchronous replicas out of `R`, every acknowledged commit is on at
//! least `K` replicas; hearing from `R − K + 1` of them means at least one of those
//! has it, so the most advanced of them has everything acknowledged. An asynchronous
//! instance (or one whose synchronous replication was released in `available` mode)
//! may have acknowledged commits no replica has: it fails over only when the best
//! replica is within the instance's `max_failover_lag` of the primary's last known
//! position, and says how much may be lost.

use crate::MemberId;

/// One replica as its agent answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The member.
    pub member: MemberId,
    /// Its engine answered and it is a replica (not promoted, not refused).
    pub healthy: bool,
    /// What it received of the primary's change stream.
    pub position: Option<u64>,
}

/// What the choice depends on besides the replicas' answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Replicas that confirm a commit (`ANY K`).
    pub sync: u8,
    /// Synchronous replication was released (`available` mode with a replica
    /// missing): commits may have been acknowledged by the primary alone.
    pub sync_released: bool,
    /// How many replicas the instance has (`R`).
    pub replicas: usize,
    /// The most an asynchronous promotion may be behind.
    pub max_failover_lag: u64,
    /// The primary's position the last time the control plane heard from it.
    pub last_primary_position: Option<u64>,
}

/// What a failover does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Promote this member.
    Promote {
        /// The member.
        member: MemberId,
        /// Bytes of the primary's stream it may lack (0 when provably none).
        may_lose: u64,
    },
    /// Promote nobody, for this reason (said in `show` and an event).
    Stay(String),
}

/// Chooses the replica to promote. `target` is the member a user asked for (a manual
/// failover); `accept_data_loss` lets a user promote a replica that may lack
/// acknowledged commits.
pub fn choose(
    seen: &[Seen],
    rules: &Rules,
    target: Option<MemberId>,
    accept_data_loss: bool,
) -> Decision {
    let answered: Vec<(MemberId, u64)> = seen
        .iter()
        .filter(|s| s.healthy)
        .filter_map(|s| s.position.map(|p| (s.member, p)))
        .collect();
    // The most advanced; of equals, the lowest member id (stable, predictable).
    let Some(&(best, best_pos)) = answered
        .iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
    else {
        return Decision::Stay(format!(
            "no replica answered with its position (of {} replica(s)); the instance stays \
             without a primary until one does or the old primary is back",
            rules.replicas
        ));
    };
    let chosen = match target {
        None => (best, best_pos),
        Some(t) => match answered.iter().find(|(m, _)| *m == t) {
            Some(&found) => found,
            None => {
                return Decision::Stay(format!(
                    "member {} is not a healthy replica that answered; choose one that is",
                    t.0
                ))
            }
        },
    };
    let synchronous = rules.sync > 0 && !rules.sync_released;
    if synchronous {
        let needed = rules.replicas.saturating_sub(usize::from(rules.sync)) + 1;
        if answered.len() < needed && !accept_data_loss {
            return Decision::Stay(format!(
                "heard from {} of {} replica(s); with {} synchronous, {needed} must answer to \
                 know which one has every acknowledged commit",
                answered.len(),
                rules.replicas,
                rules.sync
            ));
        }
        let behind = best_pos.saturating_sub(chosen.1);
        if behind > 0 && !accept_data_loss {
            return Decision::Stay(format!(
                "member {} is {behind} bytes behind member {}, which has more; choose member \
                 {} or accept the loss with --accept-data-loss",
                chosen.0 .0, best.0, best.0
            ));
        }
        return Decision::Promote {
            member: chosen.0,
            may_lose: behind,
        };
    }
    let Some(primary_pos) = rules.last_primary_position else {
        if accept_data_loss {
            return Decision::Promote {
                member: chosen.0,
                may_lose: best_pos.saturating_sub(chosen.1),
            };
        }
        return Decision::Stay(
            "the primary's last position is unknown, so what a promotion would lose cannot \
             be bounded; the instance waits for the old primary (or use --accept-data-loss)"
                .into(),
        );
    };
    let lag = primary_pos.saturating_sub(chosen.1);
    if lag > rules.max_failover_lag && !accept_data_loss {
        return Decision::Stay(format!(
            "the best replica, member {}, is {lag} bytes behind the primary's last known \
             position; the instance allows {} (--max-failover-lag); it waits for the old \
             primary (or use --accept-data-loss)",
            chosen.0 .0, rules.max_failover_lag
        ));
    }
    Decision::Promote {
        member: chosen.0,
        may_lose: lag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seen(m: u16, pos: Option<u64>) -> Seen {
        Seen {
            member: MemberId(m),
            healthy: true,
            position: pos,
        }
    }

    fn rules(sync: u8, replicas: usize) -> Rules {
        Rules {
            sync,
            sync_released: false,
            replicas,
            max_failover_lag: 1024,
            last_primary_position: Some(10_000),
        }
    }

    #[test]
    fn synchronous_needs_r_minus_k_plus_one_answers() {
        // ANY 1 of 2: one answer is not enough (the other may hold the only copy).
        let d = choose(&[seen(1, Some(50))], &rules(1, 2), None, false);
        assert!(
            matches!(d, Decision::Stay(ref w) if w.contains("2 must answer")),
            "{d:?}"
        );
        let d = choose(
            &[seen(1, Some(50)), seen(2, Some(70))],
            &rules(1, 2),
            None,
            false,
        );
        assert_eq!(
            d,
            Decision::Promote {
                member: MemberId(2),
                may_lose: 0
            }
        );
        // ANY 2 of 2: either one has every commit.
        let d = choose(&[seen(1, Some(50))], &rules(2, 2), None, false);
        assert_eq!(
            d,
            Decision::Promote {
                member: MemberId(1),
                may_lose: 0
            }
        );
    }

    #[test]
    fn asynchronous_within_the_lag_only() {
        let r = rules(0, 1);
        let d = choose(&[seen(1, Some(9_500))], &r, None, false);
        assert_eq!(
            d,
            Decision::Promote {
                member: MemberId(1),
                may_lose: 500
            }
        );
        let d = choose(&[seen(1, Some(1_000))], &r, None, false);
        assert!(
            matches!(d, Decision::Stay(ref w) if w.contains("9000 bytes behind")),
            "{d:?}"
        );
        let d = choose(&[seen(1, Some(1_000))], &r, None, true);
        assert_eq!(
            d,
            Decision::Promote {
                member: MemberId(1),
                may_lose: 9_000
            }
        );
        let unknown = Rules {
            last_primary_position: None,
            ..r
        };
        assert!(matches!(
            choose(&[seen(1, Some(1))], &unknown, None, false),
            Decision::Stay(_)
        ));
    }

    #[test]
    fn a_chosen_target_behind_the_best_needs_consent() {
        let s = [seen(1, Some(50)), seen(2, Some(70))];
        let d = choose(&s, &rules(1, 2), Some(MemberId(1)), false);
        assert!(
            matches!(d, Decision::Stay(ref w) if w.contains("--accept-data-loss")),
            "{d:?}"
        );
        let d = choose(&s, &rules(1, 2), Some(MemberId(1)), true);
        assert_eq!(
            d,
            Decision::Promote {
                member: MemberId(1),
                may_lose: 20
            }
        );
        let d = choose(&s, &rules(1, 2), Some(MemberId(3)), true);
        assert!(matches!(d, Decision::Stay(_)));
    }

    #[test]
    fn nobody_answering_means_no_primary() {
        let mut s = seen(1, Some(5));
        s.healthy = false;
        assert!(matches!(
            choose(&[s], &rules(0, 1), None, true),
            Decision::Stay(_)
        ));
    }

    proptest! {
        /// Whatever the answers, an automatic synchronous failover promotes a member
        /// at the highest position among those that answered, and only with a quorum;
        /// an automatic asynchronous one never exceeds the allowed lag.
        #[test]
        fn never_promotes_a_member_known_to_lack_commits(
            positions in proptest::collection::vec(proptest::option::of(0u64..100), 1..5),
            sync in 0u8..4,
            primary in 0u64..200,
        ) {
            let replicas = positions.len();
            let sync = sync.min(replicas as u8);
            let s: Vec<Seen> = positions.iter().enumerate()
                .map(|(i, p)| seen(i as u16 + 1, *p)).collect();
            let r = Rules { sync, sync_released: false, replicas, max_failover_lag: 10,
                last_primary_position: Some(primary) };
            let answered: Vec<u64> = positions.iter().flatten().copied().collect();
            if let Decision::Promote { member, may_lose } = choose(&s, &r, None, false) {
                let pos = positions[usize::from(member.0) - 1].expect("answered");
                prop_assert_eq!(Some(&pos), answered.iter().max());
                if sync > 0 {
                    prop_assert!(answered.len() > replicas - usize::from(sync));
                    prop_assert_eq!(may_lose, 0);
                } else {
                    prop_assert!(primary.saturating_sub(pos) <= 10);
                }
            }
        }
    }
}
