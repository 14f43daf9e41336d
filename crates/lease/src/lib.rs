//! Leader leases (issue 9, automatic failover): only the holder of an instance's
//! leader lease may be its writable primary.
//!
//! A lease has a **name** (the instance id), a **holder** (a member's container
//! name) and a **term**: a number per name that grows by one at every new tenure
//! (each time the lease is taken while free or expired) and is never reused, so a
//! term names one holder's one tenure and can fence writes made under an older one.
//! Taking a lease one already holds is a renewal and keeps the term.
//!
//! [`LeaseStore`] is the seam, with two stores:
//! - [`MemoryLeases`], in memory, on the monotonic clock ([`clock`]; tests inject
//!   their own): the embedded default, which the control plane holds for the members
//!   it grants leases to (`server/src/failover.rs`).
//! - [`EtcdLeases`], etcd v3 through its JSON gateway over HTTP (a lease per
//!   tenure, the key attached to it, the term in a key of its own written in the same
//!   transaction).
//!
//! # When a holder must stop
//!
//! The store and the holder measure time on different clocks, and the request takes
//! time to arrive. The store ends a lease no earlier than (the instant it
//! *received* the request that granted or renewed it) + TTL, on its clock. The
//! holder knows only when it *sent* that request, which is earlier. So the holder
//! treats its lease as ended at
//!
//! ```text
//!     sent + ttl − margin        (on the holder's own monotonic clock)
//! ```
//!
//! ([`safe_until`]). Were both clocks to run at the same rate, `margin = 0` would be
//! safe: sent ≤ received. Clock rates differ, by at most a fraction ρ, so over one
//! TTL the holder's clock may run up to ρ·ttl ahead of the store's; and the holder
//! needs time to act on the deadline (stop acknowledging writes) once it notices it.
//! Safety needs `margin ≥ ρ·ttl + reaction time`. A holder renews well before that
//! deadline (at a third of the TTL, say) and, when a renewal fails or does not come
//! back in time, stops acting as holder at the deadline of the last renewal that did.
//! [`Lease::expires`] is `sent + ttl`, the margin-free estimate; apply the margin
//! with [`Lease::safe_until`].

pub mod clock;
mod etcd;
mod memory;

pub use etcd::{parse_etcd_url, EtcdEndpoint, EtcdLeases};
pub use memory::MemoryLeases;

use async_trait::async_trait;
use std::time::{Duration, Instant};

/// The longest TTL a lease may be asked for. Leader leases last seconds; a day is
/// far beyond any use and keeps instant arithmetic from overflowing.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// A lease as the store granted or reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What the lease is for (an instance id).
    pub name: String,
    /// Who holds it (a member's container name).
    pub holder: String,
    /// The holder's tenure: grows by one at every new tenure, never reused.
    pub term: u64,
    /// From an acquire or a renewal, the TTL the store granted (etcd rounds up to
    /// whole seconds and has a minimum); from a read, what was left when the store
    /// answered (etcd: whole seconds, rounded down).
    pub ttl: Duration,
    /// Local monotonic estimate: when the request was sent, plus [`Lease::ttl`]. The
    /// store ends the lease no earlier than this if clocks ran at one rate; a holder
    /// stops at [`Lease::safe_until`] instead.
    pub expires: Instant,
}

impl Lease {
    /// When the holder must stop acting as holder: [`Lease::expires`] less `margin`
    /// (see the crate docs for how large the margin must be).
    pub fn safe_until(&self, margin: Duration) -> Instant {
        self.expires.checked_sub(margin).unwrap_or(self.expires)
    }
}

/// What a holder last said of itself beside its lease ([`LeaseStore::note`]): kept
/// after the tenure ends, so that those who elect the next holder know what the last
/// one had (a primary's last write position, as Patroni keeps its leader's optime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Who said it.
    pub holder: String,
    /// In which tenure.
    pub term: u64,
    /// What it said (the store does not read it).
    pub text: String,
}

/// When a holder must consider its lease ended: `sent + ttl − margin` on its own
/// monotonic clock, where `sent` is when it sent the request that granted or
/// renewed the lease. A margin at least as long as the TTL gives `sent` (the lease
/// is of no use). See the crate docs for the argument.
pub fn safe_until(sent: Instant, ttl: Duration, margin: Duration) -> Instant {
    sent.checked_add(ttl.saturating_sub(margin)).unwrap_or(sent)
}

