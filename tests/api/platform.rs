//! Platform surface: OpenAPI document and docs page, health/readiness, metrics, request ids,
//! pagination, and tenant administration by operators only.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn openapi_document_describes_every_operation() {
    let app = spawn_app().await;
    let (s, doc) = app
        .send_json(Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut ops = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with("/v1/"), "{path}");
        for (method, op) in item.as_object().unwrap() {
            ops += 1;
            let role = op["x-min-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no x-min-role"));
            assert!(
                [
                    "public",
                    "agent",
                    "supervisor",
                    "tenant_admin",
                    "platform_operator"
                ]
                .contains(&role)
            );
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
    }
    assert!(ops >= 30, "{ops} operations");
    // The committed snapshot: an API change shows up in review as a diff of api/openapi.json.
    // Regenerate with SWITCHBOARD_UPDATE_SNAPSHOTS=1.
    let snapshot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("api/openapi.json");
    let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var("SWITCHBOARD_UPDATE_SNAPSHOTS").is_ok() {
        std::fs::write(&snapshot, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert!(
        committed == pretty,
        "api/openapi.json is out of date: run SWITCHBOARD_UPDATE_SNAPSHOTS=1 cargo nextest run -p switchboard openapi"
    );
    let resp = app.req(Method::GET, "/v1/docs", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("/v1/openapi.json"));
}

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    assert_eq!(
        app.req(Method::GET, "/healthz", None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.req(Method::GET, "/readyz", None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.get("/v1/seats", &t.admin).await;
    let resp = app
        .req(
            Method::GET,
            "/v1/seats/00000000-0000-0000-0000-000000000000",
            Some(&t.admin),
        )
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-request-id").is_some());
    let resp = app
        .req(Method::GET, "/v1/seats", Some(&t.admin))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-123");
    let metrics = app
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/v1/seats",status="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/v1/seats/{id}",status="404""#),
        "{metrics}"
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket"));

    // The audit entry of a change carries the request id it came with.
    let resp = app
        .req(Method::POST, "/v1/skills", Some(&t.admin))
        .header("x-request-id", "req-audit-1")
        .json(&json!({"name": "german"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (_, audit) = app.get("/v1/audit?limit=200", &t.admin).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["request_id"] == "req-audit-1" && a["entity"] == "skill"),
        "{audit}"
    );
}

#[tokio::test]
async fn cursor_pagination_walks_every_item_once() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    for i in 0..7 {
        let (s, _) = app
            .post(
                "/v1/skills",
                &t.admin,
                json!({"name": format!("skill-{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/skills?limit=3&cursor={c}"),
            None => "/v1/skills?limit=3".into(),
        };
        let (s, page) = app.get(&path, &t.supervisor).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        (0..7).map(|i| format!("skill-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn only_operators_manage_tenants_and_admins_manage_their_tenant() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 2).await;
    let body = json!({"slug": "evil", "name": "x", "seat_limit": 5,
        "admin": {"email": "a@evil.example.com", "display_name": "a", "password": PASSWORD}});
    for token in [&t.admin, &t.supervisor, &t.agent] {
        let (s, v) = app.post("/v1/tenants", token, body.clone()).await;
        assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
        let (s, _) = app.get("/v1/tenants", token).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // Agents cannot administer; supervisors can read but not write.
    for (path, body) in [
        ("/v1/seats", json!({"label": "x"})),
        (
            "/v1/users",
            json!({"email": "z@acme.example.com", "display_name": "z", "password": PASSWORD}),
        ),
        ("/v1/queues", json!({"name": "q"})),
        ("/v1/skills", json!({"name": "s"})),
        (
            "/v1/numbers",
            json!({"number": "+14155550100", "kind": "did", "label": "x"}),
        ),
        ("/v1/api-keys", json!({"name": "k"})),
    ] {
        for token in [&t.agent, &t.supervisor] {
            let (s, v) = app.post(path, token, body.clone()).await;
            assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
        }
    }
    let (s, _) = app.get("/v1/seats", &t.agent).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/v1/seats", &t.supervisor).await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/me", &t.agent).await.0, StatusCode::OK);

    // The operator raises the seat limit; the admin can then provision more.
    let op = app.operator_token().await;
    for _ in 0..2 {
        assert_eq!(
            app.post("/v1/seats", &t.admin, json!({"label": "d"}))
                .await
                .0,
            StatusCode::CREATED
        );
    }
    assert_eq!(
        app.post("/v1/seats", &t.admin, json!({"label": "d"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let (s, _) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/tenants/{}", t.id),
            Some(&op),
            Some(json!({"seat_limit": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.post("/v1/seats", &t.admin, json!({"label": "d"}))
            .await
            .0,
        StatusCode::CREATED
    );
    let (s, v) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/tenants/{}", t.id),
            Some(&op),
            Some(json!({"seat_limit": -1})),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .post(
            "/v1/tenants",
            &op,
            json!({"slug": "acme", "name": "dup", "seat_limit": 1,
        "admin": {"email": "a@dup.example.com", "display_name": "a", "password": PASSWORD}}),
        )
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = app.get("/v1/tenants", &op).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        2,
        "platform + acme: {v}"
    );
}
