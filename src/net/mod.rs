//! Transport-neutral defences of the HTTP edge, kept out of `http/` so they can be reasoned
//! about and tested without a server: who the client really is behind a reverse proxy
//! ([`proxy`]), how often an address may fail or create rows ([`limit`]), and whether the
//! process may open as many sockets as it promises to accept ([`fd`]), and native TLS with
//! its client certificates ([`tls`]).

pub mod fd;
pub mod limit;
pub mod proxy;
pub mod tls;
