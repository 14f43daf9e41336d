//! The history's arithmetic: every sample is folded into one bucket per tier
//! (10 s kept a day, 1 min kept 15 days, 5 min kept 63 days, 1 h kept 15 months by
//! default), each bucket keeping count, sum, minimum and maximum, so a coarser
//! bucket is exactly the merge of the finer ones it covers. A query reads the
//! coarsest tier that is fine enough and still covers its window, and merges its
//! buckets into the step asked for.
//!
//! A bucket exists only where a sample was taken: a member that did not answer
//! leaves a gap, never a zero.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a bucket holds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agg {
    /// Samples folded in.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Agg {
    /// One sample.
    pub fn of(v: f64) -> Self {
        Self {
            count: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    /// Both buckets as one.
    pub fn merge(self, o: Agg) -> Agg {
        Agg {
            count: self.count + o.count,
            sum: self.sum + o.sum,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }

    /// The mean of the samples.
    pub fn average(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// One statistic of the bucket.
    pub fn statistic(&self, s: Statistic) -> f64 {
        match s {
            Statistic::Average => self.average(),
            Statistic::Minimum => self.min,
            Statistic::Maximum => self.max,
            Statistic::Sum => self.sum,
            Statistic::SampleCount => self.count as f64,
        }
    }
}

/// Which value of a bucket a series or an alarm uses.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// The mean.
    #[default]
    Average,
    /// The smallest sample.
    Minimum,
    /// The largest sample.
    Maximum,
    /// The sum.
    Sum,
    /// How many samples.
    SampleCount,
}

/// One resolution of the history: buckets of `step` seconds kept `keep` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Bucket width, in seconds.
    pub step: i64,
    /// How long buckets are kept, in seconds.
    pub keep: i64,
}

const DAY: i64 = 86_400;

/// The default resolutions: 10 s for a day, 1 min for 15 days, 5 min for 63 days,
/// 1 h for 15 months (456 days).
pub const DEFAULT_TIERS: [Tier; 4] = [
    Tier {
        step: 10,
        keep: DAY,
    },
    Tier {
        step: 60,
        keep: 15 * DAY,
    },
    Tier {
        step: 300,
        keep: 63 * DAY,
    },
    Tier {
        step: 3600,
        keep: 456 * DAY,
    },
];

/// Parses resolutions like `10s:1d,1m:15d,5m:63d,1h:456d` (step:kept, finest first).
/// Each step must be a whole multiple of the one before (so a query can merge
/// buckets exactly) and kept longer than it; at least one is needed.
pub fn parse_tiers(s: &str) -> Result<Vec<Tier>, String> {
    let mut tiers: Vec<Tier> = vec![];
    for part in s.split(',').map(str::trim) {
        let usage = || format!("{part:?} is not STEP:KEPT like 10s:1d");
        let (step, keep) = part.split_once(':').ok_or_else(usage)?;
        let step = crate::event::parse_age(step)?.as_secs() as i64;
        let keep = crate::event::parse_age(keep)?.as_secs() as i64;
        if step == 0 || keep <= step {
            return Err(format!(
                "{part:?}: the step must be above zero and kept longer than itself"
            ));
        }
        if let Some(prev) = tiers.last() {
            if step <= prev.step || step % prev.step != 0 || keep < prev.keep {
                return Err(format!(
                    "{part:?}: each resolution must be a whole multiple of the one before it ({}s) and kept at least as long",
                    prev.step
                ));
            }
        }
        tiers.push(Tier { step, keep });
    }
    Ok(tiers)
}

/// Where a time falls: the start of its bucket of `step` seconds.
pub fn bucket(ts: i64, step: i64) -> i64 {
    ts.div_euclid(step.max(1)) * step.max(1)
}

/// Buckets (or samples, as one-sample buckets) merged into buckets of `step`,
/// in time order.
pub fn rollup(points: impl IntoIterator<Item = (i64, Agg)>, step: i64) -> Vec<(i64, Agg)> {
    let mut out: BTreeMap<i64, Agg> = BTreeMap::new();
    for (ts, a) in points {
        out.entry(bucket(ts, step))
            .and_modify(|b| *b = b.merge(a))
            .or_insert(a);
    }
    out.into_iter().collect()
}

/// Which tier a query reads and the step it answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The tier read.
    pub tier: Tier,
    /// The answer's step: what was asked, rounded up to a multiple of the tier's.
    pub step: i64,
}

