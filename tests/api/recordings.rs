//! Recording retention: tenant settings through the api, and the gateway's sweeper deleting
//! objects past a tenant's retention from a real (local) store and marking their rows.

use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use reqwest::StatusCode;
use serde_json::json;
use switchboard_db::entities::recordings;
use switchboard_db::sea_orm::Set;
use switchboard_recording::{FileDigest, LocalStore, ObjectStore};
use uuid::Uuid;

use crate::helpers::*;

/// Puts a file in the store and its row in the tenant's table, made `age_days` ago.
async fn stored_recording(
    app: &TestApp,
    store: &LocalStore,
    dir: &std::path::Path,
    tenant: Uuid,
    age_days: i64,
) -> String {
    let call = Uuid::new_v4().to_string();
    let key = format!("{tenant}/{call}.wav");
    let file = dir.join(format!("{call}.wav"));
    std::fs::write(&file, call.as_bytes()).unwrap();
    let d = FileDigest::of(&file).await.unwrap();
    store.put(&key, &file, &d).await.unwrap();
    let tx = app
        .db
        .tenant_txn(
            switchboard_domain::TenantId(tenant),
            switchboard_db::Access::Write,
        )
        .await
        .unwrap();
    tx.insert(recordings::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant),
        call_id: Set(call.clone()),
        object_key: Set(key),
        duration_ms: Set(1_000),
        size_bytes: Set(d.size as i64),
        sha256: Set(d.sha256),
        upload_state: Set("stored".into()),
        created_at: Set(Utc::now() - ChronoDuration::days(age_days)),
        pauses: Set(None),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    call
}

