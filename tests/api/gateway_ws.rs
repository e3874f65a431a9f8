//! SIP over WebSocket (RFC 7118): the gateway with a browser-style SIP client written here (a
//! WebSocket, the `sip` subprotocol, `.invalid` Via and Contact hosts, as JsSIP sends them),
//! sipp as the carrier. The browser's media is WebRTC (str0m playing the browser, see
//! `ws_client`), bridged to the test's own UDP sockets as its microphone and speaker.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::gateway_sip::*;
use crate::helpers::*;
use crate::ws_client::*;
use switchboard_media::g711::Law;
use switchboard_webrtc::Codec;

#[tokio::test]
async fn gateway_ws_handshake_needs_the_sip_subprotocol() {
    let fx = fixture_configured(with_ws).await;
    let addr = ws_addr(&fx);
    for offered in [None, Some("chat"), Some("sips, xsip")] {
        match open(addr, offered).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{offered:?}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains("'sip' subprotocol"), "{body}");
            }
            other => panic!("{offered:?}: expected HTTP 400, got {other:?}"),
        }
    }
    let (_ws, echoed) = open(addr, Some("chat, sip")).await.expect("handshake");
    assert_eq!(echoed.as_deref(), Some("sip"));
}

#[tokio::test]
async fn gateway_ws_register_by_digest_and_by_api_token() {
    let fx = fixture_configured(with_ws).await;
    let addr = ws_addr(&fx);
    let tenant = fx.tenant.id.to_string();
    let agent = fx.tenant.agent_id.to_string();

    // Digest, as desk phones do.
    let mut ua = WsUa::connect(addr).await;
    let (challenge, ok) = ua.register_digest(&fx.slug, "agent1", AGENT_PASSWORD).await;
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert!(ok.contains(&ua.contact()), "the binding is echoed: {ok}");
    assert!(fx.gw.gateway.location.holds(&tenant, &agent));
    let binding = fx
        .gw
        .gateway
        .phone_of(
            &switchboard_state::TenantId::parse(tenant.clone()).unwrap(),
            &agent,
        )
        .await
        .expect("binding in the location service");
    assert!(binding.is_websocket(), "{binding:?}");
    assert!(binding.contact.contains(".invalid"), "{binding:?}");

    // The agent's api access token, as the desktop sends it (JsSIP extraHeaders). The To user
    // is not a SIP login: the token names the agent.
    let domain = format!("{}.sip.test", fx.slug);
    let mut browser = WsUa::connect(addr).await;
    let ok = browser
        .register(
            &domain,
            &browser.user.clone(),
            Some(&format!("Bearer {}", fx.tenant.agent)),
        )
        .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    let binding = fx
        .gw
        .gateway
        .phone_of(
            &switchboard_state::TenantId::parse(tenant.clone()).unwrap(),
            &agent,
        )
        .await
        .expect("binding");
    assert!(
        binding.contact.contains(&browser.host),
        "the newer registration wins: {binding:?}"
    );

    // The first connection closing does not take the browser's newer registration with it.
    drop(ua);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fx.gw.gateway.location.holds(&tenant, &agent));

    // Expired (signed with the right key), forged (wrong key), another tenant's valid token.
    let expired = agent_token(&fx, TEST_SECRET, -3600);
    let resp = browser
        .register(&domain, "x", Some(&format!("Bearer {expired}")))
        .await;
    assert_eq!(status_of(&resp), 401, "{resp}");
    assert!(
        header(&resp, "WWW-Authenticate").is_some_and(|v| v.starts_with("Bearer")),
        "{resp}"
    );
    assert!(resp.contains("token expired"), "the reason is told: {resp}");
    let forged = agent_token(&fx, b"not-the-key-not-the-key-not-the-key-0000", 600);
    let resp = browser
        .register(&domain, "x", Some(&format!("Bearer {forged}")))
        .await;
    assert_eq!(status_of(&resp), 401, "{resp}");
    let other = fx.app.tenant("globex", 5).await;
    let resp = browser
        .register(&domain, "x", Some(&format!("Bearer {}", other.agent)))
        .await;
    assert_eq!(status_of(&resp), 403, "another tenant's token: {resp}");

    // Three failures (gateway.max_auth_failures in these tests) ban the source: its open
    // connection is closed at its next message, and new ones are not served.
    let req = browser.register_request(&domain, "x", None);
    browser.send(req).await;
    match browser.next(5).await {
        Got::Closed(Some(f)) => assert_eq!(f.code, CloseCode::Policy, "{f:?}"),
        other => panic!("a banned source's connection closes, got {other:?}"),
    }
    assert!(
        open(addr, Some("sip")).await.is_err(),
        "a banned source gets no handshake"
    );
}

