//! Fault tests against a real `tessera serve` process (the binary cargo built).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod crash;
mod disk;
mod shutdown;
mod slow_clients;

mod support;

pub use support::{tessera_binary, tessera_in};
