//! `docs/openapi.yaml` describes exactly what the server serves: every route of
//! `provisio::http::api::ROUTES` is in the document and no document path is missing from it;
//! every `$ref` resolves; and each listed route is really served by the live server, on both
//! stores.
//!
//! "Served" is proven without knowing each route's data: a path that some route matches answers
//! a method no route uses (PATCH) with 405, while an unrouted path answers 404; and the listed
//! method on that path is not a 405, so a route with that very method matched it.

mod common;

use common::server::TestApp;
use provisio::http::api::ROUTES;
use std::collections::BTreeSet;

const SPEC: &str = include_str!("../docs/openapi.yaml");

/// Every mapping key of a YAML document as its path of keys (`["paths", "/x", "get"]`), read
/// by indentation. Enough for the document's own block style: block scalars and list items are
/// skipped.
fn key_paths(yaml: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut scalar_indent: Option<usize> = None;
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(i) = scalar_indent {
            if indent > i {
                continue;
            }
            scalar_indent = None;
        }
        if trimmed.starts_with("- ") {
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        let key = key.trim().trim_matches('"').to_string();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        out.push(stack.iter().map(|(_, k)| k.clone()).collect());
        let value = rest.trim();
        if value == "|" || value == ">" || value.starts_with("|-") || value.starts_with(">-") {
            scalar_indent = Some(indent);
        }
    }
    out
}

/// `(METHOD, path)` of every operation in the document.
fn documented() -> BTreeSet<(String, String)> {
    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    key_paths(SPEC)
        .into_iter()
        .filter(|p| p.len() == 3 && p[0] == "paths" && METHODS.contains(&p[2].as_str()))
        .map(|p| (p[2].to_ascii_uppercase(), p[1].clone()))
        .collect()
}

#[test]
fn document_and_route_list_agree() {
    assert!(SPEC.starts_with("openapi: 3.1."), "an OpenAPI 3.1 document");
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed.len(), ROUTES.len(), "ROUTES has duplicates");
    let documented = documented();
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&listed).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in docs/openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in docs/openapi.yaml but not served: {unserved:?}"
    );
    for required in [
        "/provisioning",
        "/provisioning/me",
        "/provisioning/{provisioning_token}",
        "/provisioning/auth_token/{auth_token}",
        "/provisioning/qrcode/{provisioning_token}",
        "/wizard/{token}",
        "/wizard",
        "/api/wizard",
        "/api/accounts/{id}/send_provisioning_email",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            documented.iter().any(|(_, p)| p == required),
            "{required} is documented"
        );
    }
}

#[test]
fn every_reference_resolves_and_path_parameters_are_declared() {
    let keys: BTreeSet<String> = key_paths(SPEC).iter().map(|p| p.join("/")).collect();
    let mut refs = 0;
    for line in SPEC.lines() {
        if let Some((_, target)) = line.split_once("$ref: ") {
            let target = target.trim().trim_matches('"');
            let local = target
                .strip_prefix("#/")
                .unwrap_or_else(|| panic!("only local refs: {target}"));
            assert!(keys.contains(local), "dangling $ref {target}");
            refs += 1;
        }
    }
    assert!(refs > 50);
    // Each `{param}` of a path template is declared as a path parameter component the
    // operations of that path use.
    for (_, path) in documented() {
        for param in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            let declared = SPEC.contains(&format!("      name: {param}\n      in: path\n"));
            assert!(declared, "{path}: parameter {param} is not declared");
        }
    }
}

/// A concrete path for a template (any value: the route must match, not succeed).
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "1")
        .replace("{domain}", "probe.example.com")
        .replace(['{', '}'], "")
}

both_backends!(every_listed_route_is_served, |app: TestApp| async move {
    app.space("sip.example.com", |_| {}).await;
    let send = |method: &str, path: &str| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.client
            .request(method, format!("{}{}", app.base, path))
            .header("host", "sip.example.com")
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    // The probe itself: an unrouted path is a 404 for any method.
    assert_eq!(send("PATCH", "/no/such/route").await.unwrap().status(), 404);
    assert_eq!(send("GET", "/api/nothing").await.unwrap().status(), 404);
    for (method, template) in ROUTES {
        let path = concrete(template);
        let probe = send("PATCH", &path).await.unwrap().status();
        assert_eq!(probe, 405, "{method} {template}: no route matches {path}");
        let status = send(method, &path).await.unwrap().status();
        assert_ne!(
            status, 405,
            "{method} {template}: {path} is routed, but not for {method}"
        );
        assert!(status.as_u16() < 500, "{method} {template}: {status}");
    }
});