#[tokio::test]
async fn gateway_ws_agent_takes_an_inbound_call_over_its_websocket() {
    let fx = fixture_configured(with_ws).await;
    let tenant = fx.tenant.id.to_string();
    let agent = fx.tenant.agent_id.to_string();
    let mut ua = WsUa::connect(ws_addr(&fx)).await;
    let domain = format!("{}.sip.test", fx.slug);
    let ok = ua
        .register(
            &domain,
            &ua.user.clone(),
            Some(&format!("Bearer {}", fx.tenant.agent)),
        )
        .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    fx.ready(&fx.tenant.agent).await;

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_addr = agent_rtp.local_addr().expect("addr");
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(9)));
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(9)));

    let caller = run_sipp(
        fx.gw.sip_addr(),
        "caller_until_bye.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
        ],
        25,
    );
    let browser = async {
        // The offered call arrives over this WebSocket, addressed to the `.invalid` contact.
        let invite = ua.sip(10).await;
        assert!(
            invite.starts_with(&format!("INVITE sip:{}@{}", ua.user, ua.host)),
            "to the registered .invalid contact: {invite}"
        );
        let webrtc = browser(vec![Codec::Pcmu]);
        let (leg, sdp) = webrtc
            .answer(body_of(&invite).as_bytes(), Law::Ulaw)
            .expect("the browser answers the gateway's WebRTC offer");
        let d = ua.answer_invite(&invite, &sdp).await;
        let _media = leg.start(agent_rtp_addr).expect("the browser's media");

        tokio::time::sleep(Duration::from_millis(1500)).await;
        let in_dialog = |ua: &mut WsUa, method: &str, extra: &str, body: &str| {
            ua.in_dialog(&d, method, extra, body)
        };
        // DTMF as JsSIP sends it by default: SIP INFO, application/dtmf-relay.
        let info = in_dialog(
            &mut ua,
            "INFO",
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=7\r\nDuration=160\r\n",
        );
        ua.send(info).await;
        let resp = ua.sip(5).await;
        assert_eq!(status_of(&resp), 200, "INFO: {resp}");
        // JsSIP's session timer refresh: UPDATE without a body, every 45 s.
        let update = in_dialog(
            &mut ua,
            "UPDATE",
            "Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n",
            "",
        );
        ua.send(update).await;
        let refreshed = ua.sip(5).await;
        assert_eq!(status_of(&refreshed), 200, "UPDATE: {refreshed}");
        assert_eq!(
            header(&refreshed, "Session-Expires"),
            Some("90;refresher=uac"),
            "{refreshed}"
        );
        assert!(
            header(&refreshed, "Content-Length") == Some("0"),
            "a refresh without an offer gets no SDP: {refreshed}"
        );
        // A refresh under Min-SE is refused with the minimum.
        let short = in_dialog(&mut ua, "UPDATE", "Session-Expires: 30\r\n", "");
        ua.send(short).await;
        let too_small = ua.sip(5).await;
        assert_eq!(status_of(&too_small), 422, "{too_small}");
        assert_eq!(header(&too_small, "Min-SE"), Some("90"), "{too_small}");

        tokio::time::sleep(Duration::from_millis(2000)).await;
        // The browser goes away: the tab closes its WebSocket.
        ua.ws.close(None).await.expect("close");
    };
    let ((caller_ok, caller_out), ()) = tokio::join!(caller, browser);
    assert!(
        caller_ok,
        "caller scenario (ends with the gateway's BYE): {caller_out}"
    );

    let caller_heard = caller_media.await.expect("caller media");
    let agent_heard = agent_media.await.expect("agent media");
    assert!(
        agent_heard.samples.len() > 16_000 && caller_heard.samples.len() > 16_000,
        "heard {} / {} samples",
        agent_heard.samples.len(),
        caller_heard.samples.len()
    );
    assert_eq!(
        last_tone(&agent_heard.samples),
        Some(CALLER_TONE),
        "the caller's tone reaches the browser's RTP"
    );
    assert_eq!(
        last_tone(&caller_heard.samples),
        Some(AGENT_TONE),
        "the browser's tone reaches the caller"
    );
    assert_eq!(
        caller_heard.dtmf,
        vec!['7'],
        "the browser's SIP INFO digit reaches the caller as RFC 4733"
    );

    let cdrs = fx.wait_cdrs(1).await;
    let cdr = &cdrs[0];
    assert_eq!(cdr["hangup_cause"], "agent_connection_lost", "{cdr}");
    assert_eq!(cdr["hangup_side"], "agent", "{cdr}");
    assert_eq!(cdr["agent_id"], json!(fx.tenant.agent_id), "{cdr}");
    assert!(cdr["talk_ms"].as_i64() > Some(2_000), "{cdr}");

    // The registration went with the connection.
    let engine_tenant = switchboard_state::TenantId::parse(tenant.clone()).unwrap();
    for _ in 0..20 {
        if !fx.gw.gateway.location.holds(&tenant, &agent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!fx.gw.gateway.location.holds(&tenant, &agent));
    assert!(
        fx.gw
            .gateway
            .phone_of(&engine_tenant, &agent)
            .await
            .is_none()
    );
    assert!(fx.gw.gateway.ws_flows.is_empty());
}

