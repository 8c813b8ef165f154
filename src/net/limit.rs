//! Per-address rate limits (GCRA buckets from `governor`), so that guessing tokens, keys or
//! passwords, and creating rows without authentication, cost an attacker time:
//!
//! * **failures** — each refused guess (a 401 with credentials, 403, 404 or 410 on the
//!   provisioning, wizard and authenticated API routes) takes one cell; once the bucket is
//!   empty the address is *blocked* until a cell comes back, and every request it makes to
//!   those routes is answered 429 before any database work. Successes never take a cell, so a
//!   busy office behind one NAT that provisions normally is never limited.
//! * **anonymous** — each row created without authentication (an auth token, a Digest
//!   challenge) takes one cell, checked before the row is written.
//!
//! Addresses are keyed per IPv4 address and per IPv6 /64 (one host usually holds a whole /64,
//! so finer keys would let it rotate addresses for free). Keys live in sharded maps, so one
//! address's bucket never waits on another's; [`Limits::sweep`] (on a timer) forgets keys
//! whose buckets are full again, which bounds memory under a churn of hostile addresses.

use crate::config::RateLimitSettings;
use crate::error::AppError;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Tracked keys past which a record triggers an immediate sweep instead of waiting for the
/// timer (about 100 bytes each, so roughly 100 MB at worst before the sweep reclaims them).
pub const SWEEP_ABOVE_KEYS: usize = 1 << 20;

/// How often the HTTP server calls [`Limits::sweep`].
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The bucket an address is counted in: its IPv4 address, or the /64 of its IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    /// An IPv4 client (IPv4-mapped IPv6 included).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 client.
    V6([u8; 8]),
}

impl AddrKey {
    /// The key of a client address.
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddrKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                AddrKey::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        }
    }
}

/// Which limit refused a request (the `limit` label of `provisio_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Too many failed guesses.
    Failures,
    /// Too many rows created without authentication.
    Anonymous,
}

impl LimitKind {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Failures => "failures",
            LimitKind::Anonymous => "anonymous",
        }
    }
}

/// A refusal: which limit, and how long until the address may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The limit that refused.
    pub kind: LimitKind,
    /// Time until the next cell.
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds, rounded up, at least 1 (0 would invite a hot loop).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl From<Limited> for AppError {
    fn from(l: Limited) -> AppError {
        let message = match l.kind {
            LimitKind::Failures => "Too many failed requests from your address",
            LimitKind::Anonymous => "Too many requests from your address",
        };
        AppError::RateLimited {
            message: format!("{message}; retry in {} seconds.", l.retry_after_secs()),
            retry_after_secs: l.retry_after_secs(),
        }
    }
}

/// A keyed GCRA limiter on clock `C`.
type Keyed<C> =
    RateLimiter<AddrKey, DashMapStateStore<AddrKey>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Both limits, held in the application state.
pub struct Limits<C: Clock = DefaultClock> {
    /// Failed guesses per address; `None` when `failures_per_minute` is 0.
    failures: Option<Keyed<C>>,
    /// Anonymous row creations per address; `None` when `anonymous_per_minute` is 0.
    anonymous: Option<Keyed<C>>,
    /// Addresses whose failure bucket ran dry, until its next cell.
    blocked: DashMap<AddrKey, C::Instant>,
    /// The limiters' clock.
    clock: C,
    /// Nanoseconds (on `clock`, since `origin`) of the last emergency sweep.
    last_sweep: AtomicU64,
    /// Reference instant for `last_sweep`.
    origin: C::Instant,
}

impl Limits<DefaultClock> {
    /// The limits configured in `[rate_limit]`.
    pub fn new(settings: &RateLimitSettings) -> Limits<DefaultClock> {
        Limits::with_clock(
            settings.failures_per_minute,
            settings.anonymous_per_minute,
            DefaultClock::default(),
        )
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Limits on a given clock (tests use a fake one); a rate of 0 disables that limit.
    pub fn with_clock(failures_per_minute: u32, anonymous_per_minute: u32, clock: C) -> Limits<C> {
        let keyed = |per_minute: u32| {
            NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock.clone()))
        };
        Limits {
            failures: keyed(failures_per_minute),
            anonymous: keyed(anonymous_per_minute),
            blocked: DashMap::new(),
            origin: clock.now(),
            clock,
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Whether `ip` may still reach the guess-counted routes: `Err` while its failure bucket is
    /// empty. Takes nothing from the bucket; a refusal is logged and counted.
    pub fn check_failures(&self, ip: IpAddr) -> Result<(), Limited> {
        if self.failures.is_none() {
            return Ok(());
        }
        let key = AddrKey::of(ip);
        let Some(until) = self.blocked.get(&key).map(|e| *e.value()) else {
            return Ok(());
        };
        let now = self.clock.now();
        if now >= until {
            self.blocked.remove_if(&key, |_, u| *u <= now);
            return Ok(());
        }
        let wait: Duration = until.duration_since(now).into();
        Err(refused(ip, LimitKind::Failures, wait))
    }

    /// Counts one failed guess of `ip`; when its bucket is already empty, blocks the address
    /// until the next cell.
    pub fn record_failure(&self, ip: IpAddr) {
        let Some(limiter) = &self.failures else {
            return;
        };
        let key = AddrKey::of(ip);
        if let Err(not_until) = limiter.check_key(&key) {
            self.blocked.insert(key, not_until.earliest_possible());
        }
        self.sweep_if_crowded();
    }

    /// Takes one anonymous cell for `ip` (call it before writing the row); a refusal is logged
    /// and counted.
    pub fn take_anonymous(&self, ip: IpAddr) -> Result<(), Limited> {
        let Some(limiter) = &self.anonymous else {
            return Ok(());
        };
        let result = limiter.check_key(&AddrKey::of(ip));
        self.sweep_if_crowded();
        result.map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            refused(ip, LimitKind::Anonymous, wait)
        })
    }

    /// Forgets every key whose bucket is full again and every block that has expired, and
    /// gives the memory back.
    pub fn sweep(&self) {
        for limiter in [&self.failures, &self.anonymous].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = self.clock.now();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
    }

    /// Keys currently held (both limiters and the block list), for tests and metrics.
    pub fn tracked_keys(&self) -> usize {
        [&self.failures, &self.anonymous]
            .into_iter()
            .flatten()
            .map(|l| l.len())
            .sum::<usize>()
            + self.blocked.len()
    }

    /// Sweeps at once (at most once a second) when a flood of new addresses has pushed the
    /// maps past [`SWEEP_ABOVE_KEYS`], instead of letting them grow until the timer.
    fn sweep_if_crowded(&self) {
        let crowded = [&self.failures, &self.anonymous]
            .into_iter()
            .flatten()
            .any(|l| l.len() > SWEEP_ABOVE_KEYS);
        if !crowded {
            return;
        }
        let now: Duration = self.clock.now().duration_since(self.origin).into();
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000_000_000
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep();
        }
    }
}

