//! [`EtcdLeases`]: leases kept in etcd v3, through its JSON gateway.
//!
//! A tenure is one etcd lease (granted with the TTL, in whole seconds rounded up)
//! and one key attached to it, `<prefix>/leases/<name>` = `{"holder", "term"}`:
//! when etcd ends the lease, the key goes with it. The key is created only when
//! absent (`create_revision == 0`), in the same transaction as
//! `<prefix>/terms/<name>` = the new term, compared to the revision it was read at:
//! two racing acquirers get one winner, and a term is never given twice. Renewal
//! refreshes the attached etcd lease after checking that the key still names the
//! holder and term; release revokes it (which deletes the key). A holder's note is
//! `<prefix>/notes/<name>` = `{"holder", "term", "text"}`, attached to no lease (it
//! outlives the tenure), written only if the lease key is unchanged since it was
//! read as the holder's.

mod gateway;
mod url;

pub use url::{parse_etcd_url, EtcdEndpoint};

use crate::{check, Lease, LeaseError, LeaseStore, Note, Result};
use async_trait::async_trait;
use gateway::{Compare, Gateway, KeyValue, Put};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Attempts of an acquire that lost a race before it answers `None`: each lost race
/// means another caller changed the lease meanwhile.
const ACQUIRE_ATTEMPTS: usize = 4;

/// Leases in etcd (see the module docs for the keys). Plain HTTP: etcd on a trusted
/// network, no authentication yet. Where reqwest is built with rustls and no crypto
/// provider (the workspace), the process installs one before [`EtcdLeases::new`].
pub struct EtcdLeases {
    gateway: Gateway,
    prefix: String,
}

/// The value of a lease key.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Tenure {
    holder: String,
    term: u64,
}

/// The value of a note key.
#[derive(Debug, Serialize, Deserialize)]
struct NoteValue {
    holder: String,
    term: u64,
    text: String,
}

impl EtcdLeases {
    /// How long a request to etcd may take before it counts as failed, unless set
    /// with [`EtcdLeases::with_request_timeout`]. Keep it well below the TTL: a
    /// renewal that comes back late is of no use.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