#[tokio::test]
async fn recordings_past_a_tenants_retention_are_deleted_and_marked() {
    let app = spawn_app().await;
    let a = app.tenant("alpha", 5).await;
    let b = app.tenant("bravo", 5).await;

    // Settings: tenant admins set their own; bad values and weaker roles are refused.
    let (s, v) = app.get("/v1/recording-settings", &a.admin).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"retention_days": null, "rule": {"mode": "always", "windows": []},
                "time_zone": "UTC", "pause_code": null, "resume_code": null})
        )
    );
    let (s, v) = app
        .put(
            "/v1/recording-settings",
            &a.admin,
            json!({"retention_days": 0}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .put(
            "/v1/recording-settings",
            &a.supervisor,
            json!({"retention_days": 30}),
        )
        .await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = app
        .put(
            "/v1/recording-settings",
            &a.admin,
            json!({"retention_days": 30}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.get("/v1/recording-settings", &a.admin).await;
    assert_eq!(v["retention_days"], 30);
    // The operator sets it for a tenant too.
    let op = app.operator_token().await;
    let (s, v) = app
        .put(
            &format!("/v1/tenants/{}/recording-settings", b.id),
            &op,
            json!({"retention_days": 365}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let dir = std::env::temp_dir().join(format!("sb-retention-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = LocalStore::new(dir.join("store")).await.unwrap();
    let a_old = stored_recording(&app, &store, &dir, a.id, 40).await;
    let a_new = stored_recording(&app, &store, &dir, a.id, 2).await;
    let b_old = stored_recording(&app, &store, &dir, b.id, 40).await;
    let key = |t: Uuid, c: &str| format!("{t}/{c}.wav");

    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let n = switchboard_gateway::record::sweep_retention(&app.db, store.as_ref(), Utc::now())
        .await
        .unwrap();
    assert_eq!(n, 1, "only A's 40-day-old recording is past 30 days");
    assert_eq!(store.size(&key(a.id, &a_old)).await.unwrap(), None);
    assert!(store.size(&key(a.id, &a_new)).await.unwrap().is_some());
    assert!(store.size(&key(b.id, &b_old)).await.unwrap().is_some());

    let (s, v) = app
        .get(&format!("/v1/recordings/{a_old}"), &a.supervisor)
        .await;
    assert_eq!(
        (s, v["upload_state"].as_str()),
        (StatusCode::OK, Some("deleted"))
    );
    app.state
        .set_recordings(switchboard_api::routes::recordings::RecordingsAccess::new(
            store.clone(),
            std::time::Duration::from_secs(60),
        ));
    let (s, v) = app
        .get(&format!("/v1/recordings/{a_old}/playback"), &a.supervisor)
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "conflict");
    let (s, _) = app
        .get(&format!("/v1/recordings/{a_new}/playback"), &a.supervisor)
        .await;
    assert_eq!(s, StatusCode::OK);

    // Idempotent: nothing more to do.
    let again = switchboard_gateway::record::sweep_retention(&app.db, store.as_ref(), Utc::now())
        .await
        .unwrap();
    assert_eq!(again, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn recording_rules_and_pause_codes_are_validated_kept_and_read_by_the_gateway() {
    let app = spawn_app().await;
    let a = app.tenant("alpha", 5).await;
    let (_, queue) = app
        .post("/v1/queues", &a.admin, json!({"name": "cards"}))
        .await;
    let queue_id: Uuid = queue["id"].as_str().unwrap().parse().unwrap();

    let office = json!({"retention_days": 90,
        "rule": {"mode": "schedule", "windows": [
            {"days": ["fri", "mon", "mon"], "start": "09:00", "end": "17:30"}]},
        "time_zone": "Europe/Berlin", "pause_code": "*1", "resume_code": "*2"});
    let (s, v) = app.put("/v1/recording-settings", &a.admin, office).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let kept = json!({"retention_days": 90,
        "rule": {"mode": "schedule", "windows": [
            {"days": ["mon", "fri"], "start": "09:00", "end": "17:30"}]},
        "time_zone": "Europe/Berlin", "pause_code": "*1", "resume_code": "*2"});
    assert_eq!(v, kept, "days sorted and deduplicated");
    let (_, v) = app.get("/v1/recording-settings", &a.admin).await;
    assert_eq!(v, kept);

    // Each bad input: 422 with the validation type, and nothing written.
    for bad in [
        json!({"retention_days": 90, "time_zone": "Mars/Olympus"}),
        json!({"retention_days": 90, "rule": {"mode": "schedule", "windows": []}}),
        json!({"retention_days": 90, "rule": {"mode": "schedule", "windows": [
            {"days": [], "start": "09:00", "end": "17:00"}]}}),
        json!({"retention_days": 90, "rule": {"mode": "schedule", "windows": [
            {"days": ["mon"], "start": "9am", "end": "17:00"}]}}),
        json!({"retention_days": 90, "rule": {"mode": "always", "windows": [
            {"days": ["mon"], "start": "09:00", "end": "17:00"}]}}),
        json!({"retention_days": 90, "rule": {"mode": "sometimes"}}),
        json!({"retention_days": 90, "pause_code": "*1", "resume_code": "*1"}),
        json!({"retention_days": 90, "pause_code": "card"}),
        json!({"retention_days": 90, "record": "always"}),
    ] {
        let (s, v) = app
            .put("/v1/recording-settings", &a.admin, bad.clone())
            .await;
        assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
        let (_, now) = app.get("/v1/recording-settings", &a.admin).await;
        assert_eq!(now, kept, "{bad} changed nothing");
    }

    // A queue's own rule: none until set, then it overrides the tenant's.
    let path = format!("/v1/queues/{queue_id}/recording-rule");
    let (s, v) = app.get(&path, &a.supervisor).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"rule": null})));
    let (s, v) = app
        .put(
            &path,
            &a.admin,
            json!({"rule": {"mode": "schedule", "windows": []}}),
        )
        .await;
    assert_problem(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, v) = app
        .put(&path, &a.supervisor, json!({"rule": {"mode": "never"}}))
        .await;
    assert_problem(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = app
        .put(&path, &a.admin, json!({"rule": {"mode": "never"}}))
        .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"rule": {"mode": "never", "windows": []}})
        )
    );
    let (s, v) = app
        .put(
            &format!("/v1/queues/{}/recording-rule", Uuid::new_v4()),
            &a.admin,
            json!({"rule": null}),
        )
        .await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");

    // What the gateway reads for a call on that queue, and on another.
    let policy = switchboard_gateway::record::load_policy(&app.db, a.id, Some(queue_id)).await;
    assert_eq!(
        policy.rule().mode,
        switchboard_recording::RecordMode::Never,
        "the queue's rule"
    );
    assert_eq!(policy.time_zone.name(), "Europe/Berlin");
    assert_eq!(
        (policy.pause_code.as_deref(), policy.resume_code.as_deref()),
        (Some("*1"), Some("*2"))
    );
    let other = switchboard_gateway::record::load_policy(&app.db, a.id, None).await;
    assert_eq!(
        other.rule().mode,
        switchboard_recording::RecordMode::Schedule
    );
    // Monday 2026-11-30 10:00 in Berlin is 09:00 UTC: inside; 20:00 UTC is 21:00 there.
    use chrono::TimeZone;
    let at = |h| {
        Utc.with_ymd_and_hms(2026, 11, 30, h, 0, 0)
            .single()
            .unwrap()
    };
    assert!(other.records_at(at(9)));
    assert!(!other.records_at(at(20)));

    // Cleared: the tenant's rule applies again.
    let (s, _) = app.put(&path, &a.admin, json!({"rule": null})).await;
    assert_eq!(s, StatusCode::OK);
    let policy = switchboard_gateway::record::load_policy(&app.db, a.id, Some(queue_id)).await;
    assert_eq!(
        policy.rule().mode,
        switchboard_recording::RecordMode::Schedule
    );
}
