//! Native TLS (`[tls]`): the rustls server configuration of the main listener, built from PEM
//! files, swapped atomically when they change, and the client certificate a connection
//! presented, as the rest of the crate sees it ([`ClientCertificate`]).
//!
//! * **Reload without dropping connections.** The live configuration is an
//!   `Arc<ServerConfig>` in an [`ArcSwap`]: each accepted socket takes the current one for
//!   its handshake, so a reload changes what *new* connections get while open ones keep the
//!   session they negotiated. A reload is triggered by SIGHUP and by any change in the
//!   directories holding the files (watching directories, not files, sees editors and tools
//!   that replace a file by renaming, certbot's symlinks in `live/`, and Kubernetes' `..data`
//!   swaps). Like the hook reload (`src/hooks/reload.rs`), a change is only a reload when the
//!   files' digest differs from the live set's.
//! * **A bad reload keeps the old certificate.** Unreadable files, PEM without a certificate
//!   or key, a key that does not match the certificate, a client CA file without a CA: the
//!   error is logged once (per distinct content) and counted, and the old configuration stays
//!   live. At start-up the same errors stop the server, naming the file.
//! * **Client certificates** (`tls.client_ca_file`) are requested, never required
//!   (`allow_unauthenticated`): a phone without one still provisions by token, Digest or API
//!   key. rustls verifies a presented certificate against the CA before the handshake
//!   completes; one signed by anyone else fails the handshake.

use crate::config::TlsSettings;
use crate::request::ClientCertificate;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use notify_debouncer_full::notify::event::ModifyKind;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Quiet time before a burst of file events (a certificate and its key written one after the
/// other) triggers one reload.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

/// The protocols offered in ALPN, preferred first (RFC 7301; RFC 9113 §3.2 for `h2`).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS side of the main listener: the live configuration and the files it came from.
pub struct Tls {
    files: Files,
    live: ArcSwap<ServerConfig>,
    reload: Mutex<ReloadState>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// The configured paths.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// What the last reload attempts saw.
#[derive(Debug)]
struct ReloadState {
    /// Digest of the files behind the live configuration.
    live: [u8; 32],
    /// Digest of the content (or of the error) the last failed attempt saw, so the same bad
    /// files are reported once, not on every event or signal.
    failed: Option<[u8; 32]>,
}

/// What a reload attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files differ from the live set and were loaded: new connections use them.
    Reloaded,
    /// The files are the live set: nothing to do.
    Unchanged,
    /// The files cannot be used; the previous configuration stays live.
    Failed,
}

/// The files' bytes, read in one go.
struct Raw {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Raw {
    /// SHA-256 over the three files, each prefixed with its length so no two sets collide by
    /// moving bytes from one file to the next.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            Some(self.cert.as_slice()),
            Some(self.key.as_slice()),
            self.client_ca.as_deref(),
        ] {
            let part = part.unwrap_or_default();
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

impl Tls {
    /// Loads the configured files: `Ok(None)` when TLS is off; an error naming the key and the
    /// file when they cannot be used (the server must not start).
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Option<Arc<Tls>>> {
        if !settings.enabled() {
            return Ok(None);
        }
        let files = Files {
            cert: crate::config::absolute(&settings.cert_file),
            key: crate::config::absolute(&settings.key_file),
            client_ca: settings
                .verifies_clients()
                .then(|| crate::config::absolute(&settings.client_ca_file)),
        };
        let raw = read(&files).map_err(|e| anyhow::anyhow!("configuration error: {}", e.why))?;
        let (config, leaf) =
            build(&files, &raw).map_err(|why| anyhow::anyhow!("configuration error: {why}"))?;
        tracing::info!(
            cert_file = %files.cert.display(),
            subject = %leaf.subject,
            not_after = %leaf.not_after,
            client_certificates = files.client_ca.is_some(),
            "TLS certificate loaded"
        );
        Ok(Some(Arc::new(Tls {
            live: ArcSwap::from_pointee(config),
            reload: Mutex::new(ReloadState {
                live: raw.digest(),
                failed: None,
            }),
            files,
        })))
    }

    /// The configuration a new connection's handshake uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.live.load_full()
    }

    /// Re-reads the files and, when they changed and can be used, makes them live for new
    /// connections. A failure is logged once per distinct content and keeps the live set.
    pub fn reload_now(&self) -> Reload {
        let mut state = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        let attempt = read(&self.files).and_then(|raw| {
            let digest = raw.digest();
            if digest == state.live {
                return Ok(None);
            }
            build(&self.files, &raw)
                .map(|built| Some((built, digest)))
                .map_err(|why| Failure {
                    why,
                    digest: Some(digest),
                })
        });
        match attempt {
            Ok(None) => {
                state.failed = None;
                Reload::Unchanged
            }
            Ok(Some(((config, leaf), digest))) => {
                self.live.store(Arc::new(config));
                state.live = digest;
                state.failed = None;
                metrics::counter!("provisio_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(
                    cert_file = %self.files.cert.display(),
                    subject = %leaf.subject,
                    not_after = %leaf.not_after,
                    "TLS certificate reloaded; new connections use it"
                );
                Reload::Reloaded
            }
            Err(Failure { why, digest }) => {
                let key = digest.unwrap_or_else(|| Sha256::digest(why.as_bytes()).into());
                metrics::counter!("provisio_tls_reloads_total", "result" => "error").increment(1);
                if state.failed != Some(key) {
                    state.failed = Some(key);
                    tracing::error!(
                        error = %why,
                        "TLS reload failed; the previous certificate stays in use"
                    );
                }
                Reload::Failed
            }
        }
    }

    /// Starts reloading on SIGHUP and, with `watch`, on changes in the files' directories;
    /// both stop when the guard is dropped. Must run inside the Tokio runtime.
    pub fn watch(self: &Arc<Self>, watch: bool) -> anyhow::Result<TlsWatch> {
        let watcher = if watch {
            let weak = Arc::downgrade(self);
            let mut debouncer = new_debouncer(WATCH_DEBOUNCE, None, move |result| {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    on_files_changed(&weak, result);
                }));
                if outcome.is_err() {
                    tracing::error!("TLS reload panicked; the previous certificate stays in use");
                }
            })
            .context("starting the TLS file watcher")?;
            for dir in self.files.dirs() {
                debouncer
                    .watch(&dir, RecursiveMode::NonRecursive)
                    .with_context(|| format!("watching {} for TLS file changes", dir.display()))?;
            }
            Some(debouncer)
        } else {
            None
        };
        tracing::info!(
            watch = watcher.is_some(),
            "TLS files reload on SIGHUP{}",
            if watcher.is_some() {
                " and when they change"
            } else {
                ""
            }
        );
        let task = spawn_hangup_reloader(Arc::downgrade(self), watcher)?;
        Ok(TlsWatch { task })
    }

    /// A SIGHUP: reload, and watch the directories afresh (a directory reached through a
    /// symbolic link that was swapped is watched where the link points now).
    fn on_hangup(&self, watcher: Option<&mut FileWatcher>) {
        let outcome = self.reload_now();
        tracing::info!(outcome = ?outcome, "SIGHUP: TLS files read");
        if let Some(watcher) = watcher {
            for dir in self.files.dirs() {
                let _ = watcher.unwatch(&dir);
                if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch TLS files");
                }
            }
        }
    }
}

