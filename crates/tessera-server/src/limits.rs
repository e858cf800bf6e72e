//! Abuse limits: failures are charged to keyed token buckets (per source IP, per client,
//! per user+IP); a key whose bucket runs dry is blocked for a while, with the block
//! doubling at each repeat. Successful requests of a well-behaved client cost nothing, so
//! no legitimate integration is ever throttled; a storm of failures is.
//!
//! Counters are per node (in memory) and, when the store is shared by a cluster
//! (PostgreSQL), also counted cluster-wide in the store; see ARCHITECTURE.md.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// A bucket: `burst` failures at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    pub burst: u32,
    pub per_minute: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Failed token/introspection/revocation requests per source IP and per client id.
    pub token_failures: Bucket,
    /// What a failed client authentication costs (other failures cost 1).
    pub client_auth_failure_cost: u32,
    /// Failed sign-ins per username and source IP together.
    pub login_failures_per_user: Bucket,
    /// Failed sign-ins per source IP.
    pub login_failures_per_ip: Bucket,
    /// Authorization requests per source IP.
    pub authorize_requests: Bucket,
    /// Peers whose `X-Forwarded-For` is believed (a load balancer). Empty: the socket
    /// address is the client, whatever the headers say.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            enabled: true,
            token_failures: Bucket {
                burst: 300,
                per_minute: 120,
            },
            client_auth_failure_cost: 5,
            login_failures_per_user: Bucket {
                burst: 5,
                per_minute: 5,
            },
            login_failures_per_ip: Bucket {
                burst: 100,
                per_minute: 60,
            },
            authorize_requests: Bucket {
                burst: 600,
                per_minute: 1200,
            },
            trusted_proxies: Vec::new(),
        }
    }
}

impl RateLimitSettings {
    pub fn validate(&self) -> Result<(), String> {
        for (name, b) in [
            ("token_failures", self.token_failures),
            ("login_failures_per_user", self.login_failures_per_user),
            ("login_failures_per_ip", self.login_failures_per_ip),
            ("authorize_requests", self.authorize_requests),
        ] {
            if b.burst == 0 || b.per_minute == 0 {
                return Err(format!(
                    "rate_limits.{name}: burst and per_minute must be at least 1"
                ));
            }
        }
        if self.client_auth_failure_cost == 0
            || self.client_auth_failure_cost > self.token_failures.burst
        {
            return Err(
                "rate_limits.client_auth_failure_cost must be between 1 and token_failures.burst"
                    .into(),
            );
        }
        Ok(())
    }
}

const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
const MAX_TRACKED: usize = 100_000;

/// One keyed bucket with blocking and growing back-off.
pub struct Limiter {
    /// Names this limiter's keys in the shared counters.
    name: &'static str,
    /// Failures allowed per key and minute across the cluster.
    burst: u32,
    buckets: DefaultKeyedRateLimiter<String>,
    blocked: Mutex<HashMap<String, (Instant, u32)>>,
    /// When the latest block ends, in milliseconds since `epoch` (rounded up).
    blocks_end: AtomicU64,
    epoch: Instant,
}

fn millis_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