/// The tier for a window of `window` seconds (ending now) at `step` seconds: the
/// coarsest tier no coarser than the step (fewest rows); when that does not keep
/// the whole window, the finest that does (the step grows to it), and the longest
/// kept when none does. `tiers` is finest first, not empty.
pub fn plan(tiers: &[Tier], window: i64, step: i64) -> Plan {
    let finest = tiers[0];
    let coarsest_fine_enough = tiers
        .iter()
        .rev()
        .copied()
        .find(|t| t.step <= step)
        .unwrap_or(finest);
    let tier = if coarsest_fine_enough.keep >= window {
        coarsest_fine_enough
    } else {
        tiers
            .iter()
            .copied()
            .find(|t| t.keep >= window)
            .unwrap_or(*tiers.last().unwrap_or(&finest))
    };
    let step = step.max(tier.step);
    let step =
        step.div_euclid(tier.step) * tier.step + if step % tier.step == 0 { 0 } else { tier.step };
    Plan { tier, step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn buckets_start_at_multiples_of_the_step() {
        assert_eq!(bucket(125, 60), 120);
        assert_eq!(bucket(120, 60), 120);
        assert_eq!(bucket(-1, 60), -60);
    }

    #[test]
    fn a_bucket_keeps_count_sum_min_and_max() {
        let r = rollup(
            [(0, Agg::of(1.0)), (5, Agg::of(3.0)), (12, Agg::of(7.0))],
            10,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, 0);
        assert_eq!(r[0].1.count, 2);
        assert_eq!(r[0].1.average(), 2.0);
        assert_eq!(r[0].1.statistic(Statistic::Maximum), 3.0);
        assert_eq!(r[1], (10, Agg::of(7.0)));
    }

    #[test]
    fn the_plan_reads_the_coarsest_tier_that_keeps_the_window() {
        let t = DEFAULT_TIERS;
        // (window, asked step, tier read, step answered)
        let table = [
            (3600, 10, 0, 10),
            (3600, 60, 1, 60),
            // A week at 10 s: the 10 s tier keeps only a day, so 1 min answers.
            (7 * DAY, 10, 1, 60),
            (30 * DAY, 60, 2, 300),
            (3600, 1, 0, 10),
            (3600, 90, 1, 120),
            (1000 * DAY, 3600, 3, 3600),
        ];
        for (window, step, tier, answered) in table {
            let want = Plan {
                tier: t[tier],
                step: answered,
            };
            assert_eq!(plan(&t, window, step), want, "{window}s at {step}s");
        }
    }

    #[test]
    fn resolutions_parse_finest_first_and_nest() {
        assert_eq!(
            parse_tiers("10s:1d,1m:15d,5m:63d,1h:456d").expect("default"),
            DEFAULT_TIERS.to_vec()
        );
        assert_eq!(
            parse_tiers("1s:1h").expect("one"),
            vec![Tier {
                step: 1,
                keep: 3600
            }]
        );
        for bad in [
            "",
            "10s",
            "0s:1d",
            "10s:5s",
            "1m:1d,10s:1h",
            "10s:1d,15s:2d",
            "10s:1d,1m:1h",
        ] {
            assert!(parse_tiers(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn rolling_up_in_stages_is_rolling_up_at_once(
            samples in proptest::collection::vec((0i64..100_000, -1e6f64..1e6), 1..200),
        ) {
            let raw: Vec<(i64, Agg)> = samples.iter().map(|(t, v)| (*t, Agg::of(*v))).collect();
            let direct = rollup(raw.clone(), 300);
            let staged = rollup(rollup(rollup(raw, 10), 60), 300);
            prop_assert_eq!(direct.len(), staged.len());
            for ((ta, a), (tb, b)) in direct.iter().zip(&staged) {
                prop_assert_eq!(ta, tb);
                prop_assert_eq!(a.count, b.count);
                prop_assert!(close(a.sum, b.sum));
                prop_assert_eq!(a.min, b.min);
                prop_assert_eq!(a.max, b.max);
            }
            let total: u64 = direct.iter().map(|(_, a)| a.count).sum();
            prop_assert_eq!(total as usize, samples.len());
        }

        #[test]
        fn merging_is_order_free_and_bounds_the_mean(
            a in -1e6f64..1e6, b in -1e6f64..1e6, c in -1e6f64..1e6,
        ) {
            let (a, b, c) = (Agg::of(a), Agg::of(b), Agg::of(c));
            let l = a.merge(b).merge(c);
            let r = c.merge(a.merge(b));
            prop_assert_eq!(l.count, r.count);
            prop_assert!(close(l.sum, r.sum));
            prop_assert_eq!((l.min, l.max), (r.min, r.max));
            prop_assert!(l.min <= l.average() + 1e-6 && l.average() <= l.max + 1e-6);
        }

        #[test]
        fn a_plan_answers_in_whole_tier_steps_no_finer_than_asked(
            window in 1i64..(500 * DAY), step in 1i64..100_000,
        ) {
            let p = plan(&DEFAULT_TIERS, window, step);
            prop_assert_eq!(p.step % p.tier.step, 0);
            prop_assert!(p.step >= step);
            prop_assert!(p.step < step + p.tier.step);
        }
    }
}
