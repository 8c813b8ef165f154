//! **provisio** is a remote-provisioning server for Linphone softphones: a phone fetches one
//! URL and receives its complete, account-specific lpconfig XML. It speaks FlexiAPI's
//! provisioning endpoints and account API, stores data in embedded SQLite or PostgreSQL, and
//! lets operators shape documents per tenant with sandboxed, hot-reloaded Rhai scripts.
//!
//! Wiring, in start-up order: [`config`] → [`store`] (migrations) → [`spaces`] (the in-memory
//! snapshot) → [`hooks`] → [`http`].
//!
//! Imports point one way: [`request`] (what is known of a request) and [`document`] (the one
//! render path) sit below [`hooks`], [`auth`] and [`pipeline`]; [`spaces`] and [`tokens`] below
//! [`api`]; [`links`], [`wizard`] and [`mail`] below [`api`] and [`http`]; [`http`] calls
//! [`api`] and [`pipeline`]; [`app`] wires [`http`]; [`cli`] is on top.
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod document;
pub mod error;
pub mod hooks;
pub mod housekeeping;
pub mod http;
pub mod links;
pub mod lpconfig;
pub mod mail;
pub mod model;
pub mod net;
pub mod ops;
pub mod pipeline;
pub mod qr;
pub mod request;
pub mod secret;
pub mod spaces;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod wizard;
