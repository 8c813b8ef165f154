//! The one render path (`provisio::document::render`: assemble → hooks → finish) on a typical
//! document: a space with a base linphonerc, custom entries, a vCard list and `ui` flags; an
//! account with a display name and two passwords. Measured without scripts (assembly and
//! finish alone), with the bundled scripts (`default.rhai` and the space's own), and the
//! per-snapshot cost it saves each request (preparing the space's static part), next to
//! assembling from an unprepared space as every request did before.
//!
//! Run: `cargo bench --bench render`.

use criterion::{Criterion, criterion_group, criterion_main};
use provisio::config::HookSettings;
use provisio::document::assemble::{assemble, assemble_spaces};
use provisio::document::{NoHooks, PreparedSpace, RenderInput, render};
use provisio::hooks::Hooks;
use provisio::model::{Account, Algorithm, Password, Space};
use provisio::request::{RequestInfo, RouteKind};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

/// A space as operators configure one (its domain has a bundled script: `tls.example.com`).
fn space() -> Space {
    let mut space = Space::new("tls.example.com", "prov.tls.example.com");
    space.base_rc = Some(
        "[sip]\nguess_hostname=1\ninc_timeout=30\nregister_only_when_network_is_up=1\n\
         [net]\nfirewall_policy=0\nmtu=1300\n[rtp]\naudio_jitt_comp=60\nvideo_jitt_comp=60\n\
         [sound]\necho_cancellation=1\n[video]\nautomatically_accept=0\n"
            .into(),
    );
    space.custom_entries = Some(
        "[sip]\ntransport=tls\n[proxy_0]\nreg_proxy=<sip:sip.tls.example.com;transport=tls>\n\
         reg_route=<sip:sip.tls.example.com;transport=tls;lr>\nreg_expires=3600\n\
         [nat_policy_0]\nstun_server=stun.tls.example.com\nprotocols=ice,stun\n"
            .into(),
    );
    space.vcard_list_url = Some("https://tls.example.com/contacts/vcard".into());
    space.ui.disable_chat_feature = true;
    space
}

fn account() -> Account {
    Account {
        id: 7,
        username: "anna".into(),
        domain: "tls.example.com".into(),
        email: Some("anna@tls.example.com".into()),
        display_name: Some("Anna O'Reily".into()),
        phone: None,
        activated: true,
        blocked: false,
        admin: false,
        dtmf_protocol: None,
        ip_address: None,
        user_agent: None,
        created_at: 0,
        updated_at: 0,
        dictionary: BTreeMap::from([("turn".to_string(), "1".to_string())]),
    }
}

fn passwords() -> Vec<Password> {
    [(Algorithm::Md5, 32), (Algorithm::Sha256, 64)]
        .into_iter()
        .enumerate()
        .map(|(i, (algorithm, len))| Password {
            id: i as i64 + 1,
            account_id: 7,
            algorithm,
            ha1: "a".repeat(len),
        })
        .collect()
}

fn request() -> RequestInfo {
    let mut r = RequestInfo::synthetic("prov.tls.example.com", "/provisioning/me", RouteKind::Me);
    r.headers = BTreeMap::from([
        ("host".to_string(), "prov.tls.example.com".to_string()),
        (
            "user-agent".to_string(),
            "LinphoneAndroid/5.2.5 (SDK 5.3.47)".to_string(),
        ),
        ("x-linphone-provisioning".to_string(), "1".to_string()),
    ]);
    r
}

fn bench_render(c: &mut Criterion) {
    let prepared = Arc::new(PreparedSpace::new(space()));
    let input = RenderInput {
        space: prepared.clone(),
        account_space: Some(prepared.clone()),
        account: Some(account()),
        passwords: passwords(),
        request: request(),
    };
    let hooks = Hooks::load(&HookSettings {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks"),
        watch: false,
        ..HookSettings::default()
    })
    .expect("bundled hooks compile");
    let (raw, account, passwords) = (space(), account(), passwords());

    let mut group = c.benchmark_group("render");
    group.bench_function("prepare the space (once per snapshot)", |b| {
        b.iter(|| black_box(PreparedSpace::new(black_box(raw.clone()))))
    });
    group.bench_function("assemble from the prepared space", |b| {
        b.iter(|| {
            black_box(assemble(
                &prepared,
                Some(&prepared),
                Some(&account),
                &passwords,
            ))
        })
    });
    group.bench_function("assemble from an unprepared space", |b| {
        b.iter(|| {
            black_box(assemble_spaces(
                &raw,
                Some(&raw),
                Some(&account),
                &passwords,
            ))
        })
    });
    group.bench_function("render, no scripts", |b| {
        b.iter(|| black_box(render(input.clone(), &NoHooks).expect("render")))
    });
    group.bench_function("render, bundled scripts", |b| {
        b.iter(|| black_box(render(input.clone(), &hooks).expect("render")))
    });
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
