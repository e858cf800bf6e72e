//! Shared application state: settings, store, clock and keys, cloned cheaply per request.

use std::sync::{Arc, RwLock};

use tessera_crypto::jose::{Sealer, SigningAlg, SigningKey};
use tessera_crypto::{MasterKey, Passwords};
use tessera_store::Store;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::config::Settings;
use crate::keys::{KeyError, KeyRing};

#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub passwords: Passwords,
    /// Bounds concurrent Argon2 work, which runs on blocking threads.
    pub password_slots: Semaphore,
    /// HMAC key for CSRF tokens.
    pub csrf_key: [u8; 32],
    /// HMAC key for the authorization request carried through login and consent pages.
    pub page_state_key: [u8; 32],
    /// Seals signing keys at rest.
    pub sealer: Sealer,
    /// Seals a rotated refresh token's successor for the opt-in retry window.
    pub successor_sealer: Sealer,
    pub keys: RwLock<Arc<KeyRing>>,
    pub limits: crate::limits::Limits,
    /// The discovery document, serialized once: it depends on the settings only.
    pub discovery: axum::body::Bytes,
}

impl AppState {
    /// Builds the state, loading the signing keys (creating them on first start).
    pub async fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        master_key: &MasterKey,
        passwords: Passwords,
    ) -> Result<AppState, KeyError> {
        let slots = settings.password_concurrency;
        let limits = crate::limits::Limits::new(settings.rate_limits.clone());
        let sealer = sealer(master_key)?;
        let ring = crate::keys::load_or_init(&*store, &sealer, clock.now()).await?;
        let discovery = serde_json::to_vec(&tessera_core::discovery::metadata(&settings.issuer))
            .unwrap_or_default()
            .into();
        Ok(AppState(Arc::new(Inner {
            settings,
            store,
            clock,
            passwords,
            password_slots: Semaphore::new(slots),
            csrf_key: master_key.derive("csrf"),
            page_state_key: master_key.derive("page-state"),
            sealer,
            successor_sealer: Sealer::new(&master_key.derive("refresh-successor"))?,
            keys: RwLock::new(Arc::new(ring)),
            limits,
            discovery,
        })))
    }

    /// Re-reads the signing keys from the store (rotations made by the CLI or by other
    /// nodes appear within one reload interval).
    pub async fn reload_keys(&self) -> Result<(), KeyError> {
        let ring = KeyRing::open(
            self.0.store.list_signing_keys().await?,
            &self.0.sealer,
            self.now(),
        )?;
        if let Ok(mut guard) = self.0.keys.write() {
            *guard = Arc::new(ring);
        }
        Ok(())
    }

    pub(crate) fn key_ring(&self) -> Arc<KeyRing> {
        match self.0.keys.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The key that signs for `alg` now, reloading the ring once if it has none (a
    /// rotation elsewhere retired the key this node knew).
    pub(crate) async fn signer(&self, alg: SigningAlg) -> Option<Arc<SigningKey>> {
        if let Some(k) = self.key_ring().signer(alg, self.now()) {
            return Some(k);
        }
        if let Err(e) = self.reload_keys().await {
            tracing::error!(error = %e, "reloading signing keys failed");
        }
        self.key_ring().signer(alg, self.now())
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    pub(crate) fn successor_sealer(&self) -> &Sealer {
        &self.0.successor_sealer
    }

    pub fn now(&self) -> i64 {
        self.0.clock.now()
    }
}

/// The AEAD that seals signing keys, under a purpose-bound subkey of the master key.
pub fn sealer(master_key: &MasterKey) -> Result<Sealer, KeyError> {
    Ok(Sealer::new(&master_key.derive("signing-keys"))?)
}