/// The debounced watcher of the files' directories.
type FileWatcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Why a reload attempt failed: the message, and the digest of the content when it was read.
struct Failure {
    why: String,
    digest: Option<[u8; 32]>,
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure { why, digest: None }
    }
}

/// Reads the three files; the error names the key and the file.
fn read(files: &Files) -> Result<Raw, Failure> {
    let one = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("key `{key}`: cannot read {}: {e}", path.display()))
    };
    Ok(Raw {
        cert: one("tls.cert_file", &files.cert)?,
        key: one("tls.key_file", &files.key)?,
        client_ca: match &files.client_ca {
            Some(path) => Some(one("tls.client_ca_file", path)?),
            None => None,
        },
    })
}

impl Files {
    /// The directories holding the files, each once.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect()
    }
}

/// What the log says about a loaded certificate.
struct Leaf {
    subject: String,
    not_after: String,
}

/// Builds the server configuration from the files' bytes; the error names the key and file.
fn build(files: &Files, raw: &Raw) -> Result<(ServerConfig, Leaf), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&raw.cert)
        .map_err(|why| format!("key `tls.cert_file`: {}: {why}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&raw.key).map_err(|e| {
        format!(
            "key `tls.key_file`: {}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            files.key.display()
        )
    })?;
    let leaf = describe_leaf(&certs[0]);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match (&files.client_ca, &raw.client_ca) {
        (Some(path), Some(pem)) => {
            let verifier = client_verifier(pem, provider)
                .map_err(|why| format!("key `tls.client_ca_file`: {}: {why}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "keys `tls.cert_file` and `tls.key_file`: {} and {} do not make a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((config, leaf))
}

/// Every `CERTIFICATE` block of a PEM file, at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE block".to_string());
    }
    Ok(certs)
}

/// The verifier of client certificates: signed by one of the CAs in `pem`, or none at all.
fn client_verifier(
    pem: &[u8],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())
}

/// The subject and expiry of a certificate, for the log (best effort).
fn describe_leaf(der: &CertificateDer<'_>) -> Leaf {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => Leaf {
            subject: rfc4514(cert.subject()),
            not_after: cert.validity().not_after.to_string(),
        },
        Err(_) => Leaf {
            subject: "(unreadable)".to_string(),
            not_after: "(unreadable)".to_string(),
        },
    }
}

/// Whether an event kind can change what a file holds (never reads, nor metadata alone).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any) => true,
        EventKind::Modify(_) | EventKind::Access(_) | EventKind::Other => false,
    }
}

fn on_files_changed(tls: &Weak<Tls>, result: DebounceEventResult) {
    let Some(tls) = tls.upgrade() else { return };
    match result {
        Ok(events) => {
            if events.iter().any(|e| is_change(&e.event.kind)) {
                tls.reload_now();
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "TLS file watcher error");
            }
        }
    }
}

