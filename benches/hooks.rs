//! The cost of the hook stage with the bundled example scripts, next to document assembly
//! without hooks, measured in the same run: per fixture case, `assemble` alone, then the hook
//! stage alone (assembly done in the untimed setup). Also the cost of a space with no
//! script (the fast path), of an empty hook (the fixed cost of calling any script), and of
//! recompiling the whole bundled directory (a reload).
//!
//! Run: `cargo bench --bench hooks`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use provisio::config::HookSettings;
use provisio::document::assemble::assemble_spaces as assemble;
use provisio::hooks::tools::Fixture;
use provisio::hooks::{HookContext, Hooks};
use std::hint::black_box;
use std::path::{Path, PathBuf};

/// Fixture cases benchmarked: default.rhai alone, and default + each example space script.
const CASES: &[&str] = &[
    "default-unchanged",
    "tls-account",
    "nat-turn",
    "query-allow-list",
    "contacts-carddav",
];

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks")
}

fn load(dir: &Path) -> Hooks {
    Hooks::load(&HookSettings {
        dir: dir.to_path_buf(),
        watch: false,
        ..HookSettings::default()
    })
    .expect("bundled hooks compile")
}

/// The hook stage's input for a fixture: its context and its assembled document.
fn prepare(fixture: &Fixture) -> (HookContext, provisio::lpconfig::Config) {
    let space = fixture.space();
    let account = fixture.account();
    let passwords = fixture.passwords();
    let assembled = assemble(&space, Some(&space), account.as_ref(), &passwords).expect("assemble");
    let ctx = HookContext {
        space: space.clone(),
        account_space: account.as_ref().map(|_| space.clone()),
        request: fixture.request(),
        account,
        proxy_section: assembled.proxy_section,
        auth_info_sections: assembled.auth_info_sections,
    };
    (ctx, assembled.config)
}

fn bench_hooks(c: &mut Criterion) {
    let hooks = load(&bundled());
    let empty_dir = tempfile::tempdir().expect("tempdir");
    let no_hooks = load(empty_dir.path());

    let mut group = c.benchmark_group("hooks");
    for case in CASES {
        let fixture = Fixture::load(&bundled().join("fixtures").join(case)).expect("fixture");
        let space = fixture.space();
        let account = fixture.account();
        let passwords = fixture.passwords();

        group.bench_function(format!("{case}/assemble"), |b| {
            b.iter(|| {
                black_box(
                    assemble(&space, Some(&space), account.as_ref(), &passwords).expect("assemble"),
                )
            })
        });
        group.bench_function(format!("{case}/hook_stage"), |b| {
            b.iter_batched(
                || prepare(&fixture),
                |(ctx, mut config)| {
                    hooks.run(&ctx, &mut config).expect("hooks run");
                    black_box(config)
                },
                BatchSize::SmallInput,
            )
        });
    }

    // A space with no script at all: one atomic load, nothing else.
    let fixture = Fixture::load(&bundled().join("fixtures/tls-account")).expect("fixture");
    group.bench_function("no-scripts/hook_stage", |b| {
        b.iter_batched(
            || prepare(&fixture),
            |(ctx, mut config)| {
                no_hooks.run(&ctx, &mut config).expect("hooks run");
                black_box(config)
            },
            BatchSize::SmallInput,
        )
    });

    // The fixed cost of running any script: maps for request and account, the shared
    // document, one empty call.
    let trivial_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        trivial_dir.path().join("default.rhai"),
        "fn on_config(config, request, account) { }\n",
    )
    .expect("write");
    let trivial = load(trivial_dir.path());
    group.bench_function("trivial-script/hook_stage", |b| {
        b.iter_batched(
            || prepare(&fixture),
            |(ctx, mut config)| {
                trivial.run(&ctx, &mut config).expect("hooks run");
                black_box(config)
            },
            BatchSize::SmallInput,
        )
    });

    // A reload: read and compile every bundled script (imports included).
    group.bench_function("reload_bundled_dir", |b| {
        b.iter(|| hooks.reload_now().expect("reload"))
    });
    group.finish();
}

criterion_group!(benches, bench_hooks);
criterion_main!(benches);
