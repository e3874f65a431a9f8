//! Tokens: every way a bad token can arrive is refused; refresh rotation, reuse detection,
//! logout and suspension revoke what they should.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

fn forge(kid: Option<&str>, secret: &[u8], claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn claims(t: &TestTenant, exp_offset: i64, nbf_offset: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "switchboard", "aud": "switchboard-api", "sub": t.admin_id.to_string(),
        "tid": t.id, "role": "tenant_admin", "iat": now, "nbf": now + nbf_offset,
        "exp": now + exp_offset, "iat_ms": now * 1000,
    })
}

async fn status_with(app: &TestApp, token: &str) -> (StatusCode, serde_json::Value) {
    app.get("/v1/seats", token).await
}

#[tokio::test]
async fn forged_and_stale_tokens_are_rejected() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;

    // A well-formed token signed with the current key works (the forge itself is right).
    let good = forge(Some("k2"), TEST_SECRET, claims(&t, 300, 0));
    assert_eq!(status_with(&app, &good).await.0, StatusCode::OK);
    // The previous key still verifies during rotation.
    let rotated = forge(Some("k1"), OLD_SECRET, claims(&t, 300, 0));
    assert_eq!(status_with(&app, &rotated).await.0, StatusCode::OK);

    let cases = [
        (
            "expired",
            forge(Some("k2"), TEST_SECRET, claims(&t, -120, -300)),
        ),
        (
            "not yet valid",
            forge(Some("k2"), TEST_SECRET, claims(&t, 600, 300)),
        ),
        (
            "wrong signature",
            forge(
                Some("k2"),
                b"another-secret-another-secret-000000",
                claims(&t, 300, 0),
            ),
        ),
        (
            "unknown kid",
            forge(Some("k9"), TEST_SECRET, claims(&t, 300, 0)),
        ),
        ("no kid", forge(None, TEST_SECRET, claims(&t, 300, 0))),
        (
            "wrong audience",
            forge(Some("k2"), TEST_SECRET, {
                let mut c = claims(&t, 300, 0);
                c["aud"] = json!("someone-else");
                c
            }),
        ),
        (
            "wrong issuer",
            forge(Some("k2"), TEST_SECRET, {
                let mut c = claims(&t, 300, 0);
                c["iss"] = json!("evil");
                c
            }),
        ),
        (
            "missing exp",
            forge(Some("k2"), TEST_SECRET, {
                let mut c = claims(&t, 300, 0);
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
        ),
        (
            "missing sub",
            forge(Some("k2"), TEST_SECRET, {
                let mut c = claims(&t, 300, 0);
                c.as_object_mut().unwrap().remove("sub");
                c
            }),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in cases {
        let (s, body) = status_with(&app, &token).await;
        assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(body.get("items").is_none(), "{name}");
    }

    // alg: none, with the payload of a valid token.
    let payload = good.split('.').nth(1).unwrap();
    use base64::Engine;
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"alg":"none","typ":"JWT","kid":"k2"}"#);
    for token in [
        format!("{none_header}.{payload}."),
        format!("{none_header}.{payload}"),
    ] {
        let (s, body) = status_with(&app, &token).await;
        assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // HS512 with the right secret: algorithm is pinned.
    let mut h = Header::new(Algorithm::HS512);
    h.kid = Some("k2".into());
    let hs512 = jsonwebtoken::encode(
        &h,
        &claims(&t, 300, 0),
        &EncodingKey::from_secret(TEST_SECRET),
    )
    .unwrap();
    assert_eq!(status_with(&app, &hs512).await.0, StatusCode::UNAUTHORIZED);

    // No token, wrong scheme.
    let (s, _) = app.send_json(Method::GET, "/v1/seats", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let resp = app
        .req(Method::GET, "/v1/seats", None)
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let first = app.login("acme", "agent@acme.example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();

    let (s, second) = app
        .send_json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(
        app.get("/v1/me", &token_of(&second)).await.0,
        StatusCode::OK
    );

    // Replaying the rotated token: refused, and the whole family (r2 too) is revoked.
    let (s, body) = app
        .send_json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, _) = app
        .send_json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": r2})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // And access tokens issued before are dead.
    assert_eq!(
        app.get("/v1/me", &token_of(&second)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Logging in again works.
    let fresh = app.login("acme", "agent@acme.example.com").await;
    assert_eq!(app.get("/v1/me", &token_of(&fresh)).await.0, StatusCode::OK);
    let _ = t;
}

#[tokio::test]
async fn logout_revokes_refresh_and_everywhere_revokes_access() {
    let app = spawn_app().await;
    app.tenant("acme", 5).await;
    let s1 = app.login("acme", "agent@acme.example.com").await;
    let (s, _) = app
        .send_json(
            Method::POST,
            "/v1/auth/logout",
            Some(&token_of(&s1)),
            Some(json!({"refresh_token": s1["refresh_token"]})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .send_json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": s1["refresh_token"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let s2 = app.login("acme", "agent@acme.example.com").await;
    let (s, _) = app
        .send_json(
            Method::POST,
            "/v1/auth/logout",
            Some(&token_of(&s2)),
            Some(json!({"everywhere": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/me", &token_of(&s2)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = app
        .send_json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": s2["refresh_token"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn suspended_tenant_tokens_and_keys_stop_working() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let other = app.tenant("other", 5).await;
    let (_, key) = app
        .post("/v1/api-keys", &t.admin, json!({"name": "crm"}))
        .await;
    let key = key["secret"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/seats", &key).await.0, StatusCode::OK);
    let refresh = app.login("acme", "agent@acme.example.com").await["refresh_token"].clone();

    let op = app.operator_token().await;
    let (s, v) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/tenants/{}", t.id),
            Some(&op),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    for token in [&t.admin, &t.agent, &key] {
        let (s, body) = app.get("/v1/me", token).await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
            "{s} {body}"
        );
        let (s, body) = app.get("/v1/seats", token).await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
            "{s} {body}"
        );
    }
    let (s, body) = app
        .send_json(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(
                json!({"tenant": "acme", "email": "admin@acme.example.com", "password": PASSWORD}),
            ),
        )
        .await;
    assert_problem(s, &body, StatusCode::FORBIDDEN, "tenant-suspended");
    let (s, _) = app
        .send_json(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_ne!(s, StatusCode::OK);
    // Other tenants are unaffected.
    assert_eq!(app.get("/v1/seats", &other.admin).await.0, StatusCode::OK);
}

#[tokio::test]
async fn login_does_not_reveal_which_part_was_wrong() {
    let app = spawn_app().await;
    app.tenant("acme", 5).await;
    let mut bodies = Vec::new();
    for (tenant, email, pw) in [
        ("acme", "admin@acme.example.com", "wrong password!"),
        ("acme", "nobody@acme.example.com", PASSWORD),
        ("nope", "admin@acme.example.com", PASSWORD),
    ] {
        let (s, body) = app
            .send_json(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"tenant": tenant, "email": email, "password": pw})),
            )
            .await;
        assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
}

#[tokio::test]
async fn role_change_and_disable_revoke_tokens() {
    let app = spawn_app().await;
    let t = app.tenant("acme", 5).await;
    let (s, _) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/users/{}", t.agent_id),
            Some(&t.admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.get("/v1/me", &t.agent).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = app
        .send_json(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(
                json!({"tenant": "acme", "email": "agent@acme.example.com", "password": PASSWORD}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled() {
    let app = spawn_app().await;
    app.tenant("acme", 5).await;
    let attempt = |pw: &'static str| {
        let app = &app;
        async move {
            let resp = app
                .req(Method::POST, "/v1/auth/login", None)
                .json(&json!({"tenant": "acme", "email": "agent@acme.example.com", "password": pw}))
                .send()
                .await
                .unwrap();
            let retry = resp.headers().get("retry-after").cloned();
            let (s, v) = split(resp).await;
            (s, v, retry)
        }
    };
    for _ in 0..10 {
        assert_eq!(attempt("wrong password!").await.0, StatusCode::UNAUTHORIZED);
    }
    let (s, v, retry) = attempt(PASSWORD).await;
    assert_problem(s, &v, StatusCode::TOO_MANY_REQUESTS, "too-many-requests");
    assert!(retry.is_some(), "Retry-After missing");
    // Another account of the same tenant is not locked.
    app.login("acme", "admin@acme.example.com").await;
}
