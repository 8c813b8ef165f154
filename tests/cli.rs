//! The real `provisio` binary: the operator commands on a fresh embedded store, `--json`
//! output for scripts, bad configuration named by key, and the hook-author tools on the
//! bundled examples (passing, then failing with a diff when an expectation is edited).
//! Passwords never need the command line (file, standard input); admin keys are listed and
//! revoked (a real server then answers 401); accounts are blocked, unblocked and deleted;
//! spaces updated and deleted (never without --yes off a terminal); completions, the man page,
//! enum flags' possible values in --help, and `token --reset-password` URLs the server honours.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn provisio(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provisio"))
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"])
        .args(args)
        .output()
        .expect("run provisio")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn operator_commands_with_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    std::fs::write(dir.path().join("custom.ini"), "[sip]\ntransport=tls\n").unwrap();
    let out = ok(&provisio(
        dir.path(),
        &[
            "space",
            "add",
            "sip.example.com",
            "--algorithm",
            "MD5",
            "--custom-entries",
            "custom.ini",
            "--json",
        ],
    ));
    let space: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        space["digest_authentication_configuration"]["default_password_algorithm"],
        "MD5"
    );
    assert_eq!(
        space["custom_provisioning_entries"],
        "[sip]\ntransport=tls\n"
    );

    let out = ok(&provisio(
        dir.path(),
        &[
            "account",
            "add",
            "alice@sip.example.com",
            "--password",
            "secret-pw",
            "--set",
            "tier=gold",
            "--json",
        ],
    ));
    let account: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(account["sip_uri"], "sip:alice@sip.example.com");
    assert_eq!(account["dictionary"]["tier"], "gold");
    assert!(
        !out.contains("secret"),
        "the clear password given is not echoed"
    );

    let out = ok(&provisio(
        dir.path(),
        &["token", "alice@sip.example.com", "--json"],
    ));
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = token["provisioning_token"].as_str().unwrap();
    assert_eq!(t.len(), 43);
    assert!(
        token["provisioning_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/provisioning/{t}"))
    );

    let out = ok(&provisio(dir.path(), &["render", "alice@sip.example.com"]));
    let doc = provisio::lpconfig::xml::parse(out.trim()).unwrap();
    assert_eq!(doc.section("sip").unwrap().get("transport"), Some("tls"));
    let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(
        b"alice:sip.example.com:secret-pw",
    ));
    assert_eq!(
        doc.section("auth_info_0").unwrap().get("ha1"),
        Some(md5.as_str())
    );

    let out = ok(&provisio(
        dir.path(),
        &[
            "account",
            "dict",
            "alice@sip.example.com",
            "--unset",
            "tier",
            "--json",
        ],
    ));
    assert_eq!(out.trim(), "{}");

    // Refusals name what is wrong and exit non-zero.
    let out = provisio(
        dir.path(),
        &[
            "account",
            "add",
            "Bad User@sip.example.com",
            "--password",
            "x",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("username"));
    std::fs::write(dir.path().join("bad.ini"), "orphan=1\n[s]\n").unwrap();
    let out = provisio(
        dir.path(),
        &[
            "space",
            "add",
            "b.example.com",
            "--custom-entries",
            "bad.ini",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path().join("provisio.toml"), "listen = 42\n").unwrap();
    let out = provisio(dir.path(), &["space", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`listen`"));
}

#[test]
fn hook_tools_on_the_bundled_examples() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks"),
        &dir.path().join("hooks"),
    );
    let out = ok(&provisio(dir.path(), &["hooks", "check", "hooks"]));
    assert!(out.contains("default.rhai"), "{out}");
    ok(&provisio(dir.path(), &["hooks", "test", "hooks"]));

    // Edit one expectation: the run fails and shows the difference.
    let expected = dir.path().join("hooks/fixtures/tls-account/expected.xml");
    let text = std::fs::read_to_string(&expected).unwrap();
    std::fs::write(&expected, text.replace("3600", "1800")).unwrap();
    let out = provisio(dir.path(), &["hooks", "test", "hooks"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1800") && stdout.contains("3600"),
        "a readable diff:\n{stdout}"
    );
    // --bless rewrites it, and the run passes again.
    ok(&provisio(
        dir.path(),
        &["hooks", "test", "hooks", "--bless"],
    ));
    ok(&provisio(dir.path(), &["hooks", "test", "hooks"]));

    // A script that does not compile: check names file and line, exits non-zero.
    std::fs::write(
        dir.path().join("hooks/broken.example.com.rhai"),
        "fn on_config(c, r, a) {\n  let = ;\n}\n",
    )
    .unwrap();
    let out = provisio(dir.path(), &["hooks", "check", "hooks"]);
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("broken.example.com.rhai:2"), "{all}");
}

/// Runs `provisio` with `input` on its standard input (a pipe, not a terminal).
fn provisio_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisio"))
        .current_dir(dir)
        .env_remove("PROVISIO_CONFIG")
        .args(["--data-dir", "data", "--hooks-dir", "hooks"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn provisio");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait provisio")
}

/// Asserts a failure whose output says `words`.
fn refused(out: &Output, words: &[&str]) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "expected a refusal:\n{all}");
    for word in words {
        assert!(all.contains(word), "{word:?} missing from:\n{all}");
    }
}