#[tokio::test]
async fn gateway_ws_refuses_garbage_without_crashing_or_stalling() {
    let fx = fixture_configured(with_ws).await;
    let addr = ws_addr(&fx);

    // Binary garbage and a broken SIP message: refused (the broken request answered), the
    // connection stays and serves the next good message.
    let mut ua = WsUa::connect(addr).await;
    ua.ws
        .send(Message::binary(vec![0u8, 0xff, 0x13, 0x37, b'\r', b'\n']))
        .await
        .expect("send");
    let broken = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n{}\r\nFrom: <sip:a@b.invalid>;tag=1\r\nTo: <sip:x@y>\r\n\
         Call-ID: broken\r\nCSeq: 1 OPTIONS\r\nContent-Length: 99\r\n\r\n",
        ua.via()
    );
    ua.send(broken).await;
    let resp = ua.sip(5).await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    let options = |ua: &WsUa, n: u32| {
        format!(
            "OPTIONS sip:{addr} SIP/2.0\r\n{}\r\nFrom: <sip:a@b.invalid>;tag=1\r\nTo: <sip:x@y>\r\n\
             Call-ID: ok{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ua.via()
        )
    };
    let ok = options(&ua, 1);
    ua.send(ok).await;
    let resp = ua.sip(5).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    // RFC 5626 keep-alive: CRLF CRLF answered with CRLF.
    ua.send("\r\n\r\n".into()).await;
    assert!(matches!(ua.next(5).await, Got::Sip(s) if s == "\r\n"));

    // An oversized message closes its connection (1009).
    let mut big = WsUa::connect(addr).await;
    big.send(format!(
        "OPTIONS sip:x SIP/2.0\r\nX: {}\r\n\r\n",
        "a".repeat(9_000)
    ))
    .await;
    match big.next(5).await {
        Got::Closed(Some(f)) => assert_eq!(f.code, CloseCode::Size, "{f:?}"),
        other => panic!("oversized: {other:?}"),
    }

    // A flood closes its connection (policy).
    let mut flood = WsUa::connect(addr).await;
    for n in 0..60 {
        if flood
            .ws
            .send(Message::text(options(&flood, n)))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut closed = None;
    for _ in 0..80 {
        match flood.next(5).await {
            Got::Sip(_) => continue,
            Got::Closed(f) => {
                closed = Some(f);
                break;
            }
            Got::Silence => break,
        }
    }
    assert!(
        matches!(&closed, Some(Some(f)) if f.code == CloseCode::Policy),
        "flood: {closed:?}"
    );

    // Not WebSocket at all, and a handshake that never finishes: dropped, the latter after the
    // handshake deadline (500 ms here).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    raw.write_all(b"\x16\x03\x01 garbage garbage\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(3), raw.read(&mut buf))
        .await
        .expect("the gateway answers or closes")
        .unwrap_or(0);
    assert!(
        n == 0 || buf.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf))
        .await
        .expect("closed by the handshake deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer to half a handshake");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Connections per source IP are capped (6 here; `ua` is still open).
    let mut extra = Vec::new();
    for _ in 0..10 {
        if let Ok((ws, _)) = open(addr, Some("sip")).await {
            extra.push(ws);
        }
    }
    assert_eq!(extra.len(), 5, "the cap of 6 per IP, one already open");
    drop(extra);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // After all that, the node still serves: the first connection, a new one, and UDP.
    let again = options(&ua, 2);
    ua.send(again).await;
    assert_eq!(status_of(&ua.sip(5).await), 200);
    let mut fresh = WsUa::connect(addr).await;
    let (_, ok) = fresh
        .register_digest(&fx.slug, "agent1", AGENT_PASSWORD)
        .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = socket.local_addr().expect("addr");
    let replies = exchange(
        &socket,
        fx.gw.sip_addr(),
        &format!(
            "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-udp\r\n\
             From: <sip:a@{local}>;tag=u1\r\nTo: <sip:x@y>\r\nCall-ID: udp-after-ws\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            fx.gw.sip_addr()
        ),
    )
    .await;
    assert_eq!(
        replies.last().map(|r| status_of(r)),
        Some(200),
        "{replies:?}"
    );
}

