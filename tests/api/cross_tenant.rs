//! For EVERY endpoint in the OpenAPI document that takes an id: another tenant's token (and API
//! key) gets 404 and no data; each weaker role of the owning tenant gets 403; and afterwards the
//! owner's data is unchanged. The endpoint list comes from the served document, so a new
//! endpoint is covered the day it is added (or this test fails for want of a fixture).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

const TENANT_ROLES: [&str; 3] = ["agent", "supervisor", "tenant_admin"];

fn rank(role: &str) -> usize {
    TENANT_ROLES
        .iter()
        .position(|r| *r == role)
        .unwrap_or_else(|| panic!("unknown x-min-role {role}"))
}

/// A body that passes validation for each method+path, so that only the tenant check can fail.
fn valid_body(method: &Method, template: &str) -> Option<Value> {
    match (method.as_str(), template) {
        ("PATCH", "/v1/users/{id}") => Some(json!({"display_name": "Mallory"})),
        ("PUT", "/v1/users/{id}/profile") => Some(json!({"skills": [], "queues": []})),
        ("PATCH", "/v1/seats/{id}") => Some(json!({"label": "Stolen"})),
        ("PATCH", "/v1/numbers/{id}") => Some(json!({"label": "Stolen"})),
        ("PATCH", "/v1/queues/{id}") => Some(json!({"max_wait_s": 5})),
        ("PATCH", "/v1/tenants/{id}") => Some(json!({"seat_limit": 0})),
        ("PATCH", "/v1/disposition-codes/{id}") => Some(json!({"label": "Stolen"})),
        ("PATCH", "/v1/contacts/{id}") => Some(json!({"name": "Stolen"})),
        ("PUT", "/v1/users/{id}/sip-credential") => {
            Some(json!({"username": "mallory", "password": "stolen-phone-1"}))
        }
        ("PUT", "/v1/tenants/{id}/recording-settings") => Some(json!({"retention_days": 1})),
        ("PUT", "/v1/queues/{id}/recording-rule") => Some(json!({"rule": {"mode": "never"}})),
        ("PUT", "/v1/tenants/{id}/outbound") => Some(json!({
            "dial_policy": {"home_country": "1", "allow_premium": true},
            "max_concurrent_calls": 5, "max_calls_per_seat": 1})),
        ("GET" | "DELETE", _) => None,
        ("POST", t) if t.ends_with("/transfer") => Some(json!({"target": "+14155550123"})),
        ("POST", t) if t.ends_with("/revoke-tokens") => None,
        ("POST", t) if t.ends_with("/recording/pause") || t.ends_with("/recording/resume") => None,
        (m, t) => panic!("no valid body for {m} {t}: add one to this test"),
    }
}

