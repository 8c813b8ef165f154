//! The real `provisio` binary: the operator commands on a fresh embedded store, `--json`
//! output for scripts, bad configuration named by key, and the hook-author tools on the
//! bundled examples (passing, then failing with a diff when an expectation is edited).

use std::path::Path;
use std::process::{Command, Output};

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
