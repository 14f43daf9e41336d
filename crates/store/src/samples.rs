//! The metric history: each sample folded into one bucket per resolution in one
//! transaction (so every resolution holds the same samples), read back by
//! resolution, pruned by each resolution's own retention. See
//! [`berth_model::metrics::rollup`] for the arithmetic.

use crate::{Result, Store};
use berth_model::metrics::rollup::{bucket, Agg, Tier};
use berth_model::metrics::Metric;
use berth_model::InstanceId;
use sqlx::Row;

/// One stored bucket of one member.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBucket {
    /// The member's index.
    pub member: u32,
    /// The bucket's start (Unix seconds).
    pub ts: i64,
    /// What it holds.
    pub agg: Agg,
}

/// A member's latest value of one metric ([`Store::latest_samples`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LatestSample {
    /// The instance's id.
    pub instance: String,
    /// The member's index.
    pub member: u32,
    /// Which metric.
    pub metric: Metric,
    /// The bucket's start (Unix seconds).
    pub ts: i64,
    /// The mean of the bucket's samples.
    pub value: f64,
}

impl Store {
    /// Folds one reading of a member (taken at `at`, Unix seconds) into every
    /// resolution. Values that are not finite are not measurements and are skipped.
    pub async fn record_samples(
        &self,
        instance: InstanceId,
        member: u32,
        at: i64,
        values: &[(Metric, f64)],
        tiers: &[Tier],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (metric, v) in values.iter().filter(|(_, v)| v.is_finite()) {
            for t in tiers {
                sqlx::query(
                    "INSERT INTO samples (instance_id, member, metric, step, ts, count, sum, min, max)
                     VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)
                     ON CONFLICT (instance_id, metric, step, ts, member) DO UPDATE SET
                       count = count + 1, sum = sum + excluded.sum,
                       min = MIN(min, excluded.min), max = MAX(max, excluded.max)",
                )
                .bind(instance.to_string())
                .bind(i64::from(member))
                .bind(metric.as_str())
                .bind(t.step)
                .bind(bucket(at, t.step))
                .bind(v)
                .bind(v)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The buckets of one resolution from `since` on, by time then member.
    pub async fn read_samples(
        &self,
        instance: InstanceId,
        metric: Metric,
        step: i64,
        since: i64,
    ) -> Result<Vec<StoredBucket>> {
        let rows = sqlx::query(
            "SELECT member, ts, count, sum, min, max FROM samples
             WHERE instance_id = ? AND metric = ? AND step = ? AND ts >= ?
             ORDER BY ts, member",
        )
        .bind(instance.to_string())
        .bind(metric.as_str())
        .bind(step)
        .bind(bucket(since, step))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredBucket {
                    member: u32::try_from(r.try_get::<i64, _>("member")?).unwrap_or(0),
                    ts: r.try_get("ts")?,
                    agg: Agg {
                        count: u64::try_from(r.try_get::<i64, _>("count")?).unwrap_or(0),
                        sum: r.try_get("sum")?,
                        min: r.try_get("min")?,
                        max: r.try_get("max")?,
                    },
                })
            })
            .collect()
    }

    /// Every member's newest bucket of resolution `step` that starts at or after
    /// `since`, per instance, member and metric, with its mean: what `/metrics`
    /// shows as the latest value. A member that stopped answering ages out of it.
    pub async fn latest_samples(&self, step: i64, since: i64) -> Result<Vec<LatestSample>> {
        let rows = sqlx::query(
            "SELECT instance_id, member, metric, ts, count, sum FROM samples
             WHERE step = ? AND ts >= ? ORDER BY ts",
        )
        .bind(step)
        .bind(bucket(since, step))
        .fetch_all(&self.pool)
        .await?;
        let mut latest: std::collections::BTreeMap<(String, u32, Metric), LatestSample> =
            std::collections::BTreeMap::new();
        for r in &rows {
            let Ok(metric) = r.try_get::<String, _>("metric")?.parse::<Metric>() else {
                continue;
            };
            let count: i64 = r.try_get("count")?;
            if count <= 0 {
                continue;
            }
            let instance: String = r.try_get("instance_id")?;
            let member = u32::try_from(r.try_get::<i64, _>("member")?).unwrap_or(0);
            let sum: f64 = r.try_get("sum")?;
            // Rows come oldest first: the last one of each key wins.
            latest.insert(
                (instance.clone(), member, metric),
                LatestSample {
                    instance,
                    member,
                    metric,
                    ts: r.try_get("ts")?,
                    value: sum / count as f64,
                },
            );
        }
        Ok(latest.into_values().collect())
    }

    /// Removes buckets older than their resolution keeps (and those of resolutions
    /// no longer configured); returns how many went.
    pub async fn prune_samples(&self, tiers: &[Tier], now: i64) -> Result<u64> {
        let mut removed = 0;
        for t in tiers {
            removed += sqlx::query("DELETE FROM samples WHERE step = ? AND ts < ?")
                .bind(t.step)
                .bind(now - t.keep)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        let steps = tiers
            .iter()
            .map(|t| t.step.to_string())
            .collect::<Vec<_>>()
            .join(",");
        removed += // Integers only: nothing from outside reaches this statement.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM samples WHERE step NOT IN ({steps})"
        )))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::metrics::rollup::{rollup, DEFAULT_TIERS};

    #[tokio::test]
    async fn samples_fold_into_every_resolution_and_read_back_as_one_rollup() {
        let store = Store::in_memory().await.expect("store");
        let id = InstanceId::new_random();
        let tiers = DEFAULT_TIERS;
        let values: Vec<(i64, f64)> = (0..30).map(|i| (1_000_000 + i * 7, i as f64)).collect();
        for (at, v) in &values {
            store
                .record_samples(
                    id,
                    0,
                    *at,
                    &[(Metric::Tps, *v), (Metric::Connections, f64::NAN)],
                    &tiers,
                )
                .await
                .expect("record");
        }
        let raw: Vec<(i64, Agg)> = values.iter().map(|(t, v)| (*t, Agg::of(*v))).collect();
        for t in tiers {
            let stored = store
                .read_samples(id, Metric::Tps, t.step, 0)
                .await
                .expect("read");
            let got: Vec<(i64, Agg)> = stored.iter().map(|b| (b.ts, b.agg)).collect();
            assert_eq!(got, rollup(raw.clone(), t.step), "step {}", t.step);
        }
        // Not a measurement: nothing stored.
        let nan = store
            .read_samples(id, Metric::Connections, 10, 0)
            .await
            .expect("read");
        assert!(nan.is_empty());
        // Each resolution goes by its own retention.
        let now = 1_000_000 + 2 * 86_400;
        assert!(store.prune_samples(&tiers, now).await.expect("prune") > 0);
        assert!(store
            .read_samples(id, Metric::Tps, 10, 0)
            .await
            .expect("read")
            .is_empty());
        assert!(!store
            .read_samples(id, Metric::Tps, 60, 0)
            .await
            .expect("read")
            .is_empty());
        // A resolution dropped from the configuration goes at once.
        store.prune_samples(&tiers[..1], now).await.expect("prune");
        assert!(store
            .read_samples(id, Metric::Tps, 60, 0)
            .await
            .expect("read")
            .is_empty());
    }

    #[tokio::test]
    async fn the_latest_sample_is_each_members_newest_recent_bucket_mean() {
        let store = Store::in_memory().await.expect("store");
        let (a, b) = (InstanceId::new_random(), InstanceId::new_random());
        let tiers = DEFAULT_TIERS;
        // a/0: two samples in bucket 1000, one in 1010 (newest); a/1 only long ago.
        for (id, m, at, v) in [
            (a, 0, 1_000, 1.0),
            (a, 0, 1_005, 3.0),
            (a, 0, 1_012, 10.0),
            (a, 1, 900, 7.0),
            (b, 0, 1_001, 2.0),
            (b, 0, 1_003, 4.0),
        ] {
            store
                .record_samples(id, m, at, &[(Metric::Tps, v)], &tiers)
                .await
                .expect("record");
        }
        let got = store.latest_samples(10, 990).await.expect("latest");
        let mut seen: Vec<(String, u32, f64)> = got
            .iter()
            .map(|l| (l.instance.clone(), l.member, l.value))
            .collect();
        seen.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        let mut want = vec![(a.to_string(), 0, 10.0), (b.to_string(), 0, 3.0)];
        want.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        assert_eq!(seen, want, "a/1 aged out; means of the newest buckets");
        assert!(got.iter().all(|l| l.metric == Metric::Tps));
    }
}
