use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-cluster";
const REALM: &str = "acme.switchboard.example";
const T0: u64 = 1_800_000_000_000;

fn auth() -> DigestAuthenticator {
    DigestAuthenticator::new(DigestConfig::with_secret(SECRET)).unwrap()
}

fn nonce_of(challenge: &str) -> String {
    let start = challenge.find("nonce=\"").unwrap() + 7;
    let end = start + challenge[start..].find('"').unwrap();
    challenge[start..end].to_owned()
}

/// Build the header a phone would send, computing the response from `password`.
fn phone_header(alg: Algorithm, user: &str, password: &str, nonce: &str, method: &str) -> String {
    let cred = SipCredential::derive(user, REALM, password);
    let uri = "sip:acme.switchboard.example";
    let resp = compute_response(
        alg,
        cred.ha1(alg),
        nonce,
        "00000001",
        "0a4f113b",
        "auth",
        method,
        uri,
    );
    format!(
        "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{resp}\", algorithm={}, cnonce=\"0a4f113b\", qop=auth, nc=00000001",
        alg.as_str()
    )
}

#[test]
fn rfc7616_3_9_1_vectors() {
    // RFC 7616 section 3.9.1: Mufasa / "Circle of Life", GET /dir/index.html.
    let cred = SipCredential::derive("Mufasa", "http-auth@example.org", "Circle of Life");
    let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let sha = compute_response(
        Algorithm::Sha256,
        &cred.ha1_sha256,
        nonce,
        "00000001",
        cnonce,
        "auth",
        "GET",
        "/dir/index.html",
    );
    assert_eq!(
        sha,
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    let md5 = compute_response(
        Algorithm::Md5,
        &cred.ha1_md5,
        nonce,
        "00000001",
        cnonce,
        "auth",
        "GET",
        "/dir/index.html",
    );
    assert_eq!(md5, "8ca523f5e9506fed4657c9700eebdbec");
}

#[test]
fn rfc7616_example_header_parses_and_matches() {
    // The full example Authorization header, parsed, then recomputed.
    let h = r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="8ca523f5e9506fed4657c9700eebdbec", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    let d = parse_authorization(h).unwrap();
    let cred = SipCredential::derive("Mufasa", "http-auth@example.org", "Circle of Life");
    let alg = d.algorithm.unwrap();
    let r = compute_response(
        alg,
        cred.ha1(alg),
        &d.nonce,
        d.nc.as_deref().unwrap(),
        d.cnonce.as_deref().unwrap(),
        d.qop.as_deref().unwrap(),
        "GET",
        &d.uri,
    );
    assert_eq!(r, d.response);
    // That nonce was not minted by us, so our verifier must reject it.
    assert_eq!(
        auth().verify(&d, "GET", "http-auth@example.org", Some(&cred), T0),
        AuthOutcome::Failed(FailReason::BadNonce)
    );
}

#[test]
fn derive_hashes_are_hex() {
    let c = SipCredential::derive("Mufasa", "http-auth@example.org", "Circle of Life");
    assert_eq!(c.ha1_md5.len(), 32);
    assert_eq!(c.ha1_sha256.len(), 64);
    assert!(
        !format!("{c:?}").contains(&c.ha1_md5),
        "Debug must not leak HA1"
    );
}

#[test]
fn challenge_format() {
    let a = auth();
    let ch = a.challenge_with_random("r\"x", T0, [7; 16], false);
    assert_eq!(ch.len(), 2);
    assert!(ch[0].starts_with("Digest realm=\"r\\\"x\", nonce=\""));
    assert!(ch[0].contains("algorithm=SHA-256"));
    assert!(ch[1].contains("algorithm=MD5"));
    assert!(
        ch.iter()
            .all(|c| c.contains("qop=\"auth\"") && !c.contains("stale"))
    );
    assert_eq!(nonce_of(&ch[0]), nonce_of(&ch[1]));
    let st = a.stale_challenge(REALM, T0);
    assert!(st.iter().all(|c| c.ends_with(", stale=true")));
    // Fresh randomness per challenge.
    assert_ne!(
        nonce_of(&a.challenge(REALM, T0)[0]),
        nonce_of(&a.challenge(REALM, T0)[0])
    );
}

#[test]
fn ok_for_both_algorithms_and_any_node() {
    let node_a = auth();
    let node_b = auth(); // another gateway node with the same cluster secret
    let cred = SipCredential::derive("1001", REALM, "s3cret!");
    for (i, alg) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
        let nonce = nonce_of(&node_a.challenge(REALM, T0)[i]);
        let h = phone_header(alg, "1001", "s3cret!", &nonce, "REGISTER");
        let d = parse_authorization(&h).unwrap();
        assert_eq!(d.algorithm, Some(alg));
        assert_eq!(
            node_b.verify(&d, "REGISTER", REALM, Some(&cred), T0 + 1000),
            AuthOutcome::Ok
        );
        // Upper-case hex from the phone is fine.
        let mut up = d.clone();
        up.response = up.response.to_ascii_uppercase();
        assert_eq!(
            node_b.verify(&up, "REGISTER", REALM, Some(&cred), T0),
            AuthOutcome::Ok
        );
        // The method is bound into the response.
        assert_eq!(
            node_b.verify(&d, "INVITE", REALM, Some(&cred), T0),
            AuthOutcome::Failed(FailReason::BadCredentials)
        );
    }
}

