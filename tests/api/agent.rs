//! Agent sessions and state over the state engine, queue statistics and the event log.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn agent_session_state_stats_and_events_in_memory() {
    agent_session_state_stats_and_events(spawn_app().await).await;
}

#[tokio::test]
async fn agent_session_state_stats_and_events_on_redis() {
    agent_session_state_stats_and_events(spawn_app_on_redis().await).await;
}

async fn agent_session_state_stats_and_events(app: TestApp) {
    let t = app.tenant("acme", 5).await;
    let (_, queue) = app
        .post(
            "/v1/queues",
            &t.admin,
            json!({"name": "Support", "wrap_up_s": 10}),
        )
        .await;
    let (_, skill) = app
        .post("/v1/skills", &t.admin, json!({"name": "spanish"}))
        .await;
    let (s, _) = app
        .send_json(Method::PUT, &format!("/v1/users/{}/profile", t.agent_id), Some(&t.admin),
            Some(json!({"skills": [{"skill_id": skill["id"], "level": 8}], "queues": [{"queue_id": queue["id"], "tier": 1}]})))
        .await;
    assert_eq!(s, StatusCode::OK);

    // No seat yet: no session.
    let (s, v) = app.post("/v1/agent/session", &t.agent, json!({})).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, _) = app
        .post(
            "/v1/seats",
            &t.admin,
            json!({"label": "Desk", "user_id": t.agent_id}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, session) = app
        .post(
            "/v1/agent/session",
            &t.agent,
            json!({"connection": "tab-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{session}");
    assert_eq!(session["state"]["status"], "not_ready");
    assert_eq!(session["connection"], "tab-1");

    let (s, v) = app
        .send_json(
            Method::PUT,
            "/v1/agent/state",
            Some(&t.agent),
            Some(json!({"state": "ready"})),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );
    // Ready -> ready is not a transition.
    let (s, v) = app
        .send_json(
            Method::PUT,
            "/v1/agent/state",
            Some(&t.agent),
            Some(json!({"state": "ready"})),
        )
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = app
        .send_json(
            Method::PUT,
            "/v1/agent/state",
            Some(&t.agent),
            Some(json!({"state": "not_ready", "reason": "training"})),
        )
        .await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::OK, Some("training")),
        "{v}"
    );
    let (s, v) = app
        .send_json(
            Method::PUT,
            "/v1/agent/state",
            Some(&t.agent),
            Some(json!({"state": "not_ready", "reason": "bad reason {x}"})),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, _) = app
        .post(
            "/v1/agent/heartbeat",
            &t.agent,
            json!({"connection": "tab-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // The supervisor sees the agent, the queue and the events; the agent may not.
    let (s, v) = app
        .get(&format!("/v1/agents/{}/state", t.agent_id), &t.supervisor)
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("not_ready"))
    );
    let (s, stats) = app
        .get(
            &format!("/v1/queues/{}/stats", queue["id"].as_str().unwrap()),
            &t.supervisor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{stats}");
    assert_eq!(stats["waiting"], 0);
    assert_eq!(stats["agents"]["not_ready"], 1, "{stats}");
    assert_eq!(
        app.get("/v1/events", &t.agent).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, page) = app.get("/v1/events?limit=100", &t.supervisor).await;
    assert_eq!(s, StatusCode::OK);
    let transitions: Vec<(String, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "agent_state")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            ("logged_out".into(), "not_ready".into()),
            ("not_ready".into(), "ready".into()),
            ("ready".into(), "not_ready".into()),
        ]
    );
    // Resume after the last id: nothing new yet, then the logout.
    let last = page["last_id"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(&format!("/v1/events?after={last}"), &t.supervisor)
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0, "{page}");
    let (s, _) = app
        .send_json(Method::DELETE, "/v1/agent/session", Some(&t.agent), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, page) = app
        .get(&format!("/v1/events?after={last}"), &t.supervisor)
        .await;
    assert_eq!(page["events"][0]["to"], "logged_out", "{page}");

    // Another tenant sees none of it.
    let other = app.tenant("other", 5).await;
    let (_, page) = app.get("/v1/events", &other.admin).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0, "{page}");
}