    /// Leases under `prefix` (e.g. `/berth`; a trailing `/` is dropped) on these
    /// members. Makes no request.
    pub fn new(endpoints: Vec<EtcdEndpoint>, prefix: &str) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(LeaseError::InvalidUrl("no etcd endpoint given".into()));
        }
        let prefix = normalize_prefix(prefix)?;
        Ok(Self {
            gateway: Gateway::new(endpoints, Self::DEFAULT_REQUEST_TIMEOUT)?,
            prefix,
        })
    }

    /// [`EtcdLeases::new`] on the members of an `etcd://h1:2379,h2:2379` URL (see
    /// [`parse_etcd_url`]).
    pub fn from_url(url: &str, prefix: &str) -> Result<Self> {
        Self::new(parse_etcd_url(url)?, prefix)
    }

    /// Sets how long one request may take (default [`EtcdLeases::DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.gateway.set_timeout(timeout);
        self
    }

    fn lease_key(&self, name: &str) -> String {
        key(&self.prefix, "leases", name)
    }

    fn term_key(&self, name: &str) -> String {
        key(&self.prefix, "terms", name)
    }

    fn note_key(&self, name: &str) -> String {
        key(&self.prefix, "notes", name)
    }

    /// The tenure a lease key names.
    /// The lease key of `name` and its tenure, when `holder` holds it in `term` (a
    /// lease gone, or another holder or term, is `None`): what renew, release and
    /// note each check first.
    async fn held_by(
        &self,
        name: &str,
        holder: &str,
        term: u64,
    ) -> Result<Option<(String, KeyValue, Tenure)>> {
        let key = self.lease_key(name);
        let Some(kv) = self.gateway.get(&key).await? else {
            return Ok(None);
        };
        let tenure = self.tenure(&key, &kv)?;
        if tenure.holder != holder || tenure.term != term {
            return Ok(None);
        }
        Ok(Some((key, kv, tenure)))
    }

    fn tenure(&self, key: &str, kv: &KeyValue) -> Result<Tenure> {
        serde_json::from_slice(&kv.value).map_err(|e| LeaseError::Protocol {
            what: format!("key {key}"),
            reason: format!("not a lease value: {e}"),
        })
    }

    /// The last term given for `name`, and the revision it was written at (0, 0
    /// when none was).
    async fn last_term(&self, name: &str) -> Result<(u64, i64)> {
        let key = self.term_key(name);
        let Some(kv) = self.gateway.get(&key).await? else {
            return Ok((0, 0));
        };
        let term = std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| LeaseError::Protocol {
                what: format!("key {key}"),
                reason: "not a term number".into(),
            })?;
        Ok((term, kv.mod_revision))
    }

    /// Starts a tenure for `holder` if the lease key is still absent and the term
    /// key unchanged; `None` when another caller got there first.
    async fn start_tenure(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let (last, term_revision) = self.last_term(name).await?;
        let term = last.checked_add(1).ok_or_else(|| LeaseError::Protocol {
            what: format!("key {}", self.term_key(name)),
            reason: "the term cannot grow further".into(),
        })?;
        let value = tenure_value(holder, term)?;
        let (key, term_key) = (self.lease_key(name), self.term_key(name));
        let sent = Instant::now();
        let granted = self.gateway.grant(ttl_secs(ttl)).await?;
        let won = self
            .gateway
            .txn(
                &[
                    Compare::Absent(&key),
                    Compare::ModRevision(&term_key, term_revision),
                ],
                &[
                    Put {
                        key: &key,
                        value: &value,
                        lease: granted.id,
                    },
                    Put {
                        key: &term_key,
                        value: term.to_string().as_bytes(),
                        lease: 0,
                    },
                ],
            )
            .await;
        match won {
            Ok(true) => Ok(Some(lease(name, holder, term, granted.ttl_secs, sent))),
            lost_or_unknown => {
                // Lost, or not known whether it was applied: either way nobody was
                // told they hold it, and revoking removes the key if it was written.
                self.revoke_quietly(granted.id).await;
                lost_or_unknown.map(|_| None)
            }
        }
    }

    /// Refreshes the tenure in `kv` (already checked to be `holder`'s in `term`).
    /// etcd refreshes a lease for the TTL it was granted with; asking for a longer
    /// one moves the key to a new etcd lease of that TTL, asking for a shorter one
    /// keeps the longer (it is never less than asked). `None` when it is gone.
    async fn extend(
        &self,
        name: &str,
        kv: &KeyValue,
        tenure: Tenure,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let sent = Instant::now();
        let granted = self.gateway.keep_alive(kv.lease).await?;
        if granted <= 0 {
            return Ok(None);
        }
        let wanted = ttl_secs(ttl);
        if granted >= wanted {
            return Ok(Some(lease(
                name,
                &tenure.holder,
                tenure.term,
                granted,
                sent,
            )));
        }
        let key = self.lease_key(name);
        let sent = Instant::now();
        let longer = self.gateway.grant(wanted).await?;
        let moved = self
            .gateway
            .txn(
                &[Compare::ModRevision(&key, kv.mod_revision)],
                &[Put {
                    key: &key,
                    value: &kv.value,
                    lease: longer.id,
                }],
            )
            .await;
        match moved {
            Ok(true) => {
                self.revoke_quietly(kv.lease).await;
                Ok(Some(lease(
                    name,
                    &tenure.holder,
                    tenure.term,
                    longer.ttl_secs,
                    sent,
                )))
            }
            lost_or_unknown => {
                self.revoke_quietly(longer.id).await;
                lost_or_unknown.map(|_| None)
            }
        }
    }

    /// Revokes an etcd lease nobody relies on; failing that, it ends at its TTL.
    async fn revoke_quietly(&self, lease: i64) {
        if let Err(e) = self.gateway.revoke(lease).await {
            tracing::debug!(error = %e, "an unused etcd lease is left to expire");
        }
    }
}

/// The prefix without its trailing `/`; refused when nothing is left.
fn normalize_prefix(prefix: &str) -> Result<String> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(LeaseError::Empty("etcd key prefix"));
    }
    Ok(prefix.to_owned())
}

fn key(prefix: &str, kind: &str, name: &str) -> String {
    format!("{prefix}/{kind}/{name}")
}

fn tenure_value(holder: &str, term: u64) -> Result<Vec<u8>> {
    serde_json::to_vec(&Tenure {
        holder: holder.to_owned(),
        term,
    })
    .map_err(|e| LeaseError::Protocol {
        what: "lease value".into(),
        reason: e.to_string(),
    })
}

/// Whole seconds, rounded up: etcd's TTLs are seconds, and less would be unsafe.
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn lease(name: &str, holder: &str, term: u64, ttl_secs: i64, sent: Instant) -> Lease {
    let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0));
    Lease {
        name: name.to_owned(),
        holder: holder.to_owned(),
        term,
        ttl,
        expires: sent.checked_add(ttl).unwrap_or(sent),
    }
}