#[tokio::test]
async fn gateway_ws_browser_agent_dials_out_with_its_token() {
    let (fx, trunk_port) = fixture_with_ws_and_trunk().await;
    let mut ua = WsUa::connect(ws_addr(&fx)).await;
    let domain = format!("{}.sip.test", fx.slug);
    let bearer = format!("Bearer {}", fx.tenant.agent);
    let ok = ua.register(&domain, &ua.user.clone(), Some(&bearer)).await;
    assert_eq!(status_of(&ok), 200, "{ok}");

    let carrier = run_sipp(
        fx.gw.sip_addr(),
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", free_udp_port().to_string())],
        25,
    );
    let browser = async {
        // The browser calls from 127.0.0.1, a carrier source in these tests: over WebSocket
        // it is still the agent's own call, and the token (JsSIP extraHeaders) proves who.
        let number = "+14155550123";
        let webrtc = browser(vec![Codec::Opus, Codec::Pcmu]);
        let (offered, sdp) = webrtc.offer(Law::Ulaw).expect("the browser's offer");
        let speaker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (call_id, tag) = (rand_token(16), rand_token(8));
        let from = format!("<sip:{}@{domain}>;tag={tag}", ua.user);
        let invite = format!(
            "INVITE sip:{number}@{domain} SIP/2.0\r\n{via}\r\nMax-Forwards: 69\r\n\
             To: <sip:{number}@{domain}>\r\nFrom: {from}\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <{contact}>\r\nAuthorization: {bearer}\r\n\
             Supported: timer\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            via = ua.via(),
            contact = ua.contact(),
            len = sdp.len(),
        );
        ua.send(invite).await;
        let answer = loop {
            let resp = ua.sip(10).await;
            match status_of(&resp) {
                100..=199 => continue,
                200 => break resp,
                other => panic!("the browser's call got {other}: {resp}"),
            }
        };
        assert!(answer.contains("m=audio"), "{answer}");
        let leg = offered
            .accept_answer(body_of(&answer).as_bytes())
            .expect("the gateway's WebRTC answer");
        let _media = leg
            .start(speaker.local_addr().expect("addr"))
            .expect("the browser's media");
        let to = header(&answer, "To").expect("To").to_owned();
        let target = uri_of(header(&answer, "Contact").expect("Contact"));
        let request = |ua: &WsUa, method: &str, cseq: u32| {
            format!(
                "{method} {target} SIP/2.0\r\n{via}\r\nMax-Forwards: 69\r\nTo: {to}\r\n\
                 From: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
                 Content-Length: 0\r\n\r\n",
                via = ua.via(),
            )
        };
        let ack = request(&ua, "ACK", 1);
        ua.send(ack).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The tab closes mid-call: the carrier gets the BYE.
        ua.ws.close(None).await.expect("close");
    };
    let ((carrier_ok, carrier_out), ()) = tokio::join!(carrier, browser);
    assert!(
        carrier_ok,
        "the carrier got the browser's call with the tenant's caller id, then the BYE when \
         the browser's WebSocket closed: {carrier_out}"
    );
    let cdrs = fx.wait_cdrs(1).await;
    let cdr = &cdrs[0];
    assert_eq!(
        (&cdr["direction"], &cdr["to_number"], &cdr["hangup_side"]),
        (&json!("outbound"), &json!("+14155550123"), &json!("agent")),
        "{cdr}"
    );
    assert_eq!(cdr["agent_id"], json!(fx.tenant.agent_id), "{cdr}");
    assert!(cdr["talk_ms"].as_i64() > Some(1_000), "{cdr}");

    // Over WebSocket, an INVITE without a token or digest is challenged like a phone's.
    let mut ua = WsUa::connect(ws_addr(&fx)).await;
    let invite = format!(
        "INVITE sip:+14155550123@{domain} SIP/2.0\r\n{via}\r\nMax-Forwards: 69\r\n\
         To: <sip:+14155550123@{domain}>\r\nFrom: <sip:{user}@{domain}>;tag=n1\r\n\
         Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n",
        via = ua.via(),
        user = ua.user,
        cid = rand_token(16),
        contact = ua.contact(),
    );
    ua.send(invite).await;
    let resp = loop {
        let r = ua.sip(5).await;
        if status_of(&r) >= 200 {
            break r;
        }
    };
    assert_eq!(status_of(&resp), 407, "{resp}");
}

