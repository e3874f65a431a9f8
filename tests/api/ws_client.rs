//! A browser-style SIP user agent over WebSocket (RFC 7118, as JsSIP speaks it) and a
//! WebRTC "browser" (str0m in the browser role: full ICE, DTLS active) for its media: shared
//! by the SIP-over-WebSocket and WebRTC tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use switchboard_gateway::GatewayConfig;
use switchboard_webrtc::{Codec, Endpoint, Role, WebrtcConfig};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::gateway_sip::*;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The gateway settings of these tests: WebSocket on loopback, tight limits.
pub(crate) fn with_ws(cfg: &mut GatewayConfig) {
    cfg.ring_timeout_ms = 10_000;
    cfg.ws_addr = Some("127.0.0.1:0".parse().expect("addr"));
    cfg.ws.handshake_timeout_ms = 500;
    cfg.ws.max_connections_per_ip = 6;
    cfg.ws.max_message_bytes = 8 * 1024;
}

/// A gateway fixture with the WebSocket listener and an outbound trunk (credentials
/// `trunkuser`/`trunkpass`, domain `carrier.test`) on a free loopback port; returns that port.
pub(crate) async fn fixture_with_ws_and_trunk() -> (Fixture, u16) {
    let trunk_port = free_udp_port();
    let trunk = test_trunk(trunk_port);
    let fx = fixture_configured(move |cfg| {
        with_ws(cfg);
        cfg.outbound_trunk = Some(trunk);
    })
    .await;
    (fx, trunk_port)
}

pub(crate) fn ws_addr(fx: &Fixture) -> SocketAddr {
    fx.gw.ws_addr().expect("the WebSocket listener is on")
}

pub(crate) fn rand_token(n: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..n].to_owned()
}

/// Opens a WebSocket offering `protocols` (none: no header).
pub(crate) async fn open(
    addr: SocketAddr,
    protocols: Option<&str>,
) -> Result<(Ws, Option<String>), WsError> {
    let mut req = format!("ws://{addr}/").into_client_request()?;
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().expect("header"));
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let echoed = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, echoed))
}

/// What the next frame from the gateway was.
#[derive(Debug)]
pub(crate) enum Got {
    Sip(String),
    Closed(Option<CloseFrame>),
    Silence,
}

/// A browser-style SIP user agent over one WebSocket.
pub(crate) struct WsUa {
    pub(crate) ws: Ws,
    /// The random `.invalid` host of Via and Contact (RFC 7118 appendix).
    pub(crate) host: String,
    pub(crate) user: String,
    pub(crate) call_id: String,
    pub(crate) tag: String,
    pub(crate) cseq: u32,
}

impl WsUa {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let (ws, echoed) = open(addr, Some("sip")).await.expect("WebSocket handshake");
        assert_eq!(
            echoed.as_deref(),
            Some("sip"),
            "the sip subprotocol is echoed"
        );
        Self {
            ws,
            host: format!("{}.invalid", rand_token(12)),
            user: rand_token(8),
            call_id: rand_token(20),
            tag: rand_token(10),
            cseq: 0,
        }
    }

    pub(crate) fn contact(&self) -> String {
        format!("sip:{}@{};transport=ws", self.user, self.host)
    }

    pub(crate) fn via(&self) -> String {
        format!(
            "Via: SIP/2.0/WS {};branch=z9hG4bK{}",
            self.host,
            rand_token(16)
        )
    }

    pub(crate) async fn send(&mut self, text: String) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send over the WebSocket");
    }

    /// The next SIP message (or the close) within `secs`.
    pub(crate) async fn next(&mut self, secs: u64) -> Got {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Got::Silence,
                Ok(f) => f,
            };
            match frame {
                Some(Ok(Message::Text(t))) => return Got::Sip(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => {
                    return Got::Sip(String::from_utf8_lossy(&b).into_owned());
                }
                Some(Ok(Message::Close(f))) => return Got::Closed(f),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Got::Closed(None),
            }
        }
    }

    /// The next SIP message, which must come within `secs`.
    pub(crate) async fn sip(&mut self, secs: u64) -> String {
        match self.next(secs).await {
            Got::Sip(m) => m,
            other => panic!("expected a SIP message, got {other:?}"),
        }
    }

    pub(crate) fn register_request(
        &mut self,
        domain: &str,
        user: &str,
        authorization: Option<&str>,
    ) -> String {
        self.cseq += 1;
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        format!(
            "REGISTER sip:{domain} SIP/2.0\r\n{via}\r\nMax-Forwards: 69\r\n\
             To: <sip:{user}@{domain}>\r\nFrom: <sip:{user}@{domain}>;tag={tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:{inst}>\";expires=600\r\n\
             Expires: 600\r\nAllow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
             Supported: path,gruu,outbound\r\nUser-Agent: JsSIP 3.10.1\r\n{auth}\
             Content-Length: 0\r\n\r\n",
            via = self.via(),
            tag = self.tag,
            call_id = self.call_id,
            cseq = self.cseq,
            contact = self.contact(),
            inst = uuid::Uuid::new_v4(),
        )
    }

    /// Sends a REGISTER and returns the final response.
    pub(crate) async fn register(
        &mut self,
        domain: &str,
        user: &str,
        authorization: Option<&str>,
    ) -> String {
        let req = self.register_request(domain, user, authorization);
        self.send(req).await;
        loop {
            let resp = self.sip(5).await;
            if status_of(&resp) >= 200 {
                return resp;
            }
        }
    }

    /// REGISTER with the tenant's digest: 401, then 200 with the SHA-256 answer.
    pub(crate) async fn register_digest(
        &mut self,
        slug: &str,
        user: &str,
        password: &str,
    ) -> (String, String) {
        use switchboard_sip_guard::{Algorithm as DigestAlg, SipCredential, compute_response};
        let domain = format!("{slug}.sip.test");
        let challenge = self.register(&domain, user, None).await;
        let sha = challenge
            .lines()
            .find(|l| l.starts_with("WWW-Authenticate:") && l.contains("SHA-256"))
            .unwrap_or_else(|| panic!("a SHA-256 challenge in {challenge}"))
            .to_owned();
        let nonce = sha
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("nonce");
        let cred = SipCredential::derive(user, slug, password);
        let uri = format!("sip:{domain}");
        let response = compute_response(
            DigestAlg::Sha256,
            &cred.ha1_sha256,
            nonce,
            "00000001",
            "c0ffee",
            "auth",
            "REGISTER",
            &uri,
        );
        let authorization = format!(
            "Digest username=\"{user}\", realm=\"{slug}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"c0ffee\""
        );
        let ok = self.register(&domain, user, Some(&authorization)).await;
        (challenge, ok)
    }
}

