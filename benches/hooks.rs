//! The cost of the hook stage with the bundled example scripts, next to document assembly
//! without hooks, measured in the same run: per fixture case, `assemble` alone, then the hook
//! stage alone (assembly done in the untimed setup), for every bundled fixture (a denied
//! request included: its hook stage ends in `deny`). Also the cost of a space with no script
//! (the fast path), of an empty hook (the fixed cost of calling any script), of compiling the
//! whole bundled directory (a reload that finds a change), and of a file event that changes
//! nothing (the directory read and hashed, nothing compiled).
//!
//! Run: `cargo bench --bench hooks`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use provisio::config::HookSettings;
use provisio::document::assemble::assemble_spaces as assemble;
use provisio::hooks::tools::Fixture;
use provisio::hooks::{HookContext, Hooks};
use std::hint::black_box;
use std::path::{Path, PathBuf};

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks")
}

/// Every bundled fixture case, by name.
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(bundled().join("fixtures"))
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    cases.sort();
    cases
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
    for case in cases() {
        let fixture = Fixture::load(&bundled().join("fixtures").join(&case)).expect("fixture");
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
                    // A fixture that expects a refusal ends in `deny`: still the hook stage.
                    let outcome = hooks.run(&ctx, &mut config);
                    assert_eq!(outcome.is_err(), fixture.expect_status.is_some());
                    black_box((outcome, config))
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

    // A reload that finds a change: read and compile every bundled script (imports
    // included; the engine is built too).
    group.bench_function("compile_bundled_dir", |b| {
        b.iter(|| black_box(load(&bundled())))
    });
    // A file event that changes nothing: the directory is read and hashed, nothing compiled.
    group.bench_function("reload_unchanged_dir", |b| {
        b.iter(|| hooks.reload_now().expect("reload"))
    });
    group.finish();
}

criterion_group!(benches, bench_hooks);
criterion_main!(benches);
