//! The key ring: signing keys opened from the store, the JWKS, and rotation.

use std::sync::Arc;

use serde_json::{json, Value};
use tessera_core::keys::{retirements, signing_key, SigningKeyRecord};
use tessera_core::UnixTime;
use tessera_crypto::jose::{Sealer, SigningAlg, SigningKey, Verifier};
use tessera_store::{Store, StoreError};

/// ID tokens live one hour (OIDC Core leaves it to the OP).
pub const ID_TOKEN_TTL: i64 = 3600;
/// How long `keys rotate` publishes a new key before it signs, by default: longer than
/// the JWKS cache lifetime plus the ring's reload interval, so that relying parties have
/// fetched it before they meet a token signed with it.
pub const DEFAULT_PUBLISH_DELAY: i64 = 120;
/// JWKS responses may be cached this long.
pub const JWKS_MAX_AGE: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("signing key: {0}")]
    Crypto(#[from] tessera_crypto::CryptoError),
}

/// The keys of the store, opened, as of the last load.
pub struct KeyRing {
    records: Vec<SigningKeyRecord>,
    opened: Vec<Arc<SigningKey>>,
    /// The serialized key set and which keys it lists: rebuilt only when the published
    /// keys change with time (building the JSON per request showed in the JWKS profile).
    jwks_cache: std::sync::Mutex<Option<(Vec<bool>, axum::body::Bytes)>>,
}

impl KeyRing {
    /// Opens every published key. A key that does not open (wrong master key) is an
    /// error: serving with half a key ring would mint unverifiable tokens.
    pub fn open(
        records: Vec<SigningKeyRecord>,
        sealer: &Sealer,
        now: UnixTime,
    ) -> Result<KeyRing, KeyError> {
        let records: Vec<SigningKeyRecord> = records
            .into_iter()
            .filter(|r| r.is_published(now))
            .collect();
        let mut opened = Vec::with_capacity(records.len());
        for r in &records {
            let alg = SigningAlg::parse(&r.alg).ok_or_else(|| {
                tessera_crypto::CryptoError::Key(format!("unknown algorithm {:?}", r.alg))
            })?;
            let pkcs8 = sealer.open(&r.sealed, r.kid.as_bytes())?;
            opened.push(Arc::new(SigningKey::from_pkcs8(
                alg,
                r.kid.clone(),
                &pkcs8,
            )?));
        }
        Ok(KeyRing {
            records,
            opened,
            jwks_cache: std::sync::Mutex::new(None),
        })
    }

    /// The key that signs for `alg` now.
    pub fn signer(&self, alg: SigningAlg, now: UnixTime) -> Option<Arc<SigningKey>> {
        let record = signing_key(&self.records, alg.as_str(), now)?;
        self.opened.iter().find(|k| k.kid == record.kid).cloned()
    }

    /// RFC 7517 key set of every published key (pending, active and retired).
    pub fn jwks(&self, now: UnixTime) -> Value {
        let keys: Vec<Value> = self
            .records
            .iter()
            .zip(&self.opened)
            .filter(|(r, _)| r.is_published(now))
            .map(|(_, k)| k.public_jwk())
            .collect();
        json!({ "keys": keys })
    }

    /// [`KeyRing::jwks`], serialized, from a cache while the same keys are published.
    pub fn jwks_json(&self, now: UnixTime) -> axum::body::Bytes {
        if let Ok(cache) = self.jwks_cache.lock() {
            if let Some((keys, bytes)) = cache.as_ref() {
                let same_keys = keys.len() == self.records.len()
                    && self
                        .records
                        .iter()
                        .zip(keys)
                        .all(|(r, &was)| r.is_published(now) == was);
                if same_keys {
                    return bytes.clone();
                }
            }
        }
        let published: Vec<bool> = self.records.iter().map(|r| r.is_published(now)).collect();
        let bytes =
            axum::body::Bytes::from(serde_json::to_vec(&self.jwks(now)).unwrap_or_default());
        if let Ok(mut cache) = self.jwks_cache.lock() {
            *cache = Some((published, bytes.clone()));
        }
        bytes
    }

    pub fn verifiers(&self, now: UnixTime) -> Vec<Verifier> {
        self.records
            .iter()
            .zip(&self.opened)
            .filter(|(r, _)| r.is_published(now))
            .map(|(_, k)| k.verifier())
            .collect()
    }