/// The HA1 the rendered document carries for `identity` (MD5 spaces).
fn rendered_ha1(dir: &Path, identity: &str) -> String {
    let out = ok(&provisio(dir, &["render", identity]));
    let doc = provisio::lpconfig::xml::parse(out.trim()).unwrap();
    doc.section("auth_info_0")
        .unwrap()
        .get("ha1")
        .unwrap()
        .to_string()
}

fn md5_hex(text: &str) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(text.as_bytes()))
}

/// A `provisio serve` on 127.0.0.1:0 over the directory's database.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_provisio"))
            .current_dir(dir)
            .env_remove("PROVISIO_CONFIG")
            .env("PROVISIO_LOG", "info")
            .args(["--data-dir", "data", "--hooks-dir", "hooks"])
            .args(["--listen", "127.0.0.1:0", "serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn provisio serve");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let addr = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("provisio listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string);
            if let Some(addr) = addr {
                return Server { child, addr };
            }
            assert!(
                child.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "serve did not start:\n{}",
                lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` with `headers`: the status and the whole answer, lower-cased.
    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        // The head (and an HTML body), lower-cased.
        let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, head)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn passwords_never_need_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    ok(&provisio(
        dir.path(),
        &["space", "add", "pw.example.com", "--algorithm", "md5"],
    ));

    // Standard input: the first line, without its line ending.
    ok(&provisio_stdin(
        dir.path(),
        &["account", "add", "bob@pw.example.com", "--password-stdin"],
        "stdin-pw-123\nignored second line\n",
    ));
    assert_eq!(
        rendered_ha1(dir.path(), "bob@pw.example.com"),
        md5_hex("bob:pw.example.com:stdin-pw-123")
    );

    // A file.
    std::fs::write(dir.path().join("pw.txt"), "file-pw-4567\n").unwrap();
    let out = ok(&provisio(
        dir.path(),
        &[
            "account",
            "add",
            "carol@pw.example.com",
            "--password-file",
            "pw.txt",
        ],
    ));
    assert!(!out.contains("file-pw"), "{out}");
    assert_eq!(
        rendered_ha1(dir.path(), "carol@pw.example.com"),
        md5_hex("carol:pw.example.com:file-pw-4567")
    );

    // A new password for an existing account, from standard input.
    ok(&provisio_stdin(
        dir.path(),
        &[
            "account",
            "password",
            "carol@pw.example.com",
            "--password-stdin",
        ],
        "replaced-pw-890\n",
    ));
    assert_eq!(
        rendered_ha1(dir.path(), "carol@pw.example.com"),
        md5_hex("carol:pw.example.com:replaced-pw-890")
    );

    // admin add needs a password: without one and without a terminal it says how to give it.
    refused(
        &provisio(dir.path(), &["admin", "add", "root@pw.example.com"]),
        &["--password-file", "--password-stdin"],
    );
    let out = ok(&provisio_stdin(
        dir.path(),
        &[
            "admin",
            "add",
            "root@pw.example.com",
            "--password-stdin",
            "--json",
        ],
        "admin-pw-2468\n",
    ));
    let admin: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(admin["api_key"].as_str().unwrap().len(), 43);
    assert_eq!(
        rendered_ha1(dir.path(), "root@pw.example.com"),
        md5_hex("root:pw.example.com:admin-pw-2468")
    );

    // Two sources at once, and an empty one, are refused.
    refused(
        &provisio(
            dir.path(),
            &[
                "account",
                "add",
                "dan@pw.example.com",
                "--password-file",
                "pw.txt",
                "--password-stdin",
            ],
        ),
        &["cannot be used with"],
    );
    refused(
        &provisio_stdin(
            dir.path(),
            &["account", "add", "dan@pw.example.com", "--password-stdin"],
            "\n",
        ),
        &["empty"],
    );
}

#[test]
fn admin_keys_are_listed_and_revoked_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    let out = ok(&provisio_stdin(
        dir.path(),
        &[
            "admin",
            "add",
            "ops@admin.example.com",
            "--password-stdin",
            "--super",
            "--json",
        ],
        "admin-pw-1357\n",
    ));
    let first: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first_key = first["api_key"].as_str().unwrap().to_string();
    // A second key for the same admin (admin add again recovers a lost key).
    let out = ok(&provisio_stdin(
        dir.path(),
        &[
            "admin",
            "add",
            "ops@admin.example.com",
            "--password-stdin",
            "--json",
        ],
        "admin-pw-1357\n",
    ));
    let second: serde_json::Value = serde_json::from_str(&out).unwrap();
    let second_key = second["api_key"].as_str().unwrap().to_string();

    let out = ok(&provisio(dir.path(), &["admin", "list", "--json"]));
    assert!(
        !out.contains(&first_key) && !out.contains(&second_key),
        "keys never listed"
    );
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["account"], "sip:ops@admin.example.com");
    assert_eq!(list[0]["super"], true);
    let ids: Vec<i64> = list[0]["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    let text = ok(&provisio(dir.path(), &["admin", "list"]));
    assert!(
        text.contains("sip:ops@admin.example.com\tsuper admin")
            && text.contains(&format!("key {}", ids[0])),
        "{text}"
    );

    let server = Server::start(dir.path());
    let me = |key: &str| {
        server
            .get(
                "admin.example.com",
                "/api/accounts/me",
                &[("x-api-key", key), ("accept", "application/json")],
            )
            .0
    };
    assert_eq!(me(&first_key), 200);
    assert_eq!(me(&second_key), 200);

    // Revoke the first key while the server runs: refused at once, the other still works.
    let out = ok(&provisio(
        dir.path(),
        &["admin", "revoke", &ids[0].to_string()],
    ));
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(me(&first_key), 401);
    assert_eq!(me(&second_key), 200);
    refused(
        &provisio(dir.path(), &["admin", "revoke", &ids[0].to_string()]),
        &["no API key"],
    );
    let out = ok(&provisio(dir.path(), &["admin", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["api_keys"].as_array().unwrap().len(), 1);
}

#[test]
fn reset_password_urls_are_honoured_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    ok(&provisio(dir.path(), &["space", "add", "qr.example.com"]));
    ok(&provisio(
        dir.path(),
        &["account", "add", "eve@qr.example.com"],
    ));
    // Without the flag, no URL resets.
    let out = ok(&provisio(
        dir.path(),
        &["token", "eve@qr.example.com", "--json"],
    ));
    assert!(!out.contains("reset_password=1"), "{out}");
    let text = ok(&provisio(
        dir.path(),
        &["token", "eve@qr.example.com", "--reset-password"],
    ));
    assert_eq!(text.matches("?reset_password=1").count(), 2, "{text}");
    // The last token minted is the current one, served below.
    let out = ok(&provisio(
        dir.path(),
        &["token", "eve@qr.example.com", "--reset-password", "--json"],
    ));
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = token["provisioning_token"].as_str().unwrap();
    for key in ["provisioning_url", "qrcode_url", "wizard_url"] {
        let url = token[key].as_str().unwrap();
        assert!(
            url.ends_with(&format!("/{t}?reset_password=1")),
            "{key}: {url}"
        );
    }

    let server = Server::start(dir.path());
    let qrcode = token["qrcode_url"].as_str().unwrap();
    let path = &qrcode[qrcode.find("/provisioning/").unwrap()..];
    let (status, head) = server.get("qr.example.com", path, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains(&format!(
            "x-qrcode-url: http://qr.example.com/provisioning/{}?reset_password=1",
            t.to_ascii_lowercase()
        )),
        "{head}"
    );
    // The wizard page shows (and its QR encodes) the resetting provisioning URL too.
    let wizard = token["wizard_url"].as_str().unwrap();
    let path = &wizard[wizard.find("/wizard/").unwrap()..];
    let (status, page) = server.get("qr.example.com", path, &[("accept", "text/html")]);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!(
            "/provisioning/{}?reset_password=1",
            t.to_ascii_lowercase()
        )),
        "{page}"
    );
}

#[test]
fn accounts_are_blocked_unblocked_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    ok(&provisio(dir.path(), &["space", "add", "b.example.com"]));
    ok(&provisio(
        dir.path(),
        &["account", "add", "zoe@b.example.com"],
    ));

    let out = ok(&provisio(
        dir.path(),
        &["account", "block", "zoe@b.example.com", "--json"],
    ));
    let account: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(account["blocked"], true);
    let list = ok(&provisio(dir.path(), &["account", "list"]));
    assert!(
        list.contains("sip:zoe@b.example.com\tactivated=false\tblocked=true"),
        "{list}"
    );
    let out = ok(&provisio(
        dir.path(),
        &["account", "unblock", "zoe@b.example.com"],
    ));
    assert!(out.contains("unblocked"), "{out}");
    let list = ok(&provisio(dir.path(), &["account", "list"]));
    assert!(list.contains("blocked=false"), "{list}");

    // Without --yes and without a terminal to ask on, nothing is deleted.
    refused(
        &provisio(dir.path(), &["account", "delete", "zoe@b.example.com"]),
        &["--yes", "not a terminal"],
    );
    assert!(ok(&provisio(dir.path(), &["account", "list"])).contains("zoe@b.example.com"));
    let out = ok(&provisio(
        dir.path(),
        &["account", "delete", "zoe@b.example.com", "--yes"],
    ));
    assert!(out.contains("deleted"), "{out}");
    assert!(!ok(&provisio(dir.path(), &["account", "list"])).contains("zoe@b.example.com"));
    refused(
        &provisio(dir.path(), &["account", "block", "zoe@b.example.com"]),
        &["no account zoe@b.example.com"],
    );
}

#[test]
fn spaces_are_updated_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    ok(&provisio(
        dir.path(),
        &[
            "space",
            "add",
            "s.example.com",
            "--space-url",
            "https://one.example.com",
        ],
    ));
    let out = ok(&provisio(
        dir.path(),
        &[
            "space",
            "update",
            "s.example.com",
            "--header-mode",
            "linphone-user-agent",
            "--host",
            "prov.s.example.com",
            "--overwrite-all",
            "--json",
        ],
    ));
    let space: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(space["host"], "prov.s.example.com");
    let list = ok(&provisio(dir.path(), &["space", "list"]));
    assert!(list.contains("header=linphone-user-agent"), "{list}");
    assert!(list.contains("host=prov.s.example.com"), "{list}");
    // What was not named stays; an empty value clears an optional setting.
    let shown = ok(&provisio(dir.path(), &["space", "list", "--json"]));
    assert!(shown.contains("https://one.example.com"), "{shown}");
    ok(&provisio(
        dir.path(),
        &[
            "space",
            "update",
            "s.example.com",
            "--space-url",
            "",
            "--overwrite-all=false",
        ],
    ));
    let shown = ok(&provisio(dir.path(), &["space", "list", "--json"]));
    assert!(!shown.contains("https://one.example.com"), "{shown}");
    assert!(ok(&provisio(dir.path(), &["space", "list"])).contains("header=linphone-user-agent"));

    // The realm is frozen once accounts hash their passwords with it.
    ok(&provisio(
        dir.path(),
        &["account", "add", "ann@s.example.com"],
    ));
    refused(
        &provisio(
            dir.path(),
            &["space", "update", "s.example.com", "--realm", "other"],
        ),
        &["realm"],
    );
    refused(
        &provisio(
            dir.path(),
            &["space", "update", "nope.example.com", "--name", "x"],
        ),
        &["no space nope.example.com"],
    );
    // The old spelling of the space's URL flag is now the server's: refused with the new name.
    refused(
        &provisio(
            dir.path(),
            &[
                "space",
                "update",
                "s.example.com",
                "--public-url",
                "https://x.example.com",
            ],
        ),
        &["--space-url"],
    );

    refused(
        &provisio(dir.path(), &["space", "delete", "s.example.com"]),
        &["--yes", "1 account"],
    );
    assert!(ok(&provisio(dir.path(), &["space", "list"])).contains("s.example.com"));
    ok(&provisio(
        dir.path(),
        &["space", "delete", "s.example.com", "--yes"],
    ));
    assert!(!ok(&provisio(dir.path(), &["space", "list"])).contains("s.example.com"));
    assert!(
        !ok(&provisio(dir.path(), &["account", "list"])).contains("ann@"),
        "accounts go with it"
    );
}

#[test]
fn help_completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let help = ok(&provisio(dir.path(), &["space", "add", "--help"]));
    for value in [
        "MD5",
        "SHA-256",
        "required",
        "linphone-user-agent",
        "off",
        "fail",
        "skip",
    ] {
        assert!(help.contains(value), "{value} missing from:\n{help}");
    }
    assert!(
        help.contains("PROVISIO_DATABASE") && help.contains("PROVISIO_PUBLIC_URL"),
        "{help}"
    );
    refused(
        &provisio(
            dir.path(),
            &[
                "space",
                "add",
                "x.example.com",
                "--header-mode",
                "sometimes",
            ],
        ),
        &["possible values", "linphone-user-agent"],
    );
    let help = ok(&provisio(dir.path(), &["render", "--help"]));
    assert!(
        help.contains("auth_token") && help.contains("anonymous"),
        "{help}"
    );

    // The database URL from the environment is never shown (it may hold a password).
    let out = Command::new(env!("CARGO_BIN_EXE_provisio"))
        .env("PROVISIO_DATABASE", "postgres://u:hunter2-secret@db/x")
        .args(["--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    let bash = ok(&provisio(dir.path(), &["completions", "bash"]));
    for word in [
        "_provisio",
        "space",
        "account",
        "revoke",
        "--password-stdin",
    ] {
        assert!(
            bash.contains(word),
            "{word} missing from the bash completions"
        );
    }
    let zsh = ok(&provisio(dir.path(), &["completions", "zsh"]));
    assert!(zsh.contains("#compdef provisio"), "{zsh}");
    refused(
        &provisio(dir.path(), &["completions", "tcsh"]),
        &["possible values"],
    );

    let man = ok(&provisio(dir.path(), &["man"]));
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH SUBCOMMANDS",
        "provisio\\-space",
    ] {
        assert!(man.contains(section), "{section} missing from the man page");
    }
    // Both work where the configuration does not load.
    std::fs::write(dir.path().join("provisio.toml"), "listen = 42\n").unwrap();
    ok(&provisio(dir.path(), &["man"]));
}