/// Logs (info, with the address) and counts a refusal.
fn refused(ip: IpAddr, kind: LimitKind, retry_after: Duration) -> Limited {
    let limited = Limited { kind, retry_after };
    tracing::info!(
        client = %ip,
        limit = kind.as_str(),
        retry_after_secs = limited.retry_after_secs(),
        "rate limited"
    );
    metrics::counter!("provisio_rate_limited_total", "limit" => kind.as_str()).increment(1);
    limited
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(failures: u32, anonymous: u32) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            Limits::with_clock(failures, anonymous, clock.clone()),
            clock,
        )
    }

    #[test]
    fn failures_block_after_the_burst_until_a_cell_returns() {
        let (l, clock) = limits(30, 0);
        let a = ip("192.0.2.1");
        for _ in 0..30 {
            assert!(l.check_failures(a).is_ok());
            l.record_failure(a);
        }
        assert!(l.check_failures(a).is_ok(), "30 failures fill the bucket");
        l.record_failure(a);
        let refused = l.check_failures(a).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Failures);
        assert_eq!(refused.retry_after_secs(), 2, "one cell per 2 s at 30/min");
        // Checking never takes a cell: it stays blocked exactly as long.
        for _ in 0..100 {
            assert!(l.check_failures(a).is_err());
        }
        clock.advance(Duration::from_millis(1999));
        assert!(l.check_failures(a).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(
            l.check_failures(a).is_ok(),
            "open again when a cell returns"
        );
        l.record_failure(a);
        l.record_failure(a);
        assert!(
            l.check_failures(a).is_err(),
            "one more guess, then blocked again"
        );
    }

    #[test]
    fn one_address_never_limits_another_and_v6_is_keyed_by_64() {
        let (l, _) = limits(3, 0);
        for _ in 0..4 {
            l.record_failure(ip("2001:db8:0:1::1"));
        }
        assert!(l.check_failures(ip("2001:db8:0:1::1")).is_err());
        assert!(
            l.check_failures(ip("2001:db8:0:1:ffff::2")).is_err(),
            "same /64, same bucket"
        );
        assert!(l.check_failures(ip("2001:db8:0:2::1")).is_ok());
        assert!(l.check_failures(ip("192.0.2.1")).is_ok());
        assert_eq!(
            AddrKey::of(ip("::ffff:192.0.2.1")),
            AddrKey::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn anonymous_takes_a_cell_per_row() {
        let (l, clock) = limits(0, 5);
        let a = ip("198.51.100.1");
        for _ in 0..5 {
            l.take_anonymous(a).unwrap();
        }
        let refused = l.take_anonymous(a).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Anonymous);
        assert_eq!(refused.retry_after_secs(), 12);
        assert!(l.take_anonymous(ip("198.51.100.2")).is_ok());
        clock.advance(Duration::from_secs(12));
        assert!(l.take_anonymous(a).is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let (l, _) = limits(0, 0);
        let a = ip("192.0.2.1");
        for _ in 0..1000 {
            l.record_failure(a);
            l.take_anonymous(a).unwrap();
        }
        assert!(l.check_failures(a).is_ok());
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn sweeping_bounds_memory_under_address_churn() {
        let (l, clock) = limits(30, 30);
        for i in 0..50_000u32 {
            let a = IpAddr::from(i.to_be_bytes());
            l.record_failure(a);
            l.take_anonymous(a).unwrap();
        }
        for i in 0..31 {
            let _ = i;
            l.record_failure(ip("192.0.2.1"));
        }
        assert!(l.tracked_keys() >= 100_000);
        l.sweep();
        assert!(l.tracked_keys() >= 100_000, "recent keys are kept");
        clock.advance(Duration::from_secs(120));
        l.sweep();
        assert_eq!(
            l.tracked_keys(),
            0,
            "full buckets and expired blocks are forgotten"
        );
        assert!(l.check_failures(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        let l = |ms| Limited {
            kind: LimitKind::Failures,
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(l(0).retry_after_secs(), 1);
        assert_eq!(l(1).retry_after_secs(), 1);
        assert_eq!(l(1000).retry_after_secs(), 1);
        assert_eq!(l(1001).retry_after_secs(), 2);
    }
}