#[test]
fn unknown_user_indistinguishable_from_wrong_password() {
    let a = auth();
    let cred = SipCredential::derive("1001", REALM, "right");
    let nonce = nonce_of(&a.challenge(REALM, T0)[0]);
    let wrong_pw = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "wrong",
        &nonce,
        "INVITE",
    ))
    .unwrap();
    let unknown = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "9999",
        "wrong",
        &nonce,
        "INVITE",
    ))
    .unwrap();
    let o1 = a.verify(&wrong_pw, "INVITE", REALM, Some(&cred), T0);
    let o2 = a.verify(&unknown, "INVITE", REALM, None, T0);
    assert_eq!(o1, AuthOutcome::Failed(FailReason::BadCredentials));
    assert_eq!(o1, o2);
    // Also after expiry: neither becomes Stale.
    let late = T0 + DEFAULT_NONCE_TTL_MS + 1;
    assert_eq!(
        a.verify(&wrong_pw, "INVITE", REALM, Some(&cred), late),
        a.verify(&unknown, "INVITE", REALM, None, late)
    );
    // A credential for a different user is treated as unknown.
    let other = SipCredential::derive("9999", REALM, "x");
    let right = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "right",
        &nonce,
        "INVITE",
    ))
    .unwrap();
    assert_eq!(
        a.verify(&right, "INVITE", REALM, Some(&other), T0),
        AuthOutcome::Failed(FailReason::BadCredentials)
    );
}

#[test]
fn expired_genuine_nonce_is_stale_only_if_response_correct() {
    let a = auth();
    let cred = SipCredential::derive("1001", REALM, "pw");
    let nonce = nonce_of(&a.challenge(REALM, T0)[0]);
    let d = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "pw",
        &nonce,
        "REGISTER",
    ))
    .unwrap();
    assert_eq!(
        a.verify(
            &d,
            "REGISTER",
            REALM,
            Some(&cred),
            T0 + DEFAULT_NONCE_TTL_MS
        ),
        AuthOutcome::Ok
    );
    assert_eq!(
        a.verify(
            &d,
            "REGISTER",
            REALM,
            Some(&cred),
            T0 + DEFAULT_NONCE_TTL_MS + 1
        ),
        AuthOutcome::Stale
    );
    // Future-dated beyond the skew allowance is rejected.
    let future = nonce_of(&a.challenge(REALM, T0 + DEFAULT_MAX_CLOCK_SKEW_MS + 1)[0]);
    let d = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "pw",
        &future,
        "REGISTER",
    ))
    .unwrap();
    assert_eq!(
        a.verify(&d, "REGISTER", REALM, Some(&cred), T0),
        AuthOutcome::Failed(FailReason::BadNonce)
    );
}

#[test]
fn custom_ttl() {
    let mut cfg = DigestConfig::with_secret(SECRET);
    cfg.nonce_ttl_ms = 10_000;
    let a = DigestAuthenticator::new(cfg).unwrap();
    let cred = SipCredential::derive("1001", REALM, "pw");
    let nonce = nonce_of(&a.challenge(REALM, T0)[1]);
    let d = parse_authorization(&phone_header(
        Algorithm::Md5,
        "1001",
        "pw",
        &nonce,
        "REGISTER",
    ))
    .unwrap();
    assert_eq!(
        a.verify(&d, "REGISTER", REALM, Some(&cred), T0 + 10_001),
        AuthOutcome::Stale
    );
}

#[test]
fn nonce_tampering_and_wrong_realm_or_secret() {
    let a = auth();
    let cred = SipCredential::derive("1001", REALM, "pw");
    let nonce = nonce_of(&a.challenge(REALM, T0)[0]);

    // Flip one character of the nonce (timestamp region).
    let mut bytes = nonce.clone().into_bytes();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let d = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "pw",
        &tampered,
        "REGISTER",
    ))
    .unwrap();
    assert_eq!(
        a.verify(&d, "REGISTER", REALM, Some(&cred), T0),
        AuthOutcome::Failed(FailReason::BadNonce)
    );

    // A nonce minted for another realm (tenant) does not verify here.
    let other_realm_nonce = nonce_of(&a.challenge("other.example", T0)[0]);
    let d = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "pw",
        &other_realm_nonce,
        "REGISTER",
    ))
    .unwrap();
    assert_eq!(
        a.verify(&d, "REGISTER", REALM, Some(&cred), T0),
        AuthOutcome::Failed(FailReason::BadNonce)
    );

    // Another cluster secret rejects our nonce.
    let b = DigestAuthenticator::new(DigestConfig::with_secret([9u8; 32])).unwrap();
    let d = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "pw",
        &nonce,
        "REGISTER",
    ))
    .unwrap();
    assert_eq!(
        b.verify(&d, "REGISTER", REALM, Some(&cred), T0),
        AuthOutcome::Failed(FailReason::BadNonce)
    );

    // Realm in the header differs from the protected realm.
    assert_eq!(
        a.verify(&d, "REGISTER", "elsewhere", Some(&cred), T0),
        AuthOutcome::Failed(FailReason::RealmMismatch)
    );
    // Garbage nonces.
    for n in ["", "!!!", &"A".repeat(200), "AAAA"] {
        let mut g = d.clone();
        g.nonce = n.to_owned();
        assert_eq!(
            a.verify(&g, "REGISTER", REALM, Some(&cred), T0),
            AuthOutcome::Failed(FailReason::BadNonce)
        );
    }
}

