//! Shared test support: a real server on 127.0.0.1:0 over a fresh SQLite file or a fresh
//! PostgreSQL schema.
#![allow(dead_code)]

pub mod pg;
pub mod pg_cluster;
pub mod server;