fn quota(b: Bucket) -> Quota {
    let per_minute = NonZeroU32::new(b.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(b.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl Limiter {
    pub fn new(name: &'static str, b: Bucket) -> Limiter {
        Limiter {
            name,
            burst: b.burst,
            buckets: RateLimiter::keyed(quota(b)),
            blocked: Mutex::new(HashMap::new()),
            blocks_end: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether some key may be blocked now: false once the latest block has ended.
    fn is_blocking(&self) -> bool {
        millis_since(self.epoch, Instant::now()) < self.blocks_end.load(Ordering::Relaxed)
    }

    /// [`Limiter::blocked`] for a key that costs something to build (a `format!`): it is
    /// built only while some block lasts, which on the token endpoints is almost never.
    pub fn blocked_lazily(&self, key: impl FnOnce() -> String) -> Option<Duration> {
        if !self.is_blocking() {
            return None;
        }
        self.blocked(&key())
    }

    /// How long `key` stays blocked, if it is.
    pub fn blocked(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let map = self.blocked.lock().ok()?;
        map.get(key)
            .and_then(|(until, _)| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Charges `cost` to `key`; when the bucket is dry the key is blocked (each repeat
    /// doubles the block, up to 15 minutes) and the block's length returned.
    pub fn charge(&self, key: &str, cost: u32) -> Option<Duration> {
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let wait = match self.buckets.check_key_n(&key.to_owned(), cost) {
            Ok(Ok(())) => return None,
            Ok(Err(not_until)) => not_until.wait_time_from(DefaultClock::default().now()),
            Err(_) => Duration::from_secs(60),
        };
        Some(self.block(key, wait))
    }

    /// `charge`, and the same failure counted cluster-wide when the store shares counters:
    /// a key with more than `burst` failures in the current minute, over all nodes, is
    /// blocked here as well. A node learns of a cluster-wide excess at its next failure for
    /// that key, so N nodes let through at most N-1 failures beyond the burst.
    pub async fn charge_shared(
        &self,
        store: &dyn tessera_store::Store,
        key: &str,
        cost: u32,
        now: i64,
    ) -> Option<Duration> {
        let local = self.charge(key, cost);
        let Some(counters) = store.shared_counters() else {
            return local;
        };
        let window = now - now.rem_euclid(60);
        let shared_key = format!("{}:{key}", self.name);
        match counters.add_failures(&shared_key, window, cost).await {
            Ok(total) if total > u64::from(self.burst) => {
                let rest_of_window = u64::try_from(window + 60 - now).unwrap_or(1);
                local.or_else(|| Some(self.block(key, Duration::from_secs(rest_of_window))))
            }
            Ok(_) => local,
            Err(e) => {
                tracing::warn!(error = %e, "shared failure counters unavailable: counting on this node only");
                local
            }
        }
    }

    /// Blocks `key` for at least `wait`, doubled for each block it already had (up to 15
    /// minutes); returns the block's length.
    fn block(&self, key: &str, wait: Duration) -> Duration {
        let now = Instant::now();
        let Ok(mut map) = self.blocked.lock() else {
            return wait;
        };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (until, _)| *until > now);
        }
        let strikes = map.get(key).map(|(_, s)| s + 1).unwrap_or(1);
        let factor = 1u32 << strikes.saturating_sub(1).min(10);
        let block = wait
            .max(Duration::from_secs(1))
            .saturating_mul(factor)
            .min(MAX_BLOCK);
        map.insert(key.to_owned(), (now + block, strikes));
        let end = millis_since(self.epoch, now + block).saturating_add(1);
        self.blocks_end.fetch_max(end, Ordering::Relaxed);
        block
    }

    /// Charges one unit to a plain request rate (no blocking memory).
    pub fn request(&self, key: &str) -> Option<Duration> {
        match self.buckets.check_key(&key.to_owned()) {
            Ok(()) => None,
            Err(not_until) => Some(
                not_until
                    .wait_time_from(DefaultClock::default().now())
                    .max(Duration::from_secs(1)),
            ),
        }
    }
}

/// Every limiter of one node.
pub struct Limits {
    pub settings: RateLimitSettings,
    pub token_failures: Limiter,
    pub login_per_user: Limiter,
    pub login_per_ip: Limiter,
    pub authorize: Limiter,
}

impl Limits {
    pub fn new(settings: RateLimitSettings) -> Limits {
        Limits {
            token_failures: Limiter::new("token", settings.token_failures),
            login_per_user: Limiter::new("login-user", settings.login_failures_per_user),
            login_per_ip: Limiter::new("login-ip", settings.login_failures_per_ip),
            authorize: Limiter::new("authorize", settings.authorize_requests),
            settings,
        }
    }

    /// The client's address: the socket peer, or — only when the peer is a trusted proxy —
    /// the nearest untrusted address in `X-Forwarded-For`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = &self.settings.trusted_proxies;
        if !trusted.contains(&peer.ip()) {
            return peer.ip();
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer.ip())
    }
}

/// Seconds for a `Retry-After` header (at least 1).
pub fn retry_after(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_after_the_burst_and_blocks_grow() {
        let l = Limiter::new(
            "test",
            Bucket {
                burst: 3,
                per_minute: 1,
            },
        );
        assert_eq!(l.charge("k", 1), None);
        assert_eq!(l.charge("k", 2), None);
        let first = l.charge("k", 1).expect("blocked");
        assert!(l.blocked("k").is_some());
        assert!(l.blocked("other").is_none());
        let second = l.charge("k", 1).expect("still blocked");
        assert!(second > first, "back-off grows: {first:?} then {second:?}");
    }

    /// The hot paths skip building keys while nothing is blocked; a block must switch the
    /// check on at once and its end must switch it off again.
    #[test]
    fn is_blocking_follows_the_latest_block() {
        let l = Limiter::new(
            "test",
            Bucket {
                burst: 1,
                per_minute: 6000,
            },
        );
        assert!(!l.is_blocking(), "nothing blocked yet");
        assert_eq!(l.charge("k", 1), None);
        assert!(!l.is_blocking(), "a charge within the burst blocks nothing");
        let unbuilt = l.blocked_lazily(|| panic!("no key is built while nothing is blocked"));
        assert_eq!(unbuilt, None);
        let block = l.charge("k", 1).expect("blocked");
        assert!(l.is_blocking() && l.blocked("k").is_some());
        assert!(l.blocked_lazily(|| "k".into()).is_some());
        std::thread::sleep(block + Duration::from_millis(20));
        assert!(l.blocked("k").is_none(), "the block has ended");
        assert!(!l.is_blocking(), "and so has the check");
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut s = RateLimitSettings::default();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let peer: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        assert_eq!(Limits::new(s.clone()).client_ip(peer, &h), peer.ip());
        s.trusted_proxies = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(
            Limits::new(s).client_ip(peer, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }
}

/// The client's address as the limits see it, put in the request extensions by the
/// request envelope ([`crate::envelope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Token, introspection and revocation ([`crate::routes::is_client_endpoint`]): an
/// address with too many recent failures is refused before any work; every 400 answered
/// counts as a failure. The request envelope runs it rather than a layer of its own: each
/// axum layer boxes a future and clones the service inside it, at every request.
pub(crate) async fn guard_client_endpoint(
    state: &crate::AppState,
    ip: IpAddr,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limits = &state.0.limits;
    if !limits.settings.enabled {
        return next.run(req).await;
    }
    if let Some(wait) = limits.token_failures.blocked_lazily(|| ip_key(ip)) {
        crate::metrics::event("rate_limited", "token_endpoint");
        if let Some(origin) = req.extensions().get::<crate::audit::Origin>().cloned() {
            let subject = crate::audit::Subject {
                detail: Some(format!("endpoint={}", req.uri().path())),
                ..Default::default()
            };
            crate::audit::record(state, &origin, "rate_limit.hit", subject).await;
        }
        return crate::error::ApiError::RateLimited(wait).into_response();
    }
    let resp = next.run(req).await;
    if resp.status() == axum::http::StatusCode::BAD_REQUEST
        && limits
            .token_failures
            .charge_shared(&**state.store(), &ip_key(ip), 1, state.now())
            .await
            .is_some()
    {
        tracing::warn!(%ip, "token endpoint failures: address blocked");
    }
    resp
}

pub fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

pub fn client_key(client_id: &str) -> String {
    format!("client:{client_id}")
}