#[test]
fn qop_uri_and_algorithm_checks() {
    let a = auth();
    let cred = SipCredential::derive("1001", REALM, "pw");
    let nonce = nonce_of(&a.challenge(REALM, T0)[0]);
    let d = parse_authorization(&phone_header(
        Algorithm::Sha256,
        "1001",
        "pw",
        &nonce,
        "REGISTER",
    ))
    .unwrap();
    let check = |m: &dyn Fn(&mut DigestResponse), want: FailReason| {
        let mut x = d.clone();
        m(&mut x);
        assert_eq!(
            a.verify(&x, "REGISTER", REALM, Some(&cred), T0),
            AuthOutcome::Failed(want)
        );
    };
    check(&|x| x.uri.clear(), FailReason::MissingUri);
    check(&|x| x.qop = None, FailReason::BadQop);
    check(&|x| x.qop = Some("auth-int".into()), FailReason::BadQop);
    check(&|x| x.nc = None, FailReason::BadQop);
    check(&|x| x.nc = Some("1".into()), FailReason::BadQop);
    check(&|x| x.nc = Some("0000000g".into()), FailReason::BadQop);
    check(&|x| x.cnonce = None, FailReason::BadQop);
    check(&|x| x.cnonce = Some(String::new()), FailReason::BadQop);
    check(&|x| x.algorithm = None, FailReason::UnsupportedAlgorithm);
    check(&|x| x.userhash = true, FailReason::UnsupportedAlgorithm);
    check(
        &|x| x.algorithm = Some(Algorithm::Md5),
        FailReason::BadCredentials,
    );
    check(&|x| x.response.clear(), FailReason::BadCredentials);
}

#[test]
fn config_validation() {
    assert!(DigestAuthenticator::new(DigestConfig::with_secret(vec![0u8; 31])).is_err());
    let mut c = DigestConfig::with_secret(vec![0u8; 32]);
    c.nonce_ttl_ms = 0;
    assert!(DigestAuthenticator::new(c).is_err());
    assert!(!format!("{:?}", DigestConfig::with_secret(SECRET)).contains("0123"));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DigestAuthenticator>();
    assert_send_sync::<crate::Guard>();
    assert_send_sync::<crate::Admission>();
    assert_send_sync::<crate::CallCaps>();
    assert_send_sync::<crate::CapPermit>();
    assert_send_sync::<crate::Permit>();
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Arbitrary field values never panic and never authenticate.
        #[test]
        fn verify_never_panics_or_accepts_garbage(
            user in "\\PC{0,20}", nonce in "\\PC{0,100}", uri in "\\PC{0,20}",
            resp in "[0-9a-fA-F]{0,64}", nc in "\\PC{0,10}", cnonce in "\\PC{0,10}",
            qop in prop_oneof![Just("auth".to_owned()), "\\PC{0,6}"],
            now in any::<u64>(),
        ) {
            let a = auth();
            let d = DigestResponse {
                username: user.clone(), realm: REALM.into(), nonce, uri, response: resp,
                algorithm: Some(Algorithm::Sha256), qop: Some(qop), nc: Some(nc),
                cnonce: Some(cnonce), opaque: None, userhash: false,
            };
            let cred = SipCredential::derive(&user, REALM, "pw");
            let out = a.verify(&d, "INVITE", REALM, Some(&cred), now);
            prop_assert!(matches!(out, AuthOutcome::Failed(_)));
        }

        /// With a genuine nonce, unknown-user and wrong-password outcomes agree.
        #[test]
        fn no_enumeration_oracle(pw in "\\PC{1,12}", guess in "\\PC{1,12}", dt in 0u64..1_000_000) {
            prop_assume!(pw != guess);
            let a = auth();
            let cred = SipCredential::derive("1001", REALM, &pw);
            let nonce = nonce_of(&a.challenge(REALM, T0)[0]);
            let d = parse_authorization(&phone_header(Algorithm::Sha256, "1001", &guess, &nonce, "INVITE")).unwrap();
            prop_assert_eq!(
                a.verify(&d, "INVITE", REALM, Some(&cred), T0 + dt),
                a.verify(&d, "INVITE", REALM, None, T0 + dt)
            );
        }
    }
}
