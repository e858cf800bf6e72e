//! End-to-end tests through real HTTP on 127.0.0.1:0, one module per area.

mod katana;
