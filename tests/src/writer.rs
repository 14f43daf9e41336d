//! A steady writer for load and fault tests: it inserts 1, 2, 3, … through an
//! endpoint, reconnecting after errors, and keeps every number whose commit was
//! acknowledged, with when.

use crate::Db;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The writer. Bounded by `LIMIT` rows and by the time its test lets it run.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u32, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

const LIMIT: u32 = 100_000;

impl Writer {
    pub fn start(uri: String, table: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(vec![]));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut db: Option<Db> = None;
            let mut n = 0u32;
            while !s.load(Ordering::Relaxed) && n < LIMIT {
                let conn = match db.as_mut() {
                    Some(c) => c,
                    None => {
                        match tokio::time::timeout(Duration::from_secs(3), Db::connect_once(&uri))
                            .await
                        {
                            Ok(Ok(c)) => db.insert(c),
                            _ => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                };
                n += 1;
                let insert = format!("INSERT INTO {table} VALUES ({n})");
                match tokio::time::timeout(Duration::from_secs(10), conn.exec(&insert)).await {
                    Ok(Ok(())) => a
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((n, Instant::now())),
                    // Not acknowledged: it may or may not have committed; never counted.
                    _ => db = None,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { stop, acked, task }
    }

    pub fn count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until `more` further commits were acknowledged (bounded).
    pub async fn progress(&self, more: usize) -> anyhow::Result<()> {
        let want = self.count() + more;
        let started = Instant::now();
        while self.count() < want {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the writer made no progress for 60 s ({} acknowledged)",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops it; every acknowledged number with when it was acknowledged.
    pub async fn finish_timed(self) -> Vec<(u32, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        acked
    }

    /// Stops it; the acknowledged numbers and the longest pause between two
    /// acknowledgements.
    pub async fn finish(self) -> (Vec<u32>, Duration) {
        let acked = self.finish_timed().await;
        let gap = acked
            .windows(2)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default();
        (acked.into_iter().map(|(n, _)| n).collect(), gap)
    }
}

/// The pauses between consecutive acknowledged commits longer than `min`, in order:
/// each is a write outage as a client saw it.
pub fn outages(acked: &[(u32, Instant)], min: Duration) -> Vec<Duration> {
    acked
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1))
        .filter(|d| *d >= min)
        .collect()
}
