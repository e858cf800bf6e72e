//! The janitor: removes what can never be used again, in bounded batches, so the store
//! stays bounded under steady load without long write locks.

use tessera_core::model::Pruned;
use tessera_core::UnixTime;
use tessera_store::{Store, StoreResult};

/// Rows of each kind deleted per store step.
pub const BATCH: u32 = 1000;
/// Expired rows are kept this much longer (clock skew between nodes, late replays that
/// should still be told apart from garbage).
pub const GRACE: i64 = 300;
/// Steps per sweep, so a huge backlog is spread over several sweeps.
const MAX_STEPS: u32 = 50;

/// One sweep: batches until nothing is left or the step budget is spent. Audit events
/// older than `audit_retention` seconds go too (0 keeps them forever).
pub async fn sweep(store: &dyn Store, now: UnixTime, audit_retention: i64) -> StoreResult<Pruned> {
    let mut total = Pruned::default();
    if audit_retention > 0 {
        for _ in 0..MAX_STEPS {
            let n = store.prune_audit(now - audit_retention, BATCH).await?;
            total.audit_events += n;
            if n < u64::from(BATCH) {
                break;
            }
        }
    }
    for _ in 0..MAX_STEPS {
        let p = store.prune_expired(now, GRACE, BATCH).await?;
        total.codes += p.codes;
        total.access_tokens += p.access_tokens;
        total.refresh_tokens += p.refresh_tokens;
        total.grants += p.grants;
        total.sessions += p.sessions;
        let full = [
            p.codes,
            p.access_tokens,
            p.refresh_tokens,
            p.grants,
            p.sessions,
        ]
        .iter()
        .any(|n| *n >= u64::from(BATCH));
        if !full {
            break;
        }
    }
    Ok(total)
}