/// The value of the first header `name` in a SIP message.
pub(crate) fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The URI inside `<...>` of a header value (or the value up to `;`).
pub(crate) fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(s), Some(e)) if s < e => value[s + 1..e].to_owned(),
        _ => value.split(';').next().unwrap_or_default().to_owned(),
    }
}

/// A token of `fx`'s agent signed with the api's key, `exp_offset` seconds from now.
pub(crate) fn agent_token(fx: &Fixture, secret: &[u8], exp_offset: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": "switchboard", "aud": "switchboard-api", "sub": fx.tenant.agent_id.to_string(),
        "tid": fx.tenant.id, "role": "agent", "iat": now - 7200, "nbf": now - 7200,
        "exp": now + exp_offset, "iat_ms": (now - 7200) * 1000,
    });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k2".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// A browser's WebRTC endpoint on loopback offering or accepting `codecs` in that order.
pub(crate) fn browser(codecs: Vec<Codec>) -> Arc<Endpoint> {
    // Below the gateways' ranges (node processes 10000-15999, fixtures 16000-32199) and the
    // kernel's ephemeral ports (32768 and up, where `free_udp_port` finds sipp's ports).
    let base = 8_000 + (rand::random::<u16>() % 20) * 100;
    Endpoint::new(
        WebrtcConfig {
            bind_ip: [127, 0, 0, 1].into(),
            advertised_ip: [127, 0, 0, 1].into(),
            port_min: base,
            port_max: base + 99,
            consent_timeout: Duration::from_secs(30),
            max_legs: 8,
            max_sdp_bytes: 16 * 1024,
        },
        Role::Browser { codecs },
    )
    .expect("browser endpoint")
}

/// The browser's side of a dialog the gateway started (an INVITE to the browser).
#[derive(Debug, Clone)]
pub(crate) struct Answered {
    /// The gateway's Contact (in-dialog requests go there).
    pub(crate) target: String,
    /// Our From in-dialog requests: the INVITE's To with our tag; their To: its From.
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) call_id: String,
}