/// What can go wrong talking to a lease store. No message carries a secret: etcd
/// URLs with credentials are refused before any request, and answers are quoted
/// only from etcd's own error text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LeaseError {
    /// A lease name or holder was empty.
    #[error("the lease {0} must not be empty")]
    Empty(&'static str),
    /// A TTL of zero or above [`MAX_TTL`].
    #[error("a lease TTL must be more than zero and at most {max:?}, not {ttl:?}")]
    InvalidTtl {
        /// What was asked for.
        ttl: Duration,
        /// [`MAX_TTL`].
        max: Duration,
    },
    /// An etcd URL that cannot be used; the message says what to write instead.
    #[error("invalid etcd URL: {0}")]
    InvalidUrl(String),
    /// The HTTP client for etcd could not be set up.
    #[error("could not set up the HTTP client for etcd: {0}")]
    Client(String),
    /// No etcd endpoint could be reached (or the request timed out).
    #[error("etcd did not answer ({endpoint}{path}): {reason}; check that it runs and that the URL is right")]
    Unreachable {
        /// The endpoint tried last.
        endpoint: String,
        /// The gateway path.
        path: &'static str,
        /// Connection refused, timed out, …
        reason: String,
    },
    /// etcd answered with an error.
    #[error("etcd refused {path} ({endpoint}): {message}")]
    Etcd {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path.
        path: &'static str,
        /// etcd's own error message (or the HTTP status).
        message: String,
    },
    /// etcd's answer, or a value stored under Berth's prefix, could not be read.
    #[error("unexpected data from etcd ({what}): {reason}")]
    Protocol {
        /// Which answer or key.
        what: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// This crate's result.
pub type Result<T, E = LeaseError> = std::result::Result<T, E>;

/// Leader leases, keyed by name. Every operation is one decision of the store: two
/// callers racing for a free lease get one winner.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease `name` for `holder` when it is free, expired or already
    /// `holder`'s (then it is a renewal and keeps its term). A new tenure gets the
    /// name's previous term + 1 (the first is 1). `None` when another holder has an
    /// unexpired lease.
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Extends the lease by `ttl` from now (or more: [`Lease::ttl`] says what the
    /// store granted), only when `holder` still holds it in `term`. `None` means the lease is lost: stop acting as holder (at the latest
    /// at the deadline of the last successful renewal).
    async fn renew(
        &self,
        name: &str,
        holder: &str,
        term: u64,
        ttl: Duration,
    ) -> Result<Option<Lease>>;

    /// Gives the lease up, when `holder` holds it in `term`; `false` when it did not
    /// (already expired, released or taken).
    async fn release(&self, name: &str, holder: &str, term: u64) -> Result<bool>;

    /// Who holds `name` now, in which term, and how long the store will keep it
    /// without a renewal. `None` when the lease is free or expired.
    async fn read(&self, name: &str) -> Result<Option<Lease>>;

    /// Keeps `text` as `name`'s [`Note`], replacing the one before, only while
    /// `holder` holds the lease in `term`; `false` when it does not. The note
    /// outlives the tenure: it is what the next election reads of the last holder.
    async fn note(&self, name: &str, holder: &str, term: u64, text: &str) -> Result<bool>;

    /// The last note kept for `name`, whether or not its tenure still runs.
    async fn last_note(&self, name: &str) -> Result<Option<Note>>;
}

/// Refuses what no store can keep: an empty name or holder, a TTL of zero or above
/// [`MAX_TTL`].
fn check(name: &str, holder: Option<&str>, ttl: Option<Duration>) -> Result<()> {
    if name.is_empty() {
        return Err(LeaseError::Empty("name"));
    }
    if holder.is_some_and(str::is_empty) {
        return Err(LeaseError::Empty("holder"));
    }
    if let Some(ttl) = ttl {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(LeaseError::InvalidTtl { ttl, max: MAX_TTL });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_until_is_sent_plus_ttl_less_margin() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(safe_until(sent, ttl, Duration::ZERO), sent + ttl);
        assert_eq!(
            safe_until(sent, ttl, Duration::from_millis(1500)),
            sent + Duration::from_millis(8500)
        );
    }

    #[test]
    fn a_margin_as_long_as_the_ttl_leaves_nothing() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(2);
        assert_eq!(safe_until(sent, ttl, ttl), sent);
        assert_eq!(safe_until(sent, ttl, Duration::from_secs(3)), sent);
    }

    #[test]
    fn a_lease_s_safe_until_applies_the_margin_to_its_expiry() {
        let now = Instant::now();
        let lease = Lease {
            name: "i".into(),
            holder: "m0".into(),
            term: 1,
            ttl: Duration::from_secs(10),
            expires: now + Duration::from_secs(10),
        };
        assert_eq!(
            lease.safe_until(Duration::from_secs(1)),
            safe_until(now, lease.ttl, Duration::from_secs(1))
        );
    }

    #[test]
    fn check_refuses_empty_names_and_bad_ttls() {
        let ttl = Some(Duration::from_secs(1));
        assert_eq!(check("", Some("m"), ttl), Err(LeaseError::Empty("name")));
        assert_eq!(check("i", Some(""), ttl), Err(LeaseError::Empty("holder")));
        assert!(matches!(
            check("i", Some("m"), Some(Duration::ZERO)),
            Err(LeaseError::InvalidTtl { .. })
        ));
        assert!(matches!(
            check("i", Some("m"), Some(MAX_TTL + Duration::from_nanos(1))),
            Err(LeaseError::InvalidTtl { .. })
        ));
        assert_eq!(check("i", Some("m"), Some(MAX_TTL)), Ok(()));
        assert_eq!(check("i", None, None), Ok(()));
    }
}