/// Reloads on every SIGHUP (the conventional "re-read your files" signal) while `tls` lives;
/// the task owns the file watcher, so aborting it stops both.
#[cfg(unix)]
fn spawn_hangup_reloader(
    tls: Weak<Tls>,
    mut watcher: Option<FileWatcher>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(tls) = tls.upgrade() else { return };
            // Three small files read and parsed: cheap enough for a runtime thread.
            tls.on_hangup(watcher.as_mut());
        }
    }))
}

/// No SIGHUP outside Unix: only file changes reload.
#[cfg(not(unix))]
fn spawn_hangup_reloader(
    _tls: Weak<Tls>,
    watcher: Option<FileWatcher>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        std::future::pending::<()>().await
    }))
}

/// Keeps the TLS reloaders alive; dropping it stops them.
#[derive(Debug)]
pub struct TlsWatch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The identity a verified client certificate carries: its subject in RFC 4514 form and its
/// subjectAltName URIs. `None` when the certificate cannot be parsed (rustls verified it, so
/// that does not happen in practice).
pub fn client_certificate(der: &CertificateDer<'_>) -> Option<ClientCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let uris = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(ClientCertificate {
        subject: rfc4514(cert.subject()),
        uris,
    })
}

/// A distinguished name as an RFC 4514 string: RDNs last-first, joined with `,`; the
/// attributes of a multi-valued RDN joined with `+`; the short names of RFC 4514 §3 (`CN`,
/// `O`, …), else the dotted OID; string values escaped (§2.4), other values as `#` and the
/// hex of their DER encoding. This is what nginx's `$ssl_client_s_dn` and OpenSSL's
/// `-nameopt RFC2253` print, so a subject reads the same natively and behind a proxy.
pub fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let value = match attribute_text(attr) {
                        Some(text) => escape_value(&text),
                        None => format!("#{}", hex::encode(der_of(attr.attr_value()))),
                    };
                    format!("{}={value}", short_name(&oid).unwrap_or(&oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The short names RFC 4514 §3 lists.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The value of a string-typed attribute (the directory string types; BMPString is UCS-2).
fn attribute_text(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    if let Ok(text) = attr.as_str() {
        return Some(text.to_string());
    }
    let any = attr.attr_value();
    match any.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = any
                .data
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::TeletexString | Tag::VisibleString => {
            std::str::from_utf8(any.data).ok().map(str::to_string)
        }
        _ => None,
    }
}

/// The DER encoding of a value (identifier, length, content), for the `#hex` form.
fn der_of(any: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Vec<u8> {
    let content = any.data;
    let number = any.header.tag().0;
    let mut out = Vec::with_capacity(content.len() + 6);
    // Low tag numbers fit the identifier octet (X.690 §8.1.2); attribute values use them.
    let class = (any.header.class() as u8) << 6;
    let constructed = if any.header.is_constructed() { 0x20 } else { 0 };
    out.push(class | constructed | u8::try_from(number.min(30)).unwrap_or(30));
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// RFC 4514 §2.4: `"`, `+`, `,`, `;`, `<`, `>` and `\` escaped with `\`, a leading space or
/// `#` and a trailing space too, NUL as `\00`.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn der(params: CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn subject_and_uris_of_a_certificate() {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "FR");
        dn.push(DnType::OrganizationName, "Example, Inc.");
        dn.push(DnType::CommonName, "sip:alice@example.com");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI("sip:alice@example.com".try_into().unwrap()),
            SanType::DnsName("phone.example.com".try_into().unwrap()),
        ];
        let cert = client_certificate(&der(params)).unwrap();
        assert_eq!(
            cert.subject,
            "CN=sip:alice@example.com,O=Example\\, Inc.,C=FR"
        );
        assert_eq!(cert.uris, ["sip:alice@example.com"]);

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sip:bob@example.com");
        params.distinguished_name = dn;
        let cert = client_certificate(&der(params)).unwrap();
        assert_eq!(cert.subject, "CN=sip:bob@example.com");
        assert!(cert.uris.is_empty());
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape_value("a+b;c<d>e\"f\\g"),
            "a\\+b\\;c\\<d\\>e\\\"f\\\\g"
        );
        assert_eq!(escape_value(" #x# "), "\\ #x#\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
        assert_eq!(escape_value("a\0b"), "a\\00b");
        assert_eq!(escape_value(""), "");
    }

    #[test]
    fn other_values_as_hex_der() {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sip:carol@example.com");
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 45]),
            rcgen::DnValue::UniversalString("x".try_into().unwrap()),
        );
        params.distinguished_name = dn;
        let cert = client_certificate(&der(params)).unwrap();
        assert_eq!(
            cert.subject,
            "2.5.4.45=#1c0400000078,CN=sip:carol@example.com"
        );
    }

    #[test]
    fn only_changes_reload() {
        use notify_debouncer_full::notify::event::{
            AccessKind, CreateKind, DataChange, MetadataKind, RenameMode,
        };
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Content
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::Both
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Read)));
        assert!(!is_change(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Any
        ))));
    }
}
