//! Outgoing mail through an SMTP relay (`[smtp]`, the `lettre` crate over tokio and rustls):
//! the provisioning e-mail of FlexiAPI §2.4, a multipart message with a text part, an HTML
//! part and the QR code as an inline PNG the HTML shows by its `Content-ID`.
//!
//! A relay that cannot be reached, or that does not take a message now (4xx), is a 503; one
//! that refuses it for good (5xx, or an exchange the client cannot complete, such as no
//! common authentication mechanism) is a 502. Both messages name the relay by host and port,
//! never with the credentials of its URL.
//!
//! Texts are built in, and may be replaced per space: `<templates_dir>/<space-domain>/` then
//! `<templates_dir>/default/` may hold `provisioning.subject` (one line), `provisioning.txt`
//! and `provisioning.html`, each replacing its own part. `{{name}}` placeholders are filled in
//! ([`Vars`]); in the HTML part every value is HTML-escaped. An unknown placeholder is left
//! as written.

use crate::config::SmtpSettings;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `Content-ID` of the QR code image inside the HTML part (`cid:` + this).
pub const QR_CONTENT_ID: &str = "provisioning-qrcode@provisio";

/// The largest template file read (a mail is not a web site).
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// The directory, under `templates_dir`, whose files apply to every space without its own.
pub const DEFAULT_TEMPLATES: &str = "default";

/// Checks `[smtp]` at start-up, naming the key at fault and never echoing the URL (it may hold
/// a password).
pub fn check_settings(settings: &SmtpSettings) -> Result<(), String> {
    if settings.url.is_empty() {
        return Ok(());
    }
    if !(settings.url.starts_with("smtp://") || settings.url.starts_with("smtps://")) {
        return Err(
            "key `smtp.url`: must be smtp://[user:password@]host[:port][?tls=required] or smtps://…"
                .to_string(),
        );
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url)
        .map_err(|e| format!("key `smtp.url`: {e}"))?;
    if settings.from.trim().is_empty() {
        return Err("key `smtp.from`: required when `smtp.url` is set".to_string());
    }
    settings
        .from
        .parse::<Mailbox>()
        .map_err(|e| format!("key `smtp.from`: not an e-mail address ({e})"))?;
    if !settings.templates_dir.as_os_str().is_empty() && !settings.templates_dir.is_dir() {
        return Err(format!(
            "key `smtp.templates_dir`: {} is not a directory",
            settings.templates_dir.display()
        ));
    }
    Ok(())
}

/// Why a message was not delivered to the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The relay cannot be reached, or does not take the message now: retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// The relay refused the message or the exchange (502).
    #[error("{0}")]
    Refused(String),
}

/// The configured relay.
pub struct Relay {
    /// The transport (one connection per message: provisioning e-mails are rare).
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// The relay as messages name it: `host[:port]`, without credentials.
    label: String,
    /// The `From` of every message.
    from: Mailbox,
}

impl Relay {
    /// The relay of `[smtp]`, `None` when no URL is set. Settings are checked at start-up
    /// ([`check_settings`]); an error here names the key all the same.
    pub fn from_settings(settings: &SmtpSettings) -> Result<Option<Relay>, String> {
        if settings.url.is_empty() {
            return Ok(None);
        }
        check_settings(settings)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url)
            .map_err(|e| format!("key `smtp.url`: {e}"))?
            .timeout(Some(Duration::from_secs(settings.timeout_seconds)))
            .build();
        let from = settings
            .from
            .parse::<Mailbox>()
            .map_err(|e| format!("key `smtp.from`: {e}"))?;
        Ok(Some(Relay {
            transport,
            label: relay_label(&settings.url),
            from,
        }))
    }

    /// The `From` mailbox.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// The relay as messages name it (`host[:port]`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Opens a session with the relay and closes it: whether a message could be handed over
    /// now (called before anything is changed for a message).
    pub async fn check(&self) -> Result<(), MailError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(MailError::Unavailable(format!(
                "The mail relay {} does not answer",
                self.label
            ))),
            Err(e) => Err(self.classify(&e)),
        }
    }

    /// Hands a message to the relay.
    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| self.classify(&e))
    }

    /// Sorts a relay failure into "retry later" and "refused".
    fn classify(&self, e: &SmtpError) -> MailError {
        let label = &self.label;
        if e.is_permanent() || e.is_client() {
            MailError::Refused(format!("The mail relay {label} refused the message: {e}"))
        } else if e.is_transient() {
            MailError::Unavailable(format!(
                "The mail relay {label} cannot take the message now: {e}"
            ))
        } else {
            MailError::Unavailable(format!("The mail relay {label} cannot be reached: {e}"))
        }
    }
}

