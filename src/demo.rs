//! `provisio demo`: a space, an account and a token made at start, and the links a newcomer
//! needs printed (provisioning URL, wizard, a QR code in the terminal). The links use
//! `--public-url` when given, else the address the server listens on, with a wildcard address
//! (`0.0.0.0`, `::`) replaced by this machine's address on its network, so the QR code works
//! from a phone. A link a phone cannot reach (loopback) comes with a warning saying how to fix
//! it.

use crate::config::Settings;
use crate::model::{HeaderMode, Space, now_ms};
use crate::request::normalize_host;
use crate::secret::{hash_password, new_password};
use crate::store::{DynStore, NewAccount, StoreError};
use anyhow::Context as _;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Domain of the demo space.
pub const DEMO_DOMAIN: &str = "demo.provisio.test";
/// User of the demo account.
pub const DEMO_USER: &str = "demo";

/// The base URL of the demo's links once the server is bound to `bound`: `public_url` when
/// set, else `http://` (`https://` with native TLS) + the advertised address ([`advertised_ip`]) and the bound port.
pub fn base_url(settings: &Settings, bound: SocketAddr) -> String {
    if settings.public_url.is_empty() {
        format!(
            "{}://{}",
            settings.scheme(),
            SocketAddr::new(advertised_ip(bound.ip()), bound.port())
        )
    } else {
        settings.public_url.trim_end_matches('/').to_string()
    }
}

/// The host the demo space is served on: `public_url`'s host, else the advertised address.
pub fn space_host(settings: &Settings) -> String {
    if settings.public_url.is_empty() {
        let ip = advertised_ip(settings.listen.ip());
        normalize_host(&SocketAddr::new(ip, 0).to_string())
    } else {
        url_host(&settings.public_url)
    }
}

/// The address others reach a listener on `listen` at: `listen` itself, or, for a wildcard
/// address, the address this machine uses toward other networks (loopback when it has none).
pub fn advertised_ip(listen: IpAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    // Connecting a UDP socket sends nothing; it only asks the kernel which local address
    // routes toward a documentation address (RFC 5737, RFC 3849).
    let probe = |bind: IpAddr, toward: IpAddr| -> Option<IpAddr> {
        let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).ok()?;
        socket.connect(SocketAddr::new(toward, 9)).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
    };
    let v4 = || {
        probe(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        )
    };
    let v6 = || {
        probe(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        )
    };
    match listen {
        // `::` usually accepts IPv4 too; an IPv4 address is what a phone on Wi-Fi reaches.
        IpAddr::V6(_) => v4().or_else(v6).unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        IpAddr::V4(_) => v4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    }
}

/// The host of an `http(s)://host[:port][/path]` URL, as spaces store hosts.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    normalize_host(authority)
}

/// A warning when links on `base` point at this machine only (loopback, `localhost`), which
/// a phone cannot reach; `None` otherwise.
pub fn loopback_warning(base: &str) -> Option<String> {
    let host = url_host(base);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| {
        format!(
            "warning: these links and the QR code point at {host}, this computer only: a \
             phone cannot reach them.\n         To try the QR code from a phone on the same \
             network, listen on every interface and name this computer's address:\n           \
             provisio demo --listen 0.0.0.0:8318 --public-url http://ADDRESS:8318\n         \
             (ADDRESS: this computer's LAN address, shown by `ip -brief address`)."
        )
    })
}

/// Creates (or reuses) the demo space, served on [`space_host`], and the demo account, and
/// mints a token for it.
pub async fn prepare(store: &DynStore, settings: &Settings) -> anyhow::Result<String> {
    let host = space_host(settings);
    match store.space_by_domain(DEMO_DOMAIN).await? {
        None => {
            let mut space = Space::new(DEMO_DOMAIN, &host);
            space.name = "provisio demo".to_string();
            // Debian's liblinphone 5.1 never sends x-linphone-provisioning; accept its
            // User-Agent.
            space.header_mode = HeaderMode::LinphoneUserAgent;
            store.create_space(&space).await?;
        }
        Some(mut space) if space.host != host => {
            space.host = host.clone();
            match store.update_space(&space).await {
                Ok(_) => {}
                Err(StoreError::Conflict(why)) => tracing::warn!(
                    host = %host,
                    reason = %why,
                    "the demo space keeps its host: another space is served on this one"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        Some(_) => {}
    }
    let account = match store.account_by_identity(DEMO_USER, DEMO_DOMAIN).await? {
        Some(a) => a,
        None => {
            let space = store
                .space_by_domain(DEMO_DOMAIN)
                .await?
                .context("demo space vanished")?;
            let password = hash_password(
                space.password_algorithm,
                DEMO_USER,
                &space.realm,
                &new_password(),
            );
            store
                .create_account(
                    &NewAccount {
                        username: DEMO_USER.to_string(),
                        domain: DEMO_DOMAIN.to_string(),
                        display_name: Some("Demo User".to_string()),
                        passwords: vec![password],
                        ..Default::default()
                    },
                    now_ms(),
                )
                .await?
        }
    };
    Ok(
        crate::tokens::mint_provisioning_token(store.as_ref(), &account)
            .await?
            .token,
    )
}

/// What `demo` prints once the server listens: the links on `base`, the QR code of the
/// provisioning URL, and the loopback warning when it applies.
pub fn announcement(base: &str, token: &str) -> String {
    let url = format!("{base}/provisioning/{token}");
    let mut out = String::new();
    let _ = writeln!(out, "\nprovisio demo is running on {base}\n");
    let _ = writeln!(out, "  account:          {DEMO_USER}@{DEMO_DOMAIN}");
    let _ = writeln!(out, "  provisioning URL: {url}");
    let _ = writeln!(out, "  wizard:           {base}/wizard/{token}");
    let _ = writeln!(
        out,
        "  try it:           curl -H 'x-linphone-provisioning: 1' {url}\n"
    );
    match crate::qr::terminal(&url) {
        Ok(qr) => {
            let _ = writeln!(out, "{qr}");
        }
        Err(e) => {
            let _ = writeln!(out, "(no QR code: {e})");
        }
    }
    if let Some(warning) = loopback_warning(base) {
        let _ = writeln!(out, "{warning}\n");
    }
    let _ = writeln!(
        out,
        "The token works once; run `provisio token {DEMO_USER}@{DEMO_DOMAIN}` for another."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_warnings() {
        assert_eq!(
            url_host("https://Prov.Example.com:8443/x"),
            "prov.example.com"
        );
        assert_eq!(url_host("http://[::1]:8318"), "[::1]");
        for base in [
            "http://127.0.0.1:8318",
            "http://localhost:8318",
            "http://[::1]:8318",
        ] {
            assert!(loopback_warning(base).is_some(), "{base}");
        }
        for base in ["http://192.168.1.20:8318", "https://prov.example.com"] {
            assert!(loopback_warning(base).is_none(), "{base}");
        }
    }

    #[test]
    fn wildcards_are_advertised_as_a_real_address() {
        let ip = advertised_ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert!(!ip.is_unspecified(), "{ip}");
        let fixed = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(advertised_ip(fixed), fixed);
        let settings = Settings {
            public_url: "https://prov.example.com".into(),
            ..Settings::default()
        };
        assert_eq!(space_host(&settings), "prov.example.com");
        let bound: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(base_url(&settings, bound), "https://prov.example.com");
        assert_eq!(base_url(&Settings::default(), bound), "http://127.0.0.1:9");
    }
}
