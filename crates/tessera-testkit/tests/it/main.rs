#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end tests through real HTTP on 127.0.0.1:0, one module per area.

mod audit;
mod bad_input;
mod catapa;
mod catenda;
mod independent_client;
mod jwt;
mod kanka;
mod katana;
mod keys;
mod limits;
mod oidc;
mod ops;
mod pages;
mod races;
mod security;
mod settings;