#[tokio::test]
async fn every_id_endpoint_is_tenant_scoped_and_role_checked() {
    let app = spawn_app().await;
    let a = app.tenant("alpha", 10).await;
    let b = app.tenant("bravo", 10).await;

    // Tenant A's resources.
    let (_, skill) = app
        .post("/v1/skills", &a.admin, json!({"name": "alpha-skill"}))
        .await;
    let (_, queue) = app
        .post("/v1/queues", &a.admin, json!({"name": "alpha-queue"}))
        .await;
    let (_, number) = app
        .post(
            "/v1/numbers",
            &a.admin,
            json!({"number": "+14155550111", "kind": "did", "label": "alpha-line", "queue_id": queue["id"]}),
        )
        .await;
    let (_, seat) = app
        .post(
            "/v1/seats",
            &a.admin,
            json!({"label": "alpha-seat", "user_id": a.agent_id}),
        )
        .await;
    let (_, key) = app
        .post(
            "/v1/api-keys",
            &a.admin,
            json!({"name": "alpha-key", "role": "tenant_admin"}),
        )
        .await;
    let (_, b_key) = app
        .post(
            "/v1/api-keys",
            &b.admin,
            json!({"name": "bravo-key", "role": "tenant_admin"}),
        )
        .await;
    let b_key = b_key["secret"].as_str().unwrap().to_owned();
    let (_, code) = app
        .post(
            "/v1/disposition-codes",
            &a.admin,
            json!({"code": "alpha-code", "label": "alpha-label"}),
        )
        .await;
    let (_, contact) = app
        .post(
            "/v1/contacts",
            &a.supervisor,
            json!({"name": "alpha-contact", "numbers": ["+14155550998"]}),
        )
        .await;
    let op = app.operator_token().await;
    let call = app.call_record(a.id, "alpha-call", "+14155550999").await;
    // A recorded call of A's (the gateway writes these rows).
    let rec_call = Uuid::new_v4().to_string();
    {
        let tx = app
            .db
            .tenant_txn(
                switchboard_domain::TenantId(a.id),
                switchboard_db::Access::Write,
            )
            .await
            .unwrap();
        tx.record_recording(&switchboard_db::calls::RecordingRecord {
            call_id: rec_call.clone(),
            object_key: format!("{}/{rec_call}.wav", a.id),
            duration_ms: 1_000,
            size_bytes: 16_044,
            sha256: "ab".repeat(32),
            upload_state: "stored".into(),
            pauses: None,
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    let fixture = |template: &str| -> String {
        let id = match template.split('/').nth(2).unwrap() {
            "users" | "agents" => a.agent_id.to_string(),
            "seats" => seat["id"].as_str().unwrap().to_owned(),
            "numbers" => number["id"].as_str().unwrap().to_owned(),
            "skills" => skill["id"].as_str().unwrap().to_owned(),
            "queues" => queue["id"].as_str().unwrap().to_owned(),
            "api-keys" => key["id"].as_str().unwrap().to_owned(),
            "tenants" => a.id.to_string(),
            "calls" => call.to_string(),
            "recordings" => rec_call.clone(),
            "disposition-codes" => code["id"].as_str().unwrap().to_owned(),
            "contacts" => contact["id"].as_str().unwrap().to_owned(),
            other => panic!("no fixture for /v1/{other}: add one to this test"),
        };
        template.replace("{id}", &id)
    };
    let secrets_of_a = [
        "alpha-skill",
        "alpha-queue",
        "alpha-line",
        "alpha-seat",
        "alpha-key",
        "agent@alpha",
        "alpha-call",
        "+14155550999",
        "alpha-code",
        "alpha-label",
        "alpha-contact",
        "+14155550998",
    ];

    let (_, doc) = app
        .send_json(Method::GET, "/v1/openapi.json", None, None)
        .await;
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        if !template.contains("{id}") {
            continue;
        }
        for (method, op_doc) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let min_role = op_doc["x-min-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {template} has no x-min-role"));
            let path = fixture(template);
            let body = valid_body(&method, template);
            let call = |token: String| {
                let (method, path, body) = (method.clone(), path.clone(), body.clone());
                let app = &app;
                async move { app.send_json(method, &path, Some(&token), body).await }
            };

            // Another tenant: its admin token and its admin API key.
            for token in [b.admin.clone(), b_key.clone()] {
                let (status, resp) = call(token).await;
                let want = if min_role == "platform_operator" {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::NOT_FOUND
                };
                assert_eq!(status, want, "{method} {template} from tenant B: {resp}");
                let text = resp.to_string();
                for s in secrets_of_a.iter().map(|s| s.to_string()).chain([path
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()])
                {
                    assert!(!text.contains(&s), "{method} {template} leaked {s}: {text}");
                }
            }

            // Weaker roles of tenant A, and the operator on tenant routes (or vice versa).
            let weaker: Vec<(&str, String)> = if min_role == "platform_operator" {
                vec![
                    ("tenant_admin", a.admin.clone()),
                    ("supervisor", a.supervisor.clone()),
                    ("agent", a.agent.clone()),
                ]
            } else {
                let mut v: Vec<(&str, String)> = [
                    ("agent", a.agent.clone()),
                    ("supervisor", a.supervisor.clone()),
                ]
                .into_iter()
                .filter(|(r, _)| rank(r) < rank(min_role))
                .collect();
                v.push(("platform_operator", op.clone()));
                v
            };
            for (role, token) in weaker {
                let (status, resp) = call(token).await;
                assert_problem(status, &resp, StatusCode::FORBIDDEN, "forbidden");
                assert!(
                    !resp.to_string().contains("alpha-"),
                    "{method} {template} as {role} leaked: {resp}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} id endpoints found");

    // Nothing of A changed.
    let (s, v) = app.get(&fixture("/v1/seats/{id}"), &a.admin).await;
    assert_eq!(
        (s, v["label"].as_str()),
        (StatusCode::OK, Some("alpha-seat"))
    );
    let (s, v) = app.get(&fixture("/v1/numbers/{id}"), &a.admin).await;
    assert_eq!(
        (s, v["label"].as_str()),
        (StatusCode::OK, Some("alpha-line"))
    );
    let (s, v) = app.get(&fixture("/v1/queues/{id}"), &a.admin).await;
    assert_eq!((s, v["max_wait_s"].as_i64()), (StatusCode::OK, Some(600)));
    let (s, v) = app.get(&fixture("/v1/users/{id}"), &a.admin).await;
    assert_eq!(
        (s, v["display_name"].as_str()),
        (StatusCode::OK, Some("agent"))
    );
    let (s, _) = app.get(&fixture("/v1/skills/{id}"), &a.admin).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .get(&fixture("/v1/recordings/{id}"), &a.supervisor)
        .await;
    assert_eq!(
        (s, v["size_bytes"].as_i64()),
        (StatusCode::OK, Some(16_044))
    );
    let (s, v) = app
        .get(&fixture("/v1/disposition-codes/{id}"), &a.agent)
        .await;
    assert_eq!(
        (s, v["label"].as_str()),
        (StatusCode::OK, Some("alpha-label"))
    );
    let (s, v) = app.get(&fixture("/v1/contacts/{id}"), &a.supervisor).await;
    assert_eq!(
        (s, v["name"].as_str()),
        (StatusCode::OK, Some("alpha-contact"))
    );
    let (s, v) = app.get("/v1/api-keys", &a.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["items"][0]["revoked_at"].is_null(), "{v}");
    let (s, v) = app.get(&format!("/v1/tenants/{}", a.id), &op).await;
    assert_eq!((s, v["seat_limit"].as_i64()), (StatusCode::OK, Some(10)));
    // A's agent token still works: no revoke-tokens got through.
    let (s, _) = app.get("/v1/me", &a.agent).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn lists_show_only_the_callers_tenant() {
    let app = spawn_app().await;
    let a = app.tenant("alpha", 5).await;
    let b = app.tenant("bravo", 5).await;
    app.post("/v1/skills", &a.admin, json!({"name": "alpha-skill"}))
        .await;
    app.post("/v1/queues", &a.admin, json!({"name": "alpha-queue"}))
        .await;
    app.post("/v1/seats", &a.admin, json!({"label": "alpha-seat"}))
        .await;
    app.post(
        "/v1/numbers",
        &a.admin,
        json!({"number": "+14155550112", "kind": "did", "label": "alpha-line"}),
    )
    .await;
    app.post(
        "/v1/contacts",
        &a.supervisor,
        json!({"name": "alpha-contact", "numbers": ["+14155550998"]}),
    )
    .await;
    app.post(
        "/v1/disposition-codes",
        &a.admin,
        json!({"code": "alpha-code", "label": "alpha-label"}),
    )
    .await;
    for list in [
        "/v1/contacts",
        "/v1/disposition-codes",
        "/v1/users",
        "/v1/seats",
        "/v1/numbers",
        "/v1/skills",
        "/v1/queues",
        "/v1/api-keys",
        "/v1/audit",
    ] {
        let (s, v) = app.get(list, &b.admin).await;
        assert_eq!(s, StatusCode::OK, "{list}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains("alpha"),
            "{list} shows tenant A data: {text}"
        );
    }
    // A number is unique platform-wide, but B learns only that it is taken.
    let (s, v) = app
        .post(
            "/v1/numbers",
            &b.admin,
            json!({"number": "+14155550112", "kind": "did", "label": "x"}),
        )
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    assert!(!v.to_string().contains("alpha"));
}
