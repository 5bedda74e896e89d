//! The public entry point for Rust hosts (grown into `Engine` as routing lands).