#[async_trait]
impl LeaseStore for EtcdLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        check(name, Some(holder), Some(ttl))?;
        let key = self.lease_key(name);
        for _ in 0..ACQUIRE_ATTEMPTS {
            if let Some(kv) = self.gateway.get(&key).await? {
                let tenure = self.tenure(&key, &kv)?;
                if tenure.holder != holder {
                    return Ok(None);
                }
                if let Some(renewed) = self.extend(name, &kv, tenure, ttl).await? {
                    return Ok(Some(renewed));
                }
                // It ended between the read and the renewal: take it anew.
            }
            if let Some(started) = self.start_tenure(name, holder, ttl).await? {
                return Ok(Some(started));
            }
            tracing::debug!(lease = name, "lost a race for the lease; reading it again");
        }
        Ok(None)
    }

    async fn renew(
        &self,
        name: &str,
        holder: &str,
        term: u64,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        check(name, Some(holder), Some(ttl))?;
        let Some((_, kv, tenure)) = self.held_by(name, holder, term).await? else {
            return Ok(None);
        };
        self.extend(name, &kv, tenure, ttl).await
    }

    async fn release(&self, name: &str, holder: &str, term: u64) -> Result<bool> {
        check(name, Some(holder), None)?;
        let Some((_, kv, _)) = self.held_by(name, holder, term).await? else {
            return Ok(false);
        };
        // The key lives exactly as long as this etcd lease: if it ended meanwhile and
        // someone else started a tenure, theirs is another etcd lease, untouched.
        self.gateway.revoke(kv.lease).await
    }

    async fn read(&self, name: &str) -> Result<Option<Lease>> {
        check(name, None, None)?;
        let key = self.lease_key(name);
        let Some(kv) = self.gateway.get(&key).await? else {
            return Ok(None);
        };
        let tenure = self.tenure(&key, &kv)?;
        let sent = Instant::now();
        // Whole seconds, rounded down: the lease may last up to a second longer
        // than this says.
        let Some(left) = self.gateway.time_to_live(kv.lease).await? else {
            return Ok(None);
        };
        Ok(Some(lease(name, &tenure.holder, tenure.term, left, sent)))
    }

    async fn note(&self, name: &str, holder: &str, term: u64, text: &str) -> Result<bool> {
        check(name, Some(holder), None)?;
        let Some((key, kv, _)) = self.held_by(name, holder, term).await? else {
            return Ok(false);
        };
        let value = serde_json::to_vec(&NoteValue {
            holder: holder.to_owned(),
            term,
            text: text.to_owned(),
        })
        .map_err(|e| LeaseError::Protocol {
            what: "note value".into(),
            reason: e.to_string(),
        })?;
        self.gateway
            .txn(
                &[Compare::ModRevision(&key, kv.mod_revision)],
                &[Put {
                    key: &self.note_key(name),
                    value: &value,
                    lease: 0,
                }],
            )
            .await
    }

    async fn last_note(&self, name: &str) -> Result<Option<Note>> {
        check(name, None, None)?;
        let key = self.note_key(name);
        let Some(kv) = self.gateway.get(&key).await? else {
            return Ok(None);
        };
        let v: NoteValue = serde_json::from_slice(&kv.value).map_err(|e| LeaseError::Protocol {
            what: format!("key {key}"),
            reason: format!("not a note value: {e}"),
        })?;
        Ok(Some(Note {
            holder: v.holder,
            term: v.term,
            text: v.text,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_secs(5)), 5);
        assert_eq!(ttl_secs(Duration::from_millis(5001)), 6);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
    }

    #[test]
    fn keys_sit_under_the_prefix() {
        // Without a client: under a workspace build, making one needs a crypto
        // provider installed first.
        let prefix = normalize_prefix("/berth/").expect("valid");
        assert_eq!(key(&prefix, "leases", "i1"), "/berth/leases/i1");
        assert_eq!(key(&prefix, "terms", "i1"), "/berth/terms/i1");
        assert!(matches!(
            EtcdLeases::new(vec![], "/b"),
            Err(LeaseError::InvalidUrl(_))
        ));
        let endpoints = parse_etcd_url("etcd://h1").expect("valid");
        assert_eq!(
            EtcdLeases::new(endpoints, "/").err(),
            Some(LeaseError::Empty("etcd key prefix"))
        );
    }

    #[test]
    fn a_lease_value_is_holder_and_term() {
        let value = tenure_value("m0", 3).expect("serializes");
        assert_eq!(value, br#"{"holder":"m0","term":3}"#);
    }
}
