//! The database side of the media gateway: dialled-number routing and idempotent CDRs.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;
use switchboard_db::Access;
use switchboard_db::calls::CallRecord;
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
    let record = CallRecord {
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

    let tx = app
        .db
        .tenant_txn(TenantId(t.id), Access::Write)
        .await
        .unwrap();
    let too_long = CallRecord {
        call_id: "x".repeat(129),
        ..record
    };
    assert!(tx.record_call(&too_long).await.is_err());
}
