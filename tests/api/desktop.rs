//! The agent desktop's api: the SSE event feed (tickets, scope, resume, limits), disposition
//! codes and wrap-up, contacts, and the screen pop. Calls are driven through the state engine
//! directly (as the gateway would), so each case runs in milliseconds; the browser test with a
//! real call is `desktop_browser`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard_state::{AgentId, CallEntry, CallId, Command, NodeId, QueueId, TenantId};

use crate::desktop_browser::open_stream;
use crate::helpers::*;

const CALLER: &str = "+14155550199";

/// One SSE message: (id, event, data).
type Sse = (Option<String>, String, Value);

/// Reads an SSE response for `dur` (or until it ends) and parses its messages.
async fn read_for(mut resp: reqwest::Response, dur: Duration) -> Vec<Sse> {
    let mut text = String::new();
    let _ = tokio::time::timeout(dur, async {
        while let Ok(Some(c)) = resp.chunk().await {
            text.push_str(&String::from_utf8_lossy(&c));
        }
    })
    .await;
    parse_sse(&text)
}

fn parse_sse(text: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        if !data.is_empty() {
            out.push((
                id,
                event,
                serde_json::from_str(&data).unwrap_or(Value::Null),
            ));
        }
    }
    out
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap()
}

/// A queue with a 60 s wrap-up; the tenant's agent has a seat and is a member.
async fn equip(app: &TestApp, t: &TestTenant) -> String {
    let (s, queue) = app
        .post(
            "/v1/queues",
            &t.admin,
            json!({"name": "Support", "wrap_up_s": 60}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{queue}");
    let (s, v) = app
        .put(
            &format!("/v1/users/{}/profile", t.agent_id),
            &t.admin,
            json!({"skills": [], "queues": [{"queue_id": queue["id"], "tier": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .post(
            "/v1/seats",
            &t.admin,
            json!({"label": "desk", "user_id": t.agent_id}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    queue["id"].as_str().unwrap().to_owned()
}

async fn ready(app: &TestApp, token: &str) {
    let (s, v) = app.post("/v1/agent/session", token, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .put("/v1/agent/state", token, json!({"state": "ready"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A call from `CALLER` enters `queue` (the gateway's part, done on the engine).
async fn ring(app: &TestApp, t: &TestTenant, call: &str, queue: &str) {
    let mut entry = CallEntry::new(
        CallId::parse(call).unwrap(),
        QueueId::parse(queue).unwrap(),
        NodeId::parse("gw-test").unwrap(),
    );
    entry.caller = Some(CALLER.into());
    app.engine
        .enqueue(&TenantId::parse(t.id.to_string()).unwrap(), now_ms(), entry)
        .await
        .unwrap();
}

async fn engine_cmd(app: &TestApp, t: &TestTenant, cmd: Command) {
    app.engine
        .run(&TenantId::parse(t.id.to_string()).unwrap(), now_ms(), cmd)
        .await
        .unwrap();
}

#[tokio::test]
async fn screen_pop_wrap_up_and_the_agents_scoped_feed() {
    let app = spawn_app().await;
    let a = app.tenant("alpha", 5).await;
    let b = app.tenant("bravo", 5).await;
    let queue = equip(&app, &a).await;
    for code in ["sale", "no-sale"] {
        let (s, v) = app
            .post(
                "/v1/disposition-codes",
                &a.admin,
                json!({"code": code, "label": code}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, contact) = app
        .post(
            "/v1/contacts",
            &a.supervisor,
            json!({"name": "Ada Lovelace", "company": "Engines", "numbers": ["+1 (415) 555-0199"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{contact}");
    assert_eq!(contact["numbers"], json!([CALLER]));
    app.call_record(a.id, "earlier", CALLER).await;

    ready(&app, &a.agent).await;
    let agent_feed = open_stream(&app, &a.agent, None).await;
    let sup_feed = open_stream(&app, &a.supervisor, None).await;
    let b_feed = open_stream(&app, &b.supervisor, None).await;
    let agent_feed = tokio::spawn(read_for(agent_feed, Duration::from_millis(1500)));
    let sup_feed = tokio::spawn(read_for(sup_feed, Duration::from_millis(1500)));
    let b_feed = tokio::spawn(read_for(b_feed, Duration::from_millis(1500)));
    tokio::time::sleep(Duration::from_millis(100)).await;

    ring(&app, &a, "call-1", &queue).await;
    // Ringing: the pop has the caller, the contact, the queue, the wait, the earlier call.
    let (s, pop) = app
        .get("/v1/agent/screen-pop?call_id=call-1", &a.agent)
        .await;
    assert_eq!(s, StatusCode::OK, "{pop}");
    assert_eq!(pop["caller"], CALLER);
    assert_eq!(pop["status"], "reserved");
    assert_eq!(pop["contact"]["name"], "Ada Lovelace");
    assert_eq!(pop["queue"]["name"], "Support");
    assert_eq!(pop["queue"]["id"], queue.as_str());
    assert!(pop["wait_ms"].as_u64().is_some(), "{pop}");
    assert_eq!(pop["ivr_choices"], json!([]));
    assert_eq!(pop["recent_calls"].as_array().unwrap().len(), 1, "{pop}");
    assert_eq!(pop["recent_calls"][0]["call_id"], "earlier");
    // Not for another tenant, nor for nonsense.
    let (s, v) = app
        .get("/v1/agent/screen-pop?call_id=call-1", &b.agent)
        .await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");
    let (s, v) = app
        .get("/v1/agent/screen-pop?call_id=call-1", &b.supervisor)
        .await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");
    let (s, v) = app
        .get("/v1/agent/screen-pop?call_id=no%20such", &a.agent)
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .get("/v1/agent/screen-pop?call_id=call-404", &a.agent)
        .await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");

    let agent = AgentId::parse(a.agent_id.to_string()).unwrap();
    let call = CallId::parse("call-1").unwrap();
    engine_cmd(
        &app,
        &a,
        Command::Answer {
            call: call.clone(),
            agent: agent.clone(),
        },
    )
    .await;
    engine_cmd(&app, &a, Command::Hangup { call }).await;
    let (_, st) = app.get("/v1/agent/state", &a.agent).await;
    assert_eq!(st["status"], "wrap_up", "{st}");

    // Wrap-up: bad input first.
    for (body, slug) in [
        (
            json!({"call_id": "call-1", "disposition": "unknown-code"}),
            "validation",
        ),
        (
            json!({"call_id": "call-1", "disposition": "sale", "notes": "x".repeat(4001)}),
            "validation",
        ),
        (
            json!({"call_id": "call 1", "disposition": "sale"}),
            "validation",
        ),
    ] {
        let (s, v) = app.post("/v1/agent/wrap-up", &a.agent, body).await;
        assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, slug);
    }
    let (s, v) = app
        .post(
            "/v1/agent/wrap-up",
            &b.agent,
            json!({"call_id": "call-1", "disposition": "sale"}),
        )
        .await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");
    let body = json!({"call_id": "call-1", "disposition": "sale", "notes": "two headsets"});
    let (s, done) = app.post("/v1/agent/wrap-up", &a.agent, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["disposition"], "sale");
    assert_eq!(done["state"]["status"], "ready", "wrap-up ended: {done}");
    // Again: same result, the agent stays ready (idempotent).
    let (s, again) = app.post("/v1/agent/wrap-up", &a.agent, body).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["state"]["status"], "ready");
    assert_eq!(again["notes"], "two headsets");

    // The gateway writes the CDR; it shows the disposition; the pop now comes from the CDR.
    let cdr = app
        .call_record_by(a.id, "call-1", CALLER, Some(a.agent_id))
        .await;
    let (s, detail) = app.get(&format!("/v1/calls/{cdr}"), &a.supervisor).await;
    assert_eq!(s, StatusCode::OK, "{detail}");
    assert_eq!(detail["disposition"]["disposition"], "sale");
    assert_eq!(detail["disposition"]["notes"], "two headsets");
    let (s, pop) = app
        .get("/v1/agent/screen-pop?call_id=call-1", &a.agent)
        .await;
    assert_eq!(s, StatusCode::OK, "{pop}");
    assert_eq!(pop["status"], "ended");
    assert_eq!(pop["contact"]["name"], "Ada Lovelace");
    let (s, other) = app
        .get("/v1/agent/screen-pop?call_id=earlier", &a.agent)
        .await;
    assert_problem(s, &other, StatusCode::NOT_FOUND, "not-found");

    // The agent's feed: its own state changes and its call's progress, no queue configuration.
    let agent_msgs = agent_feed.await.unwrap();
    let kinds: Vec<&str> = agent_msgs.iter().map(|(_, e, _)| e.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"hello"), "{kinds:?}");
    for want in ["call_offered", "call_answered", "call_ended", "agent_state"] {
        assert!(kinds.contains(&want), "agent feed lacks {want}: {kinds:?}");
    }
    assert!(!kinds.contains(&"queue_configured"), "{kinds:?}");
    for (id, event, data) in &agent_msgs[1..] {
        assert!(id.is_some(), "{event} without an id");
        if event == "agent_state" {
            assert_eq!(data["agent"], a.agent_id.to_string());
        }
    }
    let sup_msgs = sup_feed.await.unwrap();
    assert!(
        sup_msgs.iter().any(|(_, e, _)| e == "call_queued"),
        "{sup_msgs:?}"
    );
    let b_msgs = b_feed.await.unwrap();
    assert_eq!(b_msgs.len(), 1, "tenant B saw A's events: {b_msgs:?}");
    assert_eq!(b_msgs[0].1, "hello");
}

#[tokio::test]
async fn event_stream_tickets_resume_and_limits() {
    let app = spawn_app().await;
    let a = app.tenant("alpha", 5).await;
    let _queue = equip(&app, &a).await;
    ready(&app, &a.agent).await;

    // A ticket opens the stream without a header; it is good for nothing else.
    let (s, t) = app.post("/v1/events/ticket", &a.agent, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let ticket = t["ticket"].as_str().unwrap().to_owned();
    let resp = app
        .req(
            Method::GET,
            &format!("/v1/events/stream?ticket={ticket}"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let msgs = read_for(resp, Duration::from_millis(300)).await;
    assert_eq!(msgs[0].1, "hello");
    assert_eq!(msgs[0].2["scope"], "agent");
    assert_eq!(msgs[0].2["state"]["status"], "ready");
    let (s, v) = app.get("/v1/me", &ticket).await;
    assert_problem(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    for path in [
        format!("/v1/events/stream?ticket={}", a.agent),
        "/v1/events/stream".to_owned(),
        "/v1/events/stream?ticket=garbage".to_owned(),
    ] {
        let (s, v) = app.send_json(Method::GET, &path, None, None).await;
        assert_problem(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let op = app.operator_token().await;
    let (s, v) = app.get("/v1/events/stream", &op).await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = app
        .send_json(
            Method::GET,
            "/v1/events/stream?after=%20",
            Some(&a.supervisor),
            None,
        )
        .await;
    assert_problem(s, &v, StatusCode::BAD_REQUEST, "bad-request");

    // Resume: after the first of three changes, the stream replays the other two.
    let first = open_stream(&app, &a.supervisor, None).await;
    let reader = tokio::spawn(read_for(first, Duration::from_millis(800)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for reason in ["break", "lunch", "training"] {
        let (s, v) = app
            .put(
                "/v1/agent/state",
                &a.agent,
                json!({"state": "not_ready", "reason": reason}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let seen: Vec<Sse> = reader
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e, _)| e == "agent_state")
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let first_id = seen[0].0.clone().unwrap();
    let resumed = open_stream(&app, &a.supervisor, Some(&first_id)).await;
    let replay: Vec<Sse> = read_for(resumed, Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|(_, e, _)| e == "agent_state")
        .collect();
    let reasons: Vec<&Value> = replay.iter().map(|(_, _, d)| &d["reason"]).collect();
    assert_eq!(reasons, vec![&json!("lunch"), &json!("training")]);
    // `?after=` does the same for clients that cannot set the header.
    let resp = app
        .req(
            Method::GET,
            &format!("/v1/events/stream?after={first_id}"),
            Some(&a.supervisor),
        )
        .send()
        .await
        .unwrap();
    let replay = read_for(resp, Duration::from_millis(300)).await;
    assert_eq!(
        replay.iter().filter(|(_, e, _)| e == "agent_state").count(),
        2
    );

    // Four streams per user; the fifth is refused until one closes.
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(open_stream(&app, &a.agent, None).await);
    }
    let (s, v) = app.get("/v1/events/stream", &a.agent).await;
    assert_problem(s, &v, StatusCode::TOO_MANY_REQUESTS, "too-many-requests");
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        let resp = app
            .req(Method::GET, "/v1/events/stream", Some(&a.agent))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            again = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a closed stream gives its place back");
}

#[tokio::test]
async fn disposition_codes_and_contacts_are_managed_by_their_roles() {
    let app = spawn_app().await;
    let a = app.tenant("alpha", 5).await;

    let (s, code) = app
        .post(
            "/v1/disposition-codes",
            &a.admin,
            json!({"code": "sale", "label": "Sale"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{code}");
    let id = code["id"].as_str().unwrap().to_owned();
    let (s, v) = app
        .post(
            "/v1/disposition-codes",
            &a.admin,
            json!({"code": "sale", "label": "Again"}),
        )
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    for bad in ["Sale", "", "has space", &"x".repeat(65)] {
        let (s, v) = app
            .post(
                "/v1/disposition-codes",
                &a.admin,
                json!({"code": bad, "label": "x"}),
            )
            .await;
        assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    }
    for token in [&a.agent, &a.supervisor] {
        let (s, v) = app
            .post(
                "/v1/disposition-codes",
                token,
                json!({"code": "x", "label": "x"}),
            )
            .await;
        assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
    }
    let (s, list) = app.get("/v1/disposition-codes", &a.agent).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"][0]["code"], "sale");
    let (s, v) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/disposition-codes/{id}"),
            Some(&a.admin),
            Some(json!({"active": false, "label": "Sold"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["active"].as_bool(), v["label"].as_str()),
        (Some(false), Some("Sold"))
    );
    // An inactive code is refused at wrap-up (for a call the agent took).
    app.call_record_by(a.id, "c-1", CALLER, Some(a.agent_id))
        .await;
    let (s, v) = app
        .post(
            "/v1/agent/wrap-up",
            &a.agent,
            json!({"call_id": "c-1", "disposition": "sale"}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, _) = app
        .send_json(
            Method::DELETE,
            &format!("/v1/disposition-codes/{id}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Contacts: supervisors manage them, lookup by number, one contact per number.
    let (s, c1) = app
        .post(
            "/v1/contacts",
            &a.supervisor,
            json!({"name": "Ada", "numbers": [CALLER, "+442071234567"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c1}");
    let (s, v) = app
        .post(
            "/v1/contacts",
            &a.supervisor,
            json!({"name": "Eve", "numbers": [CALLER]}),
        )
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, v) = app
        .post("/v1/contacts", &a.agent, json!({"name": "Eve"}))
        .await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
    for bad in [
        json!({"name": "Eve", "numbers": ["0123"]}),
        json!({"name": ""}),
        json!({"name": "Eve", "notes": "x".repeat(4001)}),
        json!({"name": "Eve", "numbers": (0..11).map(|i| format!("+1415555{i:04}")).collect::<Vec<_>>()}),
    ] {
        let (s, v) = app.post("/v1/contacts", &a.supervisor, bad).await;
        assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    }
    let (s, found) = app
        .get("/v1/contacts?number=%2B442071234567", &a.supervisor)
        .await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found["items"][0]["name"], "Ada");
    let cid = c1["id"].as_str().unwrap();
    let (s, v) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/contacts/{cid}"),
            Some(&a.supervisor),
            Some(json!({"company": "Engines", "numbers": ["+442071234567"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["numbers"], json!(["+442071234567"]));
    let (_, found) = app
        .get(
            &format!("/v1/contacts?number={}", "%2B14155550199"),
            &a.supervisor,
        )
        .await;
    assert_eq!(found["items"], json!([]));
    let (s, _) = app
        .send_json(
            Method::DELETE,
            &format!("/v1/contacts/{cid}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get(&format!("/v1/contacts/{cid}"), &a.supervisor).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The audit log has the changes.
    let (_, audit) = app.get("/v1/audit", &a.admin).await;
    let text = audit.to_string();
    assert!(
        text.contains("disposition_code") && text.contains("contact"),
        "{text}"
    );
}

#[tokio::test]
async fn the_desktop_says_how_to_build_it_when_it_is_not_built() {
    let app = spawn_app().await;
    for path in ["/desk", "/desk/", "/desk/index.html"] {
        let resp = app.req(Method::GET, path, None).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(resp.text().await.unwrap().contains("npm ci"), "{path}");
    }
}

#[tokio::test]
async fn the_softphone_settings_make_the_desktop_the_phone_when_the_gateway_speaks_websocket() {
    // No WebSocket URL known: desk phones.
    let app = spawn_app().await;
    let a = app.tenant("alpha", 5).await;
    let (s, v) = app.get("/v1/agent/softphone", &a.agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "desk_phone", "{v}");
    assert_eq!(v["webrtc"], Value::Null, "{v}");
    assert_eq!(v["desk_phone_registered"], false, "{v}");

    // Set later (as `switchboard up` does once its gateway listens): the browser is the phone.
    app.state.set_softphone(
        switchboard_api::routes::desk::SoftphoneSettings::new("ws://127.0.0.1:5066/", "sip.local")
            .unwrap(),
    );
    let (s, v) = app.get("/v1/agent/softphone", &a.agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "webrtc", "{v}");
    assert_eq!(v["webrtc"]["ws_url"], "ws://127.0.0.1:5066/", "{v}");
    // Without a SIP login the user part is the user id; the host names the tenant.
    assert_eq!(
        v["webrtc"]["sip_uri"],
        format!("sip:{}@alpha.sip.local", a.agent_id.simple()),
        "{v}"
    );
    assert_eq!(v["webrtc"]["dial_domain"], "alpha.sip.local", "{v}");
    assert_eq!(v["webrtc"]["auth"], "bearer", "{v}");
    assert!(
        v["webrtc"]["register_expires_s"].as_u64().unwrap() >= 60,
        "{v}"
    );
    assert!(
        !v["webrtc"]["display_name"].as_str().unwrap().is_empty(),
        "{v}"
    );
}

#[tokio::test]
async fn the_configured_softphone_uses_the_sip_login_and_each_tenants_domain() {
    let app = spawn_app_with(switchboard_api::HttpSettings {
        softphone: Some(
            switchboard_api::routes::desk::SoftphoneSettings::new(
                "wss://gw.example.com:8443",
                "sip.example.com",
            )
            .unwrap(),
        ),
        ..Default::default()
    })
    .await;
    let a = app.tenant("alpha", 5).await;
    let b = app.tenant("bravo", 5).await;
    let (s, v) = app
        .send_json(
            Method::PUT,
            &format!("/v1/users/{}/sip-credential", a.agent_id),
            Some(&a.admin),
            Some(json!({"username": "agent7", "password": "a-long-sip-password"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = app.get("/v1/agent/softphone", &a.agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "webrtc", "{v}");
    assert_eq!(v["sip_username"], "agent7", "{v}");
    assert_eq!(v["webrtc"]["ws_url"], "wss://gw.example.com:8443/", "{v}");
    assert_eq!(
        v["webrtc"]["sip_uri"], "sip:agent7@alpha.sip.example.com",
        "{v}"
    );
    let (s, v) = app.get("/v1/agent/softphone", &b.agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["webrtc"]["dial_domain"], "bravo.sip.example.com", "{v}");
    // A setting made later does not replace the configured one.
    app.state.set_softphone(
        switchboard_api::routes::desk::SoftphoneSettings::new("ws://127.0.0.1:1/", "sip.local")
            .unwrap(),
    );
    let (_, v) = app.get("/v1/agent/softphone", &a.supervisor).await;
    assert_eq!(v["webrtc"]["ws_url"], "wss://gw.example.com:8443/", "{v}");
    assert_eq!(v["webrtc"]["dial_domain"], "alpha.sip.example.com", "{v}");
    // A phone belongs to a user: an API key has none.
    let (s, key) = app
        .post("/v1/api-keys", &a.admin, json!({"name": "crm"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let (s, v) = app
        .get("/v1/agent/softphone", key["secret"].as_str().unwrap())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}