impl WsUa {
    /// Answers an INVITE from the gateway 200 with `sdp`, and waits for the ACK.
    pub(crate) async fn answer_invite(&mut self, invite: &str, sdp: &str) -> Answered {
        let vias: Vec<&str> = invite
            .split("\r\n")
            .filter(|l| l.starts_with("Via:"))
            .collect();
        let (from, to, call_id, cseq) = (
            header(invite, "From").expect("From").to_owned(),
            header(invite, "To").expect("To").to_owned(),
            header(invite, "Call-ID").expect("Call-ID").to_owned(),
            header(invite, "CSeq").expect("CSeq").to_owned(),
        );
        let target = uri_of(header(invite, "Contact").expect("Contact"));
        let local_tag = rand_token(8);
        let answer = format!(
            "SIP/2.0 200 OK\r\n{vias}\r\nFrom: {from}\r\nTo: {to};tag={local_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContact: <{contact}>\r\n\
             Supported: timer\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            vias = vias.join("\r\n"),
            contact = self.contact(),
            len = sdp.len(),
        );
        self.send(answer).await;
        let ack = self.sip(5).await;
        assert!(ack.starts_with("ACK "), "{ack}");
        Answered {
            target,
            from: format!("{to};tag={local_tag}"),
            to: from,
            call_id,
        }
    }

    /// An in-dialog request of ours in a dialog the gateway started.
    pub(crate) fn in_dialog(
        &mut self,
        d: &Answered,
        method: &str,
        extra: &str,
        body: &str,
    ) -> String {
        self.cseq += 1;
        format!(
            "{method} {target} SIP/2.0\r\n{via}\r\nMax-Forwards: 69\r\nTo: {to}\r\n\
             From: {from}\r\nCall-ID: {call_id}\r\nCSeq: {n} {method}\r\n\
             {extra}Content-Length: {len}\r\n\r\n{body}",
            target = d.target,
            via = self.via(),
            to = d.to,
            from = d.from,
            call_id = d.call_id,
            n = self.cseq,
            len = body.len(),
        )
    }

    /// Answers a request of the gateway's (a BYE, a re-INVITE) with `status`, no body.
    pub(crate) async fn reply(&mut self, request: &str, status: u16) {
        let vias: Vec<&str> = request
            .split("\r\n")
            .filter(|l| l.starts_with("Via:"))
            .collect();
        let line = |n: &str| format!("{n}: {}", header(request, n).unwrap_or_default());
        let text = format!(
            "SIP/2.0 {status} Done\r\n{vias}\r\n{from}\r\n{to}\r\n{cid}\r\n{cseq}\r\n\
             Content-Length: 0\r\n\r\n",
            vias = vias.join("\r\n"),
            from = line("From"),
            to = line("To"),
            cid = line("Call-ID"),
            cseq = line("CSeq"),
        );
        self.send(text).await;
    }

    /// The final response to our last request (provisional ones skipped).
    pub(crate) async fn final_response(&mut self, secs: u64) -> String {
        loop {
            let r = self.sip(secs).await;
            if status_of(&r) >= 200 {
                return r;
            }
        }
    }
}

/// A dialog the browser started (its outside call).
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) target: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) call_id: String,
}

impl WsUa {
    /// INVITEs `number` with `sdp` and the api token; the final response, and the dialog for
    /// in-dialog requests (ACKed when it is a 200).
    pub(crate) async fn invite(
        &mut self,
        number: &str,
        domain: &str,
        bearer: &str,
        sdp: &str,
    ) -> (String, Placed) {
        let (call_id, tag) = (rand_token(16), rand_token(8));
        let from = format!("<sip:{}@{domain}>;tag={tag}", self.user);
        self.cseq += 1;
        let invite = format!(
            "INVITE sip:{number}@{domain} SIP/2.0\r\n{via}\r\nMax-Forwards: 69\r\n\
             To: <sip:{number}@{domain}>\r\nFrom: {from}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} INVITE\r\nContact: <{contact}>\r\nAuthorization: {bearer}\r\n\
             Supported: timer\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            via = self.via(),
            cseq = self.cseq,
            contact = self.contact(),
            len = sdp.len(),
        );
        self.send(invite).await;
        let resp = self.final_response(10).await;
        let placed = Placed {
            target: header(&resp, "Contact").map(uri_of).unwrap_or_default(),
            from,
            to: header(&resp, "To").unwrap_or_default().to_owned(),
            call_id,
        };
        if status_of(&resp) == 200 {
            let cseq = self.cseq;
            let ack = self.out_of_cseq(&placed, "ACK", cseq);
            self.send(ack).await;
        }
        (resp, placed)
    }

    fn out_of_cseq(&self, d: &Placed, method: &str, cseq: u32) -> String {
        format!(
            "{method} {target} SIP/2.0\r\n{via}\r\nMax-Forwards: 69\r\nTo: {to}\r\n\
             From: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            target = d.target,
            via = self.via(),
            to = d.to,
            from = d.from,
            call_id = d.call_id,
        )
    }

    /// A bodiless in-dialog request in a dialog the browser started (BYE).
    pub(crate) fn out_of(&mut self, d: &Placed, method: &str) -> String {
        self.cseq += 1;
        self.out_of_cseq(d, method, self.cseq)
    }
}

/// The SDP body of a SIP message.
pub(crate) fn body_of(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}
