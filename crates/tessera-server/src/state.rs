//! Shared application state: settings, store, clock and keys, cloned cheaply per request.

use std::sync::Arc;

use tessera_crypto::{MasterKey, Passwords};
use tessera_store::Store;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::config::Settings;

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
}

impl AppState {
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        master_key: &MasterKey,
        passwords: Passwords,
    ) -> AppState {
        let slots = settings.password_concurrency;
        AppState(Arc::new(Inner {
            settings,
            store,
            clock,
            passwords,
            password_slots: Semaphore::new(slots),
            csrf_key: master_key.derive("csrf"),
            page_state_key: master_key.derive("page-state"),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    pub(crate) fn now(&self) -> i64 {
        self.0.clock.now()
    }
}
