//! Bad input gets a clear problem+json 4xx, and nothing is written.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

async fn counts(app: &TestApp, t: &TestTenant) -> Vec<usize> {
    let mut out = Vec::new();
    for list in [
        "/v1/seats",
        "/v1/numbers",
        "/v1/users",
        "/v1/queues",
        "/v1/skills",
    ] {
        let (_, v) = app.get(&format!("{list}?limit=200"), &t.admin).await;
        out.push(v["items"].as_array().unwrap().len());
    }
    out
}

#[tokio::test]
async fn malformed_oversized_unknown_and_invalid_input_is_refused() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let before = counts(&app, &t).await;

    let raw = |path: &'static str, ctype: &'static str, body: Vec<u8>| {
        let app = &app;
        let token = t.admin.clone();
        async move {
            let resp = app
                .req(Method::POST, path, Some(&token))
                .header("content-type", ctype)
                .body(body)
                .send()
                .await
                .unwrap();
            let ct = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            let (s, v) = split(resp).await;
            assert_eq!(
                ct.as_deref(),
                Some("application/problem+json"),
                "{path}: {v}"
            );
            (s, v)
        }
    };
    let (s, v) = raw("/v1/seats", "application/json", b"{\"label\": ".to_vec()).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "malformed-json");
    let (s, v) = raw(
        "/v1/seats",
        "application/json",
        br#"{"label" "x"}"#.to_vec(),
    )
    .await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "malformed-json");
    let (s, v) = raw("/v1/seats", "text/plain", b"{\"label\":\"x\"}".to_vec()).await;
    assert_problem(
        s,
        &v,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );
    let big = format!("{{\"label\":\"{}\"}}", "x".repeat(200 * 1024));
    let (s, v) = raw("/v1/seats", "application/json", big.into_bytes()).await;
    assert_problem(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    let (s, v) = raw(
        "/v1/seats",
        "application/json",
        br#"{"label":"x","billing":"free"}"#.to_vec(),
    )
    .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert!(v["detail"].as_str().unwrap().contains("billing"), "{v}");
    let (s, v) = raw("/v1/seats", "application/json", br#"{"label":""}"#.to_vec()).await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = raw("/v1/seats", "application/json", br#"{}"#.to_vec()).await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");

    for bad in [
        "4155550100",
        "+0123456",
        "+1",
        "+123456789012345678",
        "+1-415-CALL-NOW",
        "",
        "++14155550100",
    ] {
        let (s, v) = app
            .post(
                "/v1/numbers",
                &t.admin,
                json!({"number": bad, "kind": "did", "label": "x"}),
            )
            .await;
        assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert!(
            v["detail"].as_str().unwrap().contains("number"),
            "{bad}: {v}"
        );
    }
    let (s, v) = app
        .post(
            "/v1/numbers",
            &t.admin,
            json!({"number": "+14155550100", "kind": "premium", "label": "x"}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .post(
            "/v1/users",
            &t.admin,
            json!({"email": "not-an-email", "display_name": "x", "password": PASSWORD}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .post(
            "/v1/users",
            &t.admin,
            json!({"email": "x@acme.example.com", "display_name": "x", "password": "short"}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app.post("/v1/users", &t.admin, json!({"email": "x@acme.example.com", "display_name": "x", "password": PASSWORD, "role": "platform_operator"})).await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .post(
            "/v1/queues",
            &t.admin,
            json!({"name": "q", "max_wait_s": -1}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .post(
            "/v1/queues",
            &t.admin,
            json!({"name": "q", "strategy": "whoever"}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app.get("/v1/seats?limit=100000", &t.admin).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "bad-request");
    let (s, v) = app.get("/v1/seats?cursor=%%%", &t.admin).await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "bad-request");
    let (s, v) = app.get("/v1/seats/not-a-uuid", &t.admin).await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");
    let (s, v) = app.get("/v1/nothing-here", &t.admin).await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");

    assert_eq!(
        counts(&app, &t).await,
        before,
        "nothing may be written by refused requests"
    );
}

#[tokio::test]
async fn references_to_other_tenants_or_missing_rows_are_refused() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let other = app.tenant("other", 5).await;
    let (_, their_queue) = app
        .post("/v1/queues", &other.admin, json!({"name": "theirs"}))
        .await;
    let (_, their_skill) = app
        .post("/v1/skills", &other.admin, json!({"name": "theirs"}))
        .await;
    let (s, v) = app.post("/v1/numbers", &t.admin,
        json!({"number": "+14155550100", "kind": "did", "label": "x", "queue_id": their_queue["id"]})).await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .send_json(
            Method::PUT,
            &format!("/v1/users/{}/profile", t.agent_id),
            Some(&t.admin),
            Some(json!({"skills": [{"skill_id": their_skill["id"], "level": 5}], "queues": []})),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .send_json(
            Method::PUT,
            &format!("/v1/users/{}/profile", t.agent_id),
            Some(&t.admin),
            Some(json!({"skills": [], "queues": [{"queue_id": their_queue["id"], "tier": 1}]})),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");

    // And the happy path for the profile.
    let (_, q) = app
        .post(
            "/v1/queues",
            &t.admin,
            json!({"name": "mine", "strategy": "round_robin"}),
        )
        .await;
    let (_, sk) = app
        .post("/v1/skills", &t.admin, json!({"name": "french"}))
        .await;
    let profile = json!({"skills": [{"skill_id": sk["id"], "level": 7}], "queues": [{"queue_id": q["id"], "tier": 2}]});
    let (s, _) = app
        .send_json(
            Method::PUT,
            &format!("/v1/users/{}/profile", t.agent_id),
            Some(&t.admin),
            Some(profile.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, got) = app
        .get(&format!("/v1/users/{}/profile", t.agent_id), &t.supervisor)
        .await;
    assert_eq!((s, got), (StatusCode::OK, profile));
}
