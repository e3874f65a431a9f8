//! Seat provisioning: the limit holds under concurrency, Idempotency-Key makes retries safe,
//! and every change lands in the seat's history.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn seat_limit_holds_under_20_concurrent_requests() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let tasks = (0..20).map(|i| {
        let app = &app;
        let token = t.admin.clone();
        async move {
            app.post("/v1/seats", &token, json!({"label": format!("Desk {i}")}))
                .await
        }
    });
    let results = futures::future::join_all(tasks).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s != StatusCode::CREATED)
        .collect();
    assert_eq!(created, 5, "{results:?}");
    for (s, body) in &refused {
        assert_problem(*s, body, StatusCode::CONFLICT, "seat-limit");
    }
    let (_, page) = app.get("/v1/seats?limit=200", &t.admin).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);

    // Releasing one frees a place; suspended ones still count.
    let first = page["items"][0]["id"].as_str().unwrap().to_owned();
    let second = page["items"][1]["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/seats/{second}"),
            Some(&t.admin),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post("/v1/seats", &t.admin, json!({"label": "Extra"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/seats/{first}"),
            Some(&t.admin),
            Some(json!({"status": "released"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .post("/v1/seats", &t.admin, json!({"label": "Extra"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // A released seat is final.
    let (s, v) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/seats/{first}"),
            Some(&t.admin),
            Some(json!({"status": "provisioned"})),
        )
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn seat_history_records_every_change() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let (_, seat) = app
        .post("/v1/seats", &t.admin, json!({"label": "Desk"}))
        .await;
    let id = seat["id"].as_str().unwrap();
    for body in [
        json!({"user_id": t.agent_id}),
        json!({"status": "suspended"}),
        json!({"status": "provisioned"}),
        json!({"user_id": null}),
        json!({"status": "released"}),
    ] {
        let (s, v) = app
            .send_json(
                Method::PATCH,
                &format!("/v1/seats/{id}"),
                Some(&t.admin),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, history) = app
        .get(&format!("/v1/seats/{id}/history"), &t.supervisor)
        .await;
    assert_eq!(s, StatusCode::OK);
    let steps: Vec<(Option<&str>, &str, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from_status"].as_str(),
                e["to_status"].as_str().unwrap(),
                e["user_id"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (None, "provisioned", false),
            (Some("provisioned"), "provisioned", true),
            (Some("provisioned"), "suspended", true),
            (Some("suspended"), "provisioned", true),
            (Some("provisioned"), "provisioned", false),
            (Some("provisioned"), "released", false),
        ]
    );
    // Audit log has the same story with before/after.
    let (_, audit) = app.get("/v1/audit?limit=200", &t.admin).await;
    let seat_updates = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["entity"] == "seat" && a["action"] == "update")
        .count();
    assert_eq!(seat_updates, 5);
}

#[tokio::test]
async fn a_user_holds_at_most_one_seat_and_only_of_its_tenant() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let other = app.tenant("other", 5).await;
    let (s, _) = app
        .post(
            "/v1/seats",
            &t.admin,
            json!({"label": "A", "user_id": t.agent_id}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = app
        .post(
            "/v1/seats",
            &t.admin,
            json!({"label": "B", "user_id": t.agent_id}),
        )
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = app
        .post(
            "/v1/seats",
            &t.admin,
            json!({"label": "C", "user_id": other.agent_id}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
}

#[tokio::test]
async fn idempotency_key_makes_retries_safe() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let send = |key: &'static str, label: &'static str| {
        let app = &app;
        let token = t.admin.clone();
        async move {
            let resp = app
                .req(Method::POST, "/v1/seats", Some(&token))
                .header("idempotency-key", key)
                .json(&json!({"label": label}))
                .send()
                .await
                .unwrap();
            split(resp).await
        }
    };
    let (s1, a) = send("retry-1", "Desk").await;
    let (s2, b) = send("retry-1", "Desk").await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a, b, "the retry returns the first response");
    let (_, page) = app.get("/v1/seats", &t.admin).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (s, v) = send("retry-1", "Other desk").await;
    assert_problem(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );
    // Concurrent retries of one key make one seat.
    let results = futures::future::join_all((0..8).map(|_| send("retry-2", "Burst"))).await;
    let ok: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .collect();
    assert!(!ok.is_empty(), "{results:?}");
    assert!(ok.windows(2).all(|w| w[0].1 == w[1].1), "{results:?}");
    for (s, v) in &results {
        assert!(
            *s == StatusCode::CREATED || *s == StatusCode::CONFLICT,
            "{s} {v}"
        );
    }
    let (_, page) = app.get("/v1/seats", &t.admin).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    // Numbers too.
    for _ in 0..2 {
        let resp = app
            .req(Method::POST, "/v1/numbers", Some(&t.admin))
            .header("idempotency-key", "n-1")
            .json(&json!({"number": "+442071234567", "kind": "did", "label": "London"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let (_, page) = app.get("/v1/numbers", &t.admin).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}