/// `host[:port]` of a relay URL: no scheme, credentials, path or query.
pub fn relay_label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..])
        .to_string()
}

/// What the placeholders of a provisioning e-mail stand for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// `{{link}}`: the wizard link (single use) that opens the app and configures it.
    pub link: String,
    /// `{{username}}`: the SIP user name.
    pub username: String,
    /// `{{domain}}`: the SIP domain.
    pub domain: String,
    /// `{{identifier}}`: `username@domain`.
    pub identifier: String,
    /// `{{display_name}}`: the account's display name (empty when it has none).
    pub display_name: String,
    /// `{{space}}`: the space's name.
    pub space: String,
    /// `{{qrcode}}`: the `cid:` URL of the inline QR code image (for `<img src>`).
    pub qrcode: String,
}

impl Vars {
    /// (placeholder name, value) pairs.
    fn pairs(&self) -> [(&'static str, &str); 7] {
        [
            ("link", &self.link),
            ("username", &self.username),
            ("domain", &self.domain),
            ("identifier", &self.identifier),
            ("display_name", &self.display_name),
            ("space", &self.space),
            ("qrcode", &self.qrcode),
        ]
    }
}

/// The three texts of a provisioning e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    /// The subject (one line).
    pub subject: String,
    /// The text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// Built-in subject (FlexiAPI's).
const SUBJECT: &str = "Welcome to {{space}}: Start using your account today";

/// Built-in text part (FlexiAPI's `mails/provisioning` wording).
const TEXT: &str = "Welcome to {{space}}

Hello {{identifier}},

We are pleased to inform you that your account has been successfully created.

To start using your account, open this link on the device where Linphone is installed
(it works once):

{{link}}

You can also connect your account to the mobile app by scanning the QR code attached to this
message with the app.
";

/// Built-in HTML part.
const HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Welcome to {{space}}</title></head>
<body style="font-family:sans-serif;max-width:36rem;margin:0 auto;padding:1rem">
<h1>Welcome to {{space}}</h1>
<p>Hello {{identifier}},</p>
<p>We are pleased to inform you that your account has been successfully created.</p>
<p>To start using your account, click the button below:</p>
<p><a id="login" href="{{link}}" style="display:inline-block;padding:.8rem 1.4rem;border-radius:.4rem;background:#ff5e00;color:#fff;text-decoration:none">Login to my account with Linphone</a></p>
<p>You can also connect your account to the mobile app by scanning the QR code with the app:</p>
<p><img id="qrcode" src="{{qrcode}}" alt="QR code of your account's configuration" width="300" height="300"></p>
</body>
</html>
"#;

/// The texts for a space: each of its template files, else the `default/` one, else the
/// built-in text, with the placeholders filled in. An unreadable file is an error naming it
/// (relative to `templates_dir`).
pub fn provisioning_texts(
    templates_dir: &Path,
    domain: &str,
    vars: &Vars,
) -> Result<Texts, String> {
    let pick = |file: &str, built_in: &str| -> Result<String, String> {
        if templates_dir.as_os_str().is_empty() {
            return Ok(built_in.to_string());
        }
        for dir in [domain, DEFAULT_TEMPLATES] {
            let relative: PathBuf = [dir, file].iter().collect();
            if let Some(text) = read_template(&templates_dir.join(&relative))
                .map_err(|e| format!("template {}: {e}", relative.display()))?
            {
                return Ok(text);
            }
        }
        Ok(built_in.to_string())
    };
    let subject = fill(&pick("provisioning.subject", SUBJECT)?, vars, false);
    Ok(Texts {
        // One line: a header cannot hold a line break.
        subject: subject
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_string(),
        text: fill(&pick("provisioning.txt", TEXT)?, vars, false),
        html: fill(&pick("provisioning.html", HTML)?, vars, true),
    })
}

/// A template file's text, `None` when it does not exist.
fn read_template(path: &Path) -> Result<Option<String>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > MAX_TEMPLATE_BYTES {
        return Err(format!("larger than {MAX_TEMPLATE_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "not UTF-8 text".to_string())
}

/// Replaces each `{{name}}` (spaces inside the braces allowed) by its value, HTML-escaped when
/// `html`; unknown names stay as written.
pub fn fill(template: &str, vars: &Vars, html: bool) -> String {
    let pairs = vars.pairs();
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match pairs.iter().find(|(n, _)| *n == name) {
            Some((_, value)) if html => out.push_str(&html_escape(value)),
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML content and attribute values (the same five characters as the
/// wizard pages escape).
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The provisioning e-mail: text, then HTML with the QR code inline (`multipart/alternative`
/// of the text and a `multipart/related` HTML part).
pub fn provisioning_message(
    from: &Mailbox,
    to: Mailbox,
    texts: Texts,
    qr_png: Vec<u8>,
) -> Result<Message, String> {
    let png = ContentType::parse("image/png").map_err(|e| e.to_string())?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(texts.subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(texts.text))
                .multipart(
                    MultiPart::related()
                        .singlepart(SinglePart::html(texts.html))
                        .singlepart(
                            Attachment::new_inline_with_name(
                                QR_CONTENT_ID.to_string(),
                                "qrcode.png".to_string(),
                            )
                            .body(qr_png, png),
                        ),
                ),
        )
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            link: "https://x/wizard/T?a=1&b=2".into(),
            username: "anna".into(),
            domain: "sip.example.com".into(),
            identifier: "anna@sip.example.com".into(),
            display_name: "Anna <A>".into(),
            space: "Example".into(),
            qrcode: format!("cid:{QR_CONTENT_ID}"),
        }
    }

    #[test]
    fn placeholders() {
        let v = vars();
        assert_eq!(
            fill("{{ display_name }} {{link}} {{nope}} {{", &v, false),
            "Anna <A> https://x/wizard/T?a=1&b=2 {{nope}} {{"
        );
        assert_eq!(
            fill("<a href=\"{{link}}\">{{display_name}}</a>", &v, true),
            "<a href=\"https://x/wizard/T?a=1&amp;b=2\">Anna &lt;A&gt;</a>"
        );
    }

    #[test]
    fn templates_per_space_then_default_then_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let v = vars();
        let built_in = provisioning_texts(dir.path(), "sip.example.com", &v).unwrap();
        assert_eq!(
            built_in.subject,
            "Welcome to Example: Start using your account today"
        );
        assert!(built_in.text.contains("https://x/wizard/T?a=1&b=2"));
        assert!(
            built_in
                .html
                .contains("src=\"cid:provisioning-qrcode@provisio\"")
        );
        std::fs::create_dir_all(dir.path().join("default")).unwrap();
        std::fs::create_dir_all(dir.path().join("sip.example.com")).unwrap();
        std::fs::write(
            dir.path().join("default/provisioning.txt"),
            "D {{username}}",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sip.example.com/provisioning.subject"),
            "\n Hi {{username}} \nignored",
        )
        .unwrap();
        let t = provisioning_texts(dir.path(), "sip.example.com", &v).unwrap();
        assert_eq!(t.subject, "Hi anna");
        assert_eq!(t.text, "D anna");
        assert_eq!(t.html, built_in.html);
        std::fs::write(dir.path().join("sip.example.com/provisioning.html"), [0xff]).unwrap();
        let e = provisioning_texts(dir.path(), "sip.example.com", &v).unwrap_err();
        assert!(
            e.contains("provisioning.html") && e.contains("UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn settings_and_labels() {
        let mut s = SmtpSettings::default();
        assert!(check_settings(&s).is_ok());
        assert!(Relay::from_settings(&s).unwrap().is_none());
        s.url = "smtp://user:s3cret@relay.example.com:2525".into();
        let e = check_settings(&s).unwrap_err();
        assert!(e.contains("`smtp.from`") && !e.contains("s3cret"), "{e}");
        s.from = "Provisio <noreply@example.com>".into();
        let relay = Relay::from_settings(&s).unwrap().unwrap();
        assert_eq!(relay.label(), "relay.example.com:2525");
        assert!(!format!("{s:?}").contains("s3cret"));
        s.url = "http://user:s3cret@relay.example.com".into();
        let e = check_settings(&s).unwrap_err();
        assert!(e.contains("`smtp.url`") && !e.contains("s3cret"), "{e}");
        s.url = "smtps://relay.example.com".into();
        s.from = "not an address".into();
        assert!(check_settings(&s).unwrap_err().contains("`smtp.from`"));
        assert_eq!(relay_label("smtps://a:b@h:465/ehlo?tls=x"), "h:465");
    }
}
