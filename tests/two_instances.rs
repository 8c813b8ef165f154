//! Two provisio instances on one PostgreSQL database (the same schema, two pools, two
//! listeners), as behind a load balancer: a token fetched concurrently through both is served
//! exactly once.

mod common;

use common::server::{Backend, TestApp};
use provisio::app;
use std::sync::Arc;

/// Concurrent fetches of one token per round, split evenly between the two instances.
const FETCHES: usize = 200;
/// Rounds, each with a new token.
const ROUNDS: usize = 5;

/// 200 concurrent fetches of one token, half through each instance, released together: exactly
/// one 200 (with the document), 199 × 404; five times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_fetched_through_two_instances_is_served_once() {
    // 199 losers a round from one address: the guessing limit would answer 429 from round two
    // on, which is not what this test is about (tests/hardening_net.rs covers the limit).
    let Some(first) = TestApp::start_with(Backend::Postgres, |s| {
        s.rate_limit.failures_per_minute = 0;
    })
    .await
    else {
        return;
    };
    // The second instance: its own state (pool) and listener over the same database URL.
    let mut settings = (*first.state.settings).clone();
    settings.listen = "127.0.0.1:0".parse().expect("addr");
    let second_state = app::build_state(settings, false)
        .await
        .expect("second instance");
    let second = app::spawn(second_state, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("spawn the second instance");
    let bases = [first.base.clone(), format!("http://{}", second.addr)];

    let space = first.space("pair.example", |_| {}).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(FETCHES)
        .build()
        .expect("client");
    for round in 0..ROUNDS {
        let account = first
            .account(&space, &format!("user{round}"), "secret")
            .await;
        let token = first.token(&account).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(FETCHES));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..FETCHES {
            let (client, barrier) = (client.clone(), barrier.clone());
            let url = format!("{}/provisioning/{token}", bases[i % 2]);
            set.spawn(async move {
                barrier.wait().await;
                let r = client
                    .get(url)
                    .header("host", "pair.example")
                    .header("x-linphone-provisioning", "1")
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                let body = r.text().await.expect("body");
                (i % 2, status, body)
            });
        }
        let results = set.join_all().await;
        let served: Vec<_> = results.iter().filter(|(_, s, _)| *s == 200).collect();
        assert_eq!(
            served.len(),
            1,
            "round {round}: exactly one 200, got statuses {:?}",
            results.iter().map(|(_, s, _)| *s).collect::<Vec<_>>()
        );
        assert!(
            served[0]
                .2
                .contains(&format!("sip:user{round}@pair.example")),
            "round {round}: the winner gets the account's document"
        );
        assert!(
            results.iter().all(|(_, s, _)| *s == 200 || *s == 404),
            "round {round}: every loser gets 404"
        );
        for instance in 0..2 {
            assert!(
                results.iter().any(|(n, _, _)| *n == instance),
                "both instances answered"
            );
        }
        eprintln!(
            "round {round}: served by instance {}, {} × 404",
            served[0].0,
            FETCHES - 1
        );
    }
    second.stop().await.expect("stop the second instance");
    first.stop().await;
}
