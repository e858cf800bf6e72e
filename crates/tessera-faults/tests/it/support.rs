//! Starting the real binary on a fresh store.

use std::path::{Path, PathBuf};

use tessera_faults::server::Tessera;

/// The `tessera` binary: `TESSERA_BIN`, else the one cargo built into this target
/// directory. `cargo test --workspace` builds it (tessera-cli's own tests need it); a
/// test run of this crate alone needs `cargo build -p tessera-cli` first. (Building it
/// from here would wait forever on the build-directory lock that `cargo test` holds.)
pub fn tessera_binary() -> PathBuf {
    tessera_faults::server::default_tessera_binary().expect("the tessera binary")
}

/// A server on a fresh SQLite store in `dir`, with optional config-file lines.
pub fn tessera_in(dir: &Path, config: &str) -> Tessera {
    let mut serve_args = Vec::new();
    if !config.is_empty() {
        let file = dir.join("tessera.toml");
        std::fs::write(&file, config).unwrap();
        serve_args = vec!["--config".to_owned(), file.display().to_string()];
    }
    Tessera {
        binary: tessera_binary(),
        database: format!("sqlite://{}", dir.join("tessera.db").display()),
        env: Vec::new(),
        serve_args,
    }
}