    /// Whether every algorithm has a key that signs now.
    fn complete(&self, now: UnixTime) -> bool {
        SigningAlg::ALL
            .iter()
            .all(|a| self.signer(*a, now).is_some())
    }
}

fn new_record(
    alg: SigningAlg,
    sealer: &Sealer,
    now: UnixTime,
    activates_at: UnixTime,
) -> Result<SigningKeyRecord, KeyError> {
    let kid = format!(
        "{}-{}",
        alg.as_str().to_lowercase(),
        tessera_crypto::random_id(9)?
    );
    let key = SigningKey::generate(alg, kid.clone())?;
    Ok(SigningKeyRecord {
        sealed: sealer.seal(key.pkcs8(), kid.as_bytes())?,
        kid,
        alg: alg.as_str().to_owned(),
        created_at: now,
        activates_at,
        retires_at: None,
        publish_until: None,
    })
}

/// Loads the ring, first creating a signing key for every algorithm that has none (first
/// start): such a key signs at once, as nobody can hold a stale JWKS of a new server.
pub async fn load_or_init(
    store: &dyn Store,
    sealer: &Sealer,
    now: UnixTime,
) -> Result<KeyRing, KeyError> {
    let ring = KeyRing::open(store.list_signing_keys().await?, sealer, now)?;
    if ring.complete(now) {
        return Ok(ring);
    }
    let mut new = Vec::new();
    for alg in SigningAlg::ALL {
        if ring.signer(alg, now).is_none() {
            new.push(new_record(alg, sealer, now, now)?);
        }
    }
    store.save_signing_keys(&new, &[]).await?;
    tracing::info!(count = new.len(), "created signing keys");
    KeyRing::open(store.list_signing_keys().await?, sealer, now)
}

/// The longest lifetime of any token a key may have signed: ID tokens, and JWT access
/// tokens of every client that uses them.
pub async fn max_token_ttl(store: &dyn Store) -> Result<i64, KeyError> {
    use tessera_core::client::AccessTokenFormat;
    Ok(store
        .list_clients()
        .await?
        .iter()
        .filter(|c| c.access_token_format == AccessTokenFormat::Jwt)
        .map(|c| c.access_token_ttl)
        .fold(ID_TOKEN_TTL, i64::max))
}

/// Rotates every algorithm: new keys are published now and sign from `now + delay`;
/// the keys they replace stop signing then and stay published until every token they
/// signed has expired. Returns the new records.
pub async fn rotate(
    store: &dyn Store,
    sealer: &Sealer,
    now: UnixTime,
    delay: i64,
) -> Result<Vec<SigningKeyRecord>, KeyError> {
    let existing = store.list_signing_keys().await?;
    let ttl = max_token_ttl(store).await?;
    let activates_at = now + delay.max(0);
    let mut new = Vec::new();
    let mut retire = Vec::new();
    for alg in SigningAlg::ALL {
        retire.extend(retirements(&existing, alg.as_str(), activates_at, ttl));
        new.push(new_record(alg, sealer, now, activates_at)?);
    }
    store.save_signing_keys(&new, &retire).await?;
    tracing::info!(activates_at, retired = retire.len(), "signing keys rotated");
    let kids: Vec<&str> = new.iter().map(|k| k.kid.as_str()).collect();
    store
        .append_audit(&[tessera_core::model::AuditEvent {
            at: now,
            kind: "keys.rotated".into(),
            tenant: None,
            actor: None,
            client_id: None,
            ip: None,
            request_id: None,
            detail: Some(format!(
                "new={} activates_at={activates_at}",
                kids.join(",")
            )),
        }])
        .await?;
    Ok(new)
}

/// Rotates when the newest key is older than `key_rotation_interval` (if set).
pub async fn rotate_if_due(state: &crate::AppState) -> Result<(), KeyError> {
    let interval = state.settings().key_rotation_interval;
    if interval <= 0 {
        return Ok(());
    }
    let now = state.now();
    let newest = state
        .store()
        .list_signing_keys()
        .await?
        .iter()
        .map(|k| k.activates_at)
        .max()
        .unwrap_or(now);
    if now - newest >= interval {
        rotate(
            &**state.store(),
            &state.0.sealer,
            now,
            DEFAULT_PUBLISH_DELAY,
        )
        .await?;
    }
    Ok(())
}
