//! Fault drivers for a real `tessera serve` process: `crash` (SIGKILL under a mixed load,
//! then a check of every acknowledged response after the restart) and `soak` (a long
//! mixed load with resource figures). Both print a short summary table.

pub mod crash;
pub mod flow;
pub mod load;
pub mod server;
pub mod soak;
