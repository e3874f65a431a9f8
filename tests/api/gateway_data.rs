//! The database side of the media gateway: dialled-number routing and idempotent CDRs.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;
use switchboard_db::Access;
use switchboard_db::calls::{CallRecord, LegRecord};
use switchboard_db::entities::cdrs;
use switchboard_domain::TenantId;

use crate::helpers::*;

#[tokio::test]
async fn dialled_numbers_route_to_their_tenant_and_queue() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let (_, q) = app
        .post("/v1/queues", &t.admin, json!({"name": "Support"}))
        .await;
    app.post(
        "/v1/numbers",
        &t.admin,
        json!({"number": "+14155550100", "kind": "did", "label": "main", "queue_id": q["id"]}),
    )
    .await;
    app.post(
        "/v1/numbers",
        &t.admin,
        json!({"number": "+14155550101", "kind": "did", "label": "spare"}),
    )
    .await;

    let r = app
        .db
        .route_for_number("+14155550100")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            r.tenant_id,
            r.tenant_active,
            r.queue_id.map(|u| u.to_string())
        ),
        (t.id, true, q["id"].as_str().map(str::to_owned))
    );
    let spare = app
        .db
        .route_for_number("+14155550101")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spare.queue_id, None);
    assert!(
        app.db
            .route_for_number("+19999999999")
            .await
            .unwrap()
            .is_none()
    );

    let op = app.operator_token().await;
    let (s, _) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/tenants/{}", t.id),
            Some(&op),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !app.db
            .route_for_number("+14155550100")
            .await
            .unwrap()
            .unwrap()
            .tenant_active
    );
}

#[tokio::test]
async fn a_cdr_is_written_once_however_often_it_is_retried() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let other = app.tenant("other", 5).await;
    let start = Utc::now() - Duration::seconds(90);
    let leg = |role: &str, party: &str, answered: bool, status: Option<u16>| LegRecord {
        role: role.into(),
        party: party.into(),
        agent_id: (role == "agent").then_some(t.agent_id),
        started_at: start,
        answered_at: answered.then_some(start + Duration::seconds(32)),
        ended_at: start + Duration::seconds(90),
        sip_status: status,
        end_reason: if answered { "hangup" } else { "rejected" }.into(),
        media_stats: None,
        // An answered agent leg was a browser's, transcoded; the caller's plain RTP.
        media: answered.then(|| if role == "agent" { "webrtc" } else { "rtp" }.into()),
        codec: answered.then(|| if role == "agent" { "opus" } else { "PCMU" }.into()),
    };
    let record = CallRecord {
        legs: vec![
            leg("caller", "+442071234567", true, None),
            leg("agent", "someone", false, Some(486)),
            leg("agent", &t.agent_id.to_string(), true, None),
        ],
        call_id: "gw1-0001".into(),
        direction: "inbound".into(),
        from_number: "+442071234567".into(),
        to_number: "+14155550100".into(),
        queue_id: None,
        agent_id: Some(t.agent_id),
        started_at: start,
        queued_at: Some(start + Duration::seconds(2)),
        answered_at: Some(start + Duration::seconds(32)),
        ended_at: start + Duration::seconds(90),
        hangup_cause: "normal_clearing".into(),
        hangup_side: "caller".into(),
        media_stats: Some(json!({"caller": {"loss_pct": 0.1, "jitter_ms": 3, "mos": 4.3}})),
    };
    for attempt in 0..3 {
        let tx = app
            .db
            .tenant_txn(TenantId(t.id), Access::Write)
            .await
            .unwrap();
        let added = tx.record_call(&record).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(added, attempt == 0, "attempt {attempt}");
    }
    // The same call id in another tenant is another call.
    let tx = app
        .db
        .tenant_txn(TenantId(other.id), Access::Write)
        .await
        .unwrap();
    assert!(tx.record_call(&record).await.unwrap());
    tx.commit().await.unwrap();

    let tx = app
        .db
        .tenant_txn(TenantId(t.id), Access::Read)
        .await
        .unwrap();
    let rows = tx.all::<cdrs::Entity>(|q| q).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].wait_ms, rows[0].talk_ms), (30_000, 58_000));
    assert_eq!(rows[0].agent_id, Some(t.agent_id));
    // Its legs, once each, in order.
    let legs = tx_read(&app, t.id)
        .await
        .call_legs("gw1-0001")
        .await
        .unwrap();
    let summary: Vec<_> = legs
        .iter()
        .map(|l| {
            (
                l.leg_no,
                l.role.as_str(),
                l.sip_status,
                l.end_reason.as_str(),
                l.media.as_deref(),
                l.codec.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, "caller", None, "hangup", Some("rtp"), Some("PCMU")),
            (1, "agent", Some(486), "rejected", None, None),
            (2, "agent", None, "hangup", Some("webrtc"), Some("opus")),
        ]
    );
    // Another tenant's legs stay its own.
    assert_eq!(
        tx_read(&app, other.id)
            .await
            .call_legs("gw1-0001")
            .await
            .unwrap()
            .len(),
        3
    );

    let tx = app
        .db
        .tenant_txn(TenantId(t.id), Access::Write)
        .await
        .unwrap();
    let too_long = CallRecord {
        call_id: "x".repeat(129),
        ..record.clone()
    };
    assert!(tx.record_call(&too_long).await.is_err());
}

async fn tx_read(app: &TestApp, tenant: uuid::Uuid) -> switchboard_db::TenantTxn {
    app.db
        .tenant_txn(TenantId(tenant), Access::Read)
        .await
        .unwrap()
}

#[tokio::test]
async fn supervisors_read_calls_with_their_legs_agents_do_not() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let first = app.call_record(t.id, "gw1-0001", "+442071234567").await;
    let second = app.call_record(t.id, "gw1-0002", "+442071234568").await;

    let (status, page) = app.get("/v1/calls?limit=1", &t.supervisor).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["id"], first.to_string());
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(&format!("/v1/calls?limit=1&cursor={cursor}"), &t.supervisor)
        .await;
    assert_eq!(page["items"][0]["id"], second.to_string());
    assert_eq!(page["items"][0]["from_number"], "+442071234568");
    assert_eq!(page["items"][0]["talk_ms"], 60_000);

    let (status, call) = app.get(&format!("/v1/calls/{first}"), &t.supervisor).await;
    assert_eq!(status, StatusCode::OK, "{call}");
    assert_eq!(call["call_id"], "gw1-0001");
    assert_eq!(call["media_stats"]["caller"]["mos"], 4.2);
    let legs = call["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2);
    assert_eq!(
        (legs[0]["leg_no"].as_i64(), legs[0]["role"].as_str()),
        (Some(0), Some("caller"))
    );
    assert_eq!(legs[1]["role"], "agent");
    assert_eq!(legs[1]["end_reason"], "hangup");

    let (status, _) = app.get("/v1/calls", &t.agent).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .get(
            &format!("/v1/calls/{}", uuid::Uuid::now_v7()),
            &t.supervisor,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