#[tokio::test]
async fn gateway_wss_serves_browsers_over_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = std::env::temp_dir().join(format!("sb-wss-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).expect("write key");
    let fx = fixture_configured(|cfg| {
        with_ws(cfg);
        cfg.ws.cert_file = Some(cert_file.clone());
        cfg.ws.key_file = Some(key_file.clone());
    })
    .await;
    let addr = ws_addr(&fx);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut req = format!("wss://localhost:{}/", addr.port())
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", "sip".parse().expect("header"));
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("WebSocket handshake over TLS");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("sip")
    );
    let host = format!("{}.invalid", rand_token(10));
    let register = format!(
        "REGISTER sip:{slug}.sip.test SIP/2.0\r\nVia: SIP/2.0/WSS {host};branch=z9hG4bK{b}\r\n\
         Max-Forwards: 69\r\nTo: <sip:web@{slug}.sip.test>\r\n\
         From: <sip:web@{slug}.sip.test>;tag=w1\r\nCall-ID: {cid}\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:web@{host};transport=ws>;expires=600\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n",
        slug = fx.slug,
        b = rand_token(12),
        cid = rand_token(16),
        token = fx.tenant.agent,
    );
    ws.send(Message::text(register)).await.expect("send");
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if status_of(t.as_str()) >= 200 => {
                break t.as_str().to_owned();
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no answer over WSS: {other:?}"),
        }
    };
    assert_eq!(status_of(&reply), 200, "{reply}");
    let tenant = switchboard_state::TenantId::parse(fx.tenant.id.to_string()).unwrap();
    let binding = fx
        .gw
        .gateway
        .phone_of(&tenant, &fx.tenant.agent_id.to_string())
        .await
        .expect("binding");
    assert!(
        binding.stored_source().starts_with("wss/"),
        "bound to the WSS connection: {binding:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn gateway_ws_closes_a_silent_connection_and_drops_its_registration() {
    let fx = fixture_configured(|cfg| {
        with_ws(cfg);
        cfg.ws.ping_interval_s = 1;
        cfg.ws.idle_timeout_s = 2;
    })
    .await;
    let tenant = fx.tenant.id.to_string();
    let agent = fx.tenant.agent_id.to_string();
    let mut ua = WsUa::connect(ws_addr(&fx)).await;
    let domain = format!("{}.sip.test", fx.slug);
    let ok = ua
        .register(
            &domain,
            &ua.user.clone(),
            Some(&format!("Bearer {}", fx.tenant.agent)),
        )
        .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    fx.ready(&fx.tenant.agent).await;
    // A vanished browser: nothing read, so no pong and nothing else comes back.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let mut close = None;
    for _ in 0..10 {
        match ua.next(2).await {
            Got::Closed(f) => {
                close = Some(f);
                break;
            }
            Got::Sip(_) => continue,
            Got::Silence => break,
        }
    }
    assert!(
        matches!(&close, Some(Some(f)) if f.code == CloseCode::Away && f.reason.as_str() == "idle"),
        "{close:?}"
    );
    assert!(!fx.gw.gateway.location.holds(&tenant, &agent));
    // A ready agent whose softphone vanished is made not ready, so no call is offered to it.
    let (s, v) = fx.app.get("/v1/agent/state", &fx.tenant.agent).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v["status"], "not_ready", "{v}");
}
