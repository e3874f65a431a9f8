//! RFC 4475 torture messages and malformed input against a running gateway node over UDP
//! loopback.
//!
//! The messages are written in from the text of RFC 4475 (section 3.1.1 valid messages,
//! 3.1.2 invalid messages, the transaction-layer and application-layer sections, and the
//! RFC 2543 backward-compatibility INVITE), with these adaptations: line ends are CRLF; the
//! top Via's sent-by is the test socket (`{via}`) and its transport UDP, so that responses
//! the stack routes by Via reach the test (a top Via that is itself the defect under test is
//! kept as the RFC gives it: those answers go to the source address); SDP bodies are one
//! common offer and Content-Length is computed (`{cl}`) where the RFC gives a correct one;
//! the binary part of `mpart01` is made-up bytes; `longreq` is built from the RFC's
//! `<repeat>` notation in code. Messages of the RFC that only concern proxies or TCP are not
//! included (see `TORTURE`). Every test message is sent from its own socket, so one
//! message's retransmitted response cannot be mistaken for another's.
//!
//! The node runs with a SQLite database and the in-memory state engine, and no tenant: an
//! INVITE for a user part that is not a phone number is answered 404, one for a number no
//! tenant has is answered 404, a REGISTER is challenged (401), OPTIONS outside a dialog is
//! answered 200, an in-dialog request without a dialog 481, a method the node knows but does
//! not serve 405.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_gateway::inspect::{Inspection, inspect};
use switchboard_gateway::{GatewayConfig, RunningGateway};
use tokio::net::UdpSocket;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One offer, used wherever an RFC message carries an SDP body.
const SDP: &str = "v=0\n\
o=mhandley 29739 7272939 IN IP4 192.0.2.3\n\
s=-\n\
c=IN IP4 192.0.2.4\n\
t=0 0\n\
m=audio 49217 RTP/AVP 0 12\n\
m=video 3227 RTP/AVP 31\n\
a=rtpmap:31 LPC\n";

/// What RFC 4475 (and RFC 3261 for a UAS/registrar) wants from us for a message.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A final response with one of these codes.
    Final(&'static [u16]),
    /// No answer (a response with no transaction, a message that must be discarded).
    Silent,
}

struct Torture {
    /// The RFC's name for the message.
    name: &'static str,
    section: &'static str,
    /// Whether the RFC calls it a valid message.
    valid: bool,
    template: &'static str,
    expect: Expect,
}

/// Starts a node on loopback with a fresh SQLite database and no tenants.
async fn start_node() -> Result<(RunningGateway, std::path::PathBuf), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sb-torture-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.display());
    let db =
        switchboard_db::Database::connect(&url, &switchboard_db::PoolConfig::default()).await?;
    db.migrate().await?;
    let engine = std::sync::Arc::new(switchboard_state::MemoryEngine::new(Default::default()));
    // 100 RTP then 100 WebRTC ports (they must not overlap), below the kernel's ephemeral
    // range, as the api tests' fixtures do.
    let base = 16_000 + 300 * rand::rng().random_range(0u16..54);
    let mut cfg = GatewayConfig {
        sip_addr: "127.0.0.1:0".parse()?,
        rtp_port_min: base,
        rtp_port_max: base + 99,
        // Mutated REGISTERs carry broken credentials; they must not get loopback banned.
        max_auth_failures: 1_000_000,
        ..GatewayConfig::default()
    };
    cfg.webrtc.port_min = base + 200;
    cfg.webrtc.port_max = base + 299;
    let gw = switchboard_gateway::start(cfg, db, engine).await?;
    Ok((gw, dir))
}

/// Renders a template for a sender at `via`: `{via}`, `{sdp}`, `{cl}` substituted, LF made
/// CRLF, `<NUL>`-style markers made the control bytes they name.
fn render(template: &str, via: SocketAddr) -> Vec<u8> {
    let text = template
        .replace("{via}", &via.to_string())
        .replace("{sdp}", SDP)
        .replace('\n', "\r\n")
        .replace("<NUL>", "\0")
        .replace("<BEL>", "\x07")
        .replace("<DEL>", "\x7f");
    let body_len = text.find("\r\n\r\n").map_or(0, |i| text.len() - i - 4);
    text.replace("{cl}", &body_len.to_string()).into_bytes()
}

/// The status code of a response datagram.
fn status_of(datagram: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(datagram.get(..12)?).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Sends `bytes` from a fresh socket and waits for a final response (up to `wait`), or for
/// `wait` of silence. Returns the final response's status and text, if any arrived.
async fn exchange(
    gw: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Result<Option<(u16, String)>, Box<dyn std::error::Error>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(bytes, gw).await?;
    collect_final(&sock, wait).await
}

async fn collect_final(
    sock: &UdpSocket,
    wait: Duration,
) -> Result<Option<(u16, String)>, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.recv_from(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(r) => {
                let (n, _) = r?;
                if let Some(code) = status_of(&buf[..n])
                    && code >= 200
                {
                    return Ok(Some((
                        code,
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )));
                }
            }
        }
    }
}

/// The node answers an OPTIONS ping with 200 within one second.
async fn assert_alive(gw: SocketAddr, after: &str) -> TestResult {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let via = sock.local_addr()?;
    let id = uuid::Uuid::new_v4();
    let ping = format!(
        "OPTIONS sip:gw@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ping@{via}>;tag={id}\r\nTo: <sip:gw@{gw}>\r\n\
         Call-ID: ping-{id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let started = Instant::now();
    sock.send_to(ping.as_bytes(), gw).await?;
    let answer = collect_final(&sock, Duration::from_secs(1)).await?;
    assert!(
        matches!(answer, Some((200, _))),
        "no 200 to OPTIONS within 1 s after {after} (got {answer:?})"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    Ok(())
}

/// RFC 4475 `longreq` (3.1.1.7), expanded from its `<repeat>` notation.
fn longreq() -> String {
    let r = |s: &str, n: usize| s.repeat(n);
    let mut m = String::from("INVITE sip:user@example.com SIP/2.0\n");
    m.push_str(&format!(
        "To: \"I have a user name of {} proportion\"<sip:user@example.com:6000;unknownparam1=very{}value;longparam{}name=shortvalue;very{}ParameterNameWithNoValue>\n",
        r("extreme", 10),
        r("long", 20),
        r("name", 25),
        r("long", 25)
    ));
    m.push_str(&format!(
        "F: sip:{}@example.net;tag=12{}424;unknownheaderparam{}name=unknowheaderparam{}value;unknownValueless{}paramname\n",
        r("amazinglylongcallername", 5),
        r("982", 50),
        r("name", 20),
        r("value", 15),
        r("paramname", 10)
    ));
    m.push_str(&format!(
        "Call-ID: longreq.one{}longcallid\n",
        r("really", 20)
    ));
    m.push_str("CSeq: 3882340 INVITE\n");
    m.push_str(&format!(
        "Unknown-{}-Name: unknown-{}-value; unknown-{}-parameter-name = unknown-{}-parameter-value\n",
        r("Long", 20),
        r("long", 20),
        r("long", 20),
        r("long", 20)
    ));
    m.push_str(&format!(
        "Via: SIP/2.0/UDP {{via}};branch=z9hG4bKvery{}longbranchvalue\n",
        r("long", 50)
    ));
    for i in (1..=33).rev() {
        let name = ["Via", "v", "V"][i % 3];
        m.push_str(&format!("{name}: SIP/2.0/TCP sip{i}.example.com\n"));
    }
    m.push_str("Max-Forwards: 70\n");
    m.push_str(&format!(
        "Contact: <sip:{}@host5.example.net>\n",
        r("amazinglylongcallername", 5)
    ));
    m.push_str("Content-Type: application/sdp\nl: {cl}\n\n{sdp}");
    m
}

/// RFC 4475 `mpart01` (3.1.1.11): a MESSAGE with a multipart body whose second part is
/// binary (here made-up bytes, including NUL, 0xFF and a CRLFCRLF).
fn mpart01(via: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nHello\r\n\
          --7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n",
    );
    body.extend_from_slice(
        b"0\x82\x01\x4f\x06\x09*\x86H\x86\xf7\r\x01\x07\x02\xa0\x00\xff\xfe\r\n\r\n\x00\x01",
    );
    body.extend_from_slice(b"\r\n--7a9cbec02ceef655--\r\n");
    let head = format!(
        "MESSAGE sip:kumiko@example.org SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:127.0.0.1:5080>\r\n\
         Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=\r\n\
         Contact: <sip:fluffy@127.0.0.1:5070>\r\n\
         To: <sip:kumiko@example.org>\r\n\
         From: <sip:fluffy@example.com>;tag=2fb0dcc9\r\n\
         Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Transfer-Encoding: binary\r\n\
         Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\r\n\
         Date: Sat, 15 Oct 2005 04:44:56 GMT\r\n\
         User-Agent: SIPimp.org/0.2.5 (curses)\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut m = head.into_bytes();
    m.extend_from_slice(&body);
    m
}

const TORTURE: &[Torture] = &[
    // ---- 3.1.1 Valid messages ----
    Torture {
        name: "wsinv",
        section: "3.1.1.1",
        valid: true,
        // The To carries a tag: an INVITE in a dialog this node does not have.
        expect: Expect::Final(&[481]),
        template: r##"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : {cl}
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    {via};branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{sdp}"##,
    },
    Torture {
        name: "intmeth",
        section: "3.1.1.2",
        valid: true,
        // An extension method this UAS does not implement: RFC 4475 allows 405 or 501.
        expect: Expect::Final(&[501]),
        template: r##"!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/UDP {via};branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\<BEL> NUL:\<NUL> DEL:\<DEL>" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="работающий";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:﻿大停電
Content-Length: 0

"##,
    },
    Torture {
        name: "esc01",
        section: "3.1.1.3",
        valid: true,
        expect: Expect::Final(&[404]),
        template: r##"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: {cl}

{sdp}"##,
    },
    Torture {
        name: "escnull",
        section: "3.1.1.4",
        valid: true,
        expect: Expect::Final(&[401]),
        template: r##"REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

"##,
    },
    Torture {
        name: "esc02",
        section: "3.1.1.5",
        valid: true,
        // RE%47IST%45R is not REGISTER but an extension method.
        expect: Expect::Final(&[501]),
        template: r##"RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/UDP {via};branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

"##,
    },
    Torture {
        name: "lwsdisp",
        section: "3.1.1.6",
        valid: true,
        expect: Expect::Final(&[200]),
        template: r##"OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
l: 0

"##,
    },
    // 3.1.1.7 longreq: built by `longreq()`, see `rfc4475_torture`.
    Torture {
        name: "dblreq",
        section: "3.1.1.8",
        valid: true,
        // Only the REGISTER counts; the INVITE after Content-Length is ignored.
        expect: Expect::Final(&[401]),
        template: r##"REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw23492
Content-Length: 0

INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

{sdp}"##,
    },
    Torture {
        name: "semiuri",
        section: "3.1.1.9",
        valid: true,
        expect: Expect::Final(&[200]),
        template: r##"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
l: 0

"##,
    },
    Torture {
        name: "transports",
        section: "3.1.1.10",
        valid: true,
        expect: Expect::Final(&[200]),
        template: r##"OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

"##,
    },
    // 3.1.1.11 mpart01: built by `mpart01()` (binary body), see `rfc4475_torture`.
    Torture {
        name: "unreason",
        section: "3.1.1.12",
        valid: true,
        // A response matching no transaction of ours: parsed, then ignored.
        expect: Expect::Silent,
        template: r##"SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое
Via: SIP/2.0/UDP {via};branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: {cl}
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

{sdp}"##,
    },
    Torture {
        name: "noreason",
        section: "3.1.1.13",
        valid: true,
        expect: Expect::Silent,
        template: r##"SIP/2.0 100 
Via: SIP/2.0/UDP {via};branch=z9hG4bK-ttt1
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host198.example.com>

"##,
    },
    // ---- 3.1.2 Invalid messages ----
    Torture {
        name: "badinv01",
        section: "3.1.2.1",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: {cl}
Content-Type: application/sdp

{sdp}"##,
    },
    Torture {
        name: "clerr",
        section: "3.1.2.2",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

{sdp}"##,
    },
    Torture {
        name: "ncl",
        section: "3.1.2.3",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

{sdp}"##,
    },
    Torture {
        name: "scalar02",
        section: "3.1.2.4",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP {via};branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

"##,
    },
    Torture {
        name: "scalarlg",
        section: "3.1.2.5",
        valid: false,
        // A response: discarded.
        expect: Expect::Silent,
        template: r##"SIP/2.0 503 Service Unavailable
Via: SIP/2.0/UDP {via};branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0

"##,
    },
    Torture {
        name: "quotbal",
        section: "3.1.2.6",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: {cl}

{sdp}"##,
    },
    Torture {
        name: "ltgtruri",
        section: "3.1.2.7",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: {cl}

{sdp}"##,
    },
    Torture {
        name: "lwsruri",
        section: "3.1.2.8",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: {cl}

{sdp}"##,
    },
    Torture {
        name: "lwsstart",
        section: "3.1.2.9",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: {cl}

{sdp}"##,
    },
    Torture {
        name: "trws",
        section: "3.1.2.10",
        valid: false,
        // RFC 4475: reject with 400, or be robust and answer it. We reject (RFC 3261 7.1).
        expect: Expect::Final(&[400]),
        template: "OPTIONS sip:remote-target@example.com SIP/2.0  
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw-trws
Max-Forwards: 70
From: <sip:remote-target@example.com>;tag=3sdk2
To: <sip:remote-target@example.com>
Call-ID: trws.oij4lkj234n12o3f2
CSeq: 2 OPTIONS
Content-Length: 0

",
    },
    Torture {
        name: "escruri",
        section: "3.1.2.11",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: {cl}

{sdp}"##,
    },
    Torture {
        name: "baddate",
        section: "3.1.2.12",
        valid: false,
        // RFC 4475 lets a UAS ignore the bad Date or answer 400. We ignore it: 404, no such user.
        expect: Expect::Final(&[404]),
        template: r##"INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: {cl}

{sdp}"##,
    },
    Torture {
        name: "regbadct",
        section: "3.1.2.13",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

"##,
    },
    Torture {
        name: "badaspec",
        section: "3.1.2.14",
        valid: false,
        // RFC 4475: 400, or robustly accepted. We accept: the address parses.
        expect: Expect::Final(&[200]),
        template: r##"OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Max-Forwards: 119
From: "Bell, Alexander" <sip:a.g.bell@example.com >;tag=433423
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

"##,
    },
    Torture {
        name: "baddn",
        section: "3.1.2.15",
        valid: false,
        expect: Expect::Final(&[200]),
        template: r##"OPTIONS sip:t.watson@example.org SIP/2.0
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Max-Forwards: 70
From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To: Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

"##,
    },
    Torture {
        name: "badvers",
        section: "3.1.2.16",
        valid: false,
        expect: Expect::Final(&[505]),
        template: r##"OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP {via};branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

"##,
    },
    Torture {
        name: "mismatch01",
        section: "3.1.2.17",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
l: 0

"##,
    },
    Torture {
        name: "mismatch02",
        section: "3.1.2.18",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: {cl}

{sdp}"##,
    },
    Torture {
        name: "bigcode",
        section: "3.1.2.19",
        valid: false,
        expect: Expect::Silent,
        template: r##"SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP {via};branch=z9hG4bK-bigcode
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host198.example.com>

"##,
    },
    // ---- Transaction layer ----
    Torture {
        name: "badbranch",
        section: "3.2.1",
        valid: true,
        // The branch is only the magic cookie: 400, or answer it (RFC 2543 style). We answer.
        expect: Expect::Final(&[200]),
        template: r##"OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP {via};branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0

"##,
    },
    // ---- Application layer (those that apply to a UAS / registrar) ----
    Torture {
        name: "insuf",
        section: "3.3.1",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: {cl}

{sdp}"##,
    },
    Torture {
        name: "unkscm",
        section: "3.3.2",
        valid: true,
        expect: Expect::Final(&[416]),
        template: r##"OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Content-Length: 0

"##,
    },
    Torture {
        name: "novelsc",
        section: "3.3.3",
        valid: true,
        expect: Expect::Final(&[416]),
        template: r##"OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Content-Length: 0

"##,
    },
    Torture {
        name: "unksm2",
        section: "3.3.4",
        valid: true,
        // A registrar cannot bind isbn:/name: addresses: 400 (To and Contact do not parse).
        expect: Expect::Final(&[400]),
        template: r##"REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0

"##,
    },
    Torture {
        name: "bext01",
        section: "3.3.5",
        valid: true,
        // A UAS that supports none of the required extensions answers 420 Bad Extension.
        expect: Expect::Final(&[420]),
        template: r##"OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportsThis, nothingSupportsThisEither
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis
CSeq: 8 OPTIONS
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Content-Length: 0

"##,
    },
    Torture {
        name: "invut",
        section: "3.3.6",
        valid: true,
        // 415 is the RFC's answer for the body; this node finds no such user first: 404.
        expect: Expect::Final(&[404]),
        template: r##"INVITE sip:user@example.com SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Content-Type: application/unknownformat
Content-Length: {cl}

<audio>
 <pcmu port="443"/>
</audio>
"##,
    },
    Torture {
        name: "regaut01",
        section: "3.3.7",
        valid: true,
        // Unknown scheme: treated as no credentials, challenged.
        expect: Expect::Final(&[401]),
        template: r##"REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=87321hj23128
Max-Forwards: 8
Call-ID: regaut01.0ha0isndaksdj
CSeq: 9338 REGISTER
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length:0

"##,
    },
    Torture {
        name: "multi01",
        section: "3.3.8",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: {cl}
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5

{sdp}"##,
    },
    Torture {
        name: "mcl01",
        section: "3.3.9",
        valid: false,
        expect: Expect::Final(&[400]),
        template: r##"OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP {via};branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
"##,
    },
    Torture {
        name: "bcast",
        section: "3.3.10",
        valid: true,
        // A response to nothing we sent: ignored.
        expect: Expect::Silent,
        template: r##"SIP/2.0 200 OK
Via: SIP/2.0/UDP {via};branch=z9hG4bKjasd239ls;received=255.255.255.255
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: {cl}
Content-Type: application/sdp
Contact: <sip:user@host28.example.com>

{sdp}"##,
    },
    Torture {
        name: "zeronum",
        section: "3.3.11",
        valid: true,
        // Max-Forwards 0 only stops forwarding; a UAS answers.
        expect: Expect::Final(&[200]),
        template: r##"OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Max-Forwards: 0
From: sip:caller@example.net;tag=ijlasdf3
To: sip:user@example.com
Call-ID: zeronum.29300asdfnasdfnlkqijkwer9
CSeq: 6 OPTIONS
l: 0

"##,
    },
    Torture {
        name: "sdp01",
        section: "3.3.12",
        valid: true,
        // 406/400 are the RFC's answers to the Accept; this node finds no such user first: 404.
        expect: Expect::Final(&[404]),
        template: r##"INVITE sip:user@example.com SIP/2.0
To: sip:j_user@example.com
Contact: <sip:caller@host15.example.net>
From: sip:caller@example.net;tag=234
Max-Forwards: 5
Call-ID: sdp01.ndaksdj9342dasdd
Accept: text/nobodyknowsthis
CSeq: 8 INVITE
Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw
Content-Length: {cl}
Content-Type: application/sdp

{sdp}"##,
    },
    // ---- Backward compatibility ----
    Torture {
        name: "inv2543",
        section: "3.4.1",
        valid: true,
        // RFC 2543 style: no branch, no From tag, no Max-Forwards, no Content-Length (the
        // body runs to the end of the datagram). A number no tenant has: 404.
        expect: Expect::Final(&[404]),
        template: r##"INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP {via}
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp

{sdp}"##,
    },
];

/// One message of the run: the table's, or one built in code.
struct Case<'a> {
    name: &'a str,
    section: &'a str,
    valid: bool,
    expect: Expect,
    build: Box<dyn Fn(SocketAddr) -> Vec<u8> + 'a>,
}

/// Checks one exchange against what the RFC wants; returns a failure description.
fn judge(name: &str, expect: Expect, got: &Option<(u16, String)>) -> Option<String> {
    match (expect, got) {
        (Expect::Final(codes), Some((code, _))) if codes.contains(code) => None,
        (Expect::Silent, None) => None,
        (expect, got) => Some(format!(
            "{name}: expected {expect:?}, got {:?}",
            got.as_ref()
                .map(|(c, t)| (c, t.lines().next().unwrap_or_default().to_owned()))
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4475_torture() -> TestResult {
    let (node, dir) = start_node().await?;
    let gw = node.sip_addr();
    assert_alive(gw, "start").await?;
    let mut failures = Vec::new();
    let long = longreq();
    let mut all: Vec<Case<'_>> = TORTURE
        .iter()
        .map(|t| Case {
            name: t.name,
            section: t.section,
            valid: t.valid,
            expect: t.expect,
            build: Box::new(|via| render(t.template, via)),
        })
        .collect();
    // The RFC-style INVITE from a user part that is not a number: 404.
    all.push(Case {
        name: "longreq",
        section: "3.1.1.7",
        valid: true,
        expect: Expect::Final(&[404]),
        build: Box::new(move |via| render(&long, via)),
    });
    // MESSAGE is a method the node knows but does not serve: 405.
    all.push(Case {
        name: "mpart01",
        section: "3.1.1.11",
        valid: true,
        expect: Expect::Final(&[405]),
        build: Box::new(mpart01),
    });
    for Case {
        name,
        section,
        valid,
        expect,
        build,
    } in all
    {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let via = sock.local_addr()?;
        let bytes = build(via);
        // The pure decision first: a valid message with a method we know must be passed on.
        let decision = inspect(&bytes, via);
        if valid
            && !matches!(decision, Inspection::Pass(_))
            && !matches!(
                decision,
                Inspection::Reply {
                    status: 501 | 416 | 420,
                    ..
                }
            )
        {
            failures.push(format!(
                "{name} ({section}): valid but inspect said {decision:?}"
            ));
        }
        let wait = match expect {
            Expect::Silent => Duration::from_millis(400),
            Expect::Final(_) => Duration::from_secs(3),
        };
        sock.send_to(&bytes, gw).await?;
        let got = collect_final(&sock, wait).await?;
        println!("{name} ({section}): {:?}", got.as_ref().map(|g| g.0));
        if let Some(f) = judge(&format!("{name} ({section})"), expect, &got) {
            failures.push(f);
        }
        // dblreq: the answer is to the REGISTER, not to the INVITE that trails it.
        if name == "dblreq"
            && let Some((_, text)) = &got
        {
            assert!(
                text.contains("REGISTER"),
                "dblreq answered the wrong request: {text}"
            );
        }
    }
    assert_alive(gw, "the RFC 4475 messages").await?;
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        failures.is_empty(),
        "RFC 4475 failures:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// An OPTIONS request from `via` with a custom start line, extra header lines and body.
fn options_like(start: &str, via: SocketAddr, extra: &str, body: &str) -> Vec<u8> {
    let id = uuid::Uuid::new_v4();
    format!(
        "{start}\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{id}\r\nMax-Forwards: 70\r\n\
         From: <sip:m@{via}>;tag={id}\r\nTo: <sip:gw@example.net>\r\nCall-ID: m-{id}\r\n\
         CSeq: 1 {}\r\n{extra}\r\n{body}",
        start.split(' ').next().unwrap_or_default()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_keeps_the_node_answering() -> TestResult {
    let (node, dir) = start_node().await?;
    let gw = node.sip_addr();
    let one_second = Duration::from_secs(1);
    let quiet = Duration::from_millis(300);

    // Unknown methods: 501; methods we know but do not serve: 405.
    for (method, status) in [
        ("FOO", 501),
        ("X-CUSTOM", 501),
        ("MESSAGE", 405),
        ("SUBSCRIBE", 405),
        ("PUBLISH", 405),
    ] {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let m = options_like(
            &format!("{method} sip:gw@example.net SIP/2.0"),
            sock.local_addr()?,
            "Content-Length: 0\r\n",
            "",
        );
        sock.send_to(&m, gw).await?;
        let got = collect_final(&sock, one_second).await?;
        assert_eq!(got.map(|g| g.0), Some(status), "{method}");
    }
    assert_alive(gw, "unknown methods").await?;

    // Bad Content-Length: 400 for each.
    for cl in [
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 99999\r\n",
        "Content-Length: 2\r\nl: 3\r\n",
        "Content-Length: 18446744073709551616\r\n",
    ] {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let m = options_like(
            "OPTIONS sip:gw@example.net SIP/2.0",
            sock.local_addr()?,
            cl,
            "abc",
        );
        sock.send_to(&m, gw).await?;
        let got = collect_final(&sock, one_second).await?;
        assert_eq!(got.map(|g| g.0), Some(400), "{cl:?}");
    }
    assert_alive(gw, "bad Content-Length").await?;

    // Huge: a header line over 8 KiB, more than 100 headers, a datagram near 64 KiB.
    let huge = [
        format!("X-Long: {}\r\nContent-Length: 0\r\n", "a".repeat(9 * 1024)),
        format!("{}Content-Length: 0\r\n", "X-Many: 1\r\n".repeat(120)),
        format!("Content-Length: {}\r\n", 60_000),
    ];
    for (i, extra) in huge.iter().enumerate() {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let body = if i == 2 {
            "b".repeat(60_000)
        } else {
            String::new()
        };
        let m = options_like(
            "OPTIONS sip:gw@example.net SIP/2.0",
            sock.local_addr()?,
            extra,
            &body,
        );
        sock.send_to(&m, gw).await?;
        let got = collect_final(&sock, one_second).await?;
        assert_eq!(got.map(|g| g.0), Some(513), "huge #{i}");
    }
    assert_alive(gw, "huge messages").await?;

    // Truncated: every prefix of an INVITE with a body, cut at 13-byte steps. Cut inside the
    // head: dropped or 400; cut inside the body: 400 (Content-Length exceeds the body).
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let invite = render(
        "INVITE sip:+15550100100@example.net SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-trunc\n\
         Max-Forwards: 70\nFrom: <sip:a@example.com>;tag=t1\nTo: <sip:+15550100100@example.net>\n\
         Call-ID: trunc-1\nCSeq: 1 INVITE\nContent-Type: application/sdp\nContent-Length: {cl}\n\n{sdp}",
        sock.local_addr()?,
    );
    let head_end = invite
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(0)
        + 4;
    for cut in (1..invite.len()).step_by(13) {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.send_to(&invite[..cut], gw).await?;
        if cut > head_end {
            let got = collect_final(&s, one_second).await?;
            assert_eq!(got.map(|g| g.0), Some(400), "cut at {cut}");
        }
    }
    assert_alive(gw, "truncated messages").await?;

    // NUL bytes: in the start line, in a header value, in the body, alone.
    let nul_cases: Vec<Vec<u8>> = vec![
        b"\0\0\0\0".to_vec(),
        options_like(
            "OPTIONS sip:gw@exa\0mple.net SIP/2.0",
            sock.local_addr()?,
            "Content-Length: 0\r\n",
            "",
        ),
        options_like(
            "OPTIONS sip:gw@example.net SIP/2.0",
            sock.local_addr()?,
            "X-Nul: a\0b\r\nContent-Length: 0\r\n",
            "",
        ),
        options_like(
            "OPTIONS sip:gw@example.net SIP/2.0",
            sock.local_addr()?,
            "Content-Length: 3\r\n",
            "\0\0\0",
        ),
        options_like(
            "OPT\0IONS sip:gw@example.net SIP/2.0",
            sock.local_addr()?,
            "Content-Length: 0\r\n",
            "",
        ),
    ];
    for m in &nul_cases {
        let _ = exchange(gw, m, quiet).await?;
    }
    assert_alive(gw, "NUL bytes").await?;

    // Garbage: no answer at all.
    for g in [
        &b"hello"[..],
        b"\xff\xfe\xfd",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"\r\n\r\nINVITE",
    ] {
        assert_eq!(exchange(gw, g, quiet).await?, None, "{g:?}");
    }
    assert_alive(gw, "garbage").await?;

    // 1,000 random datagrams from a seeded RNG: raw bytes and mutated valid requests, fired
    // without waiting for answers, in batches of 100 with a ping after each.
    let mut rng = StdRng::seed_from_u64(4475);
    let sender = UdpSocket::bind("127.0.0.1:0").await?;
    let via = sender.local_addr()?;
    let seeds = [
        options_like(
            "OPTIONS sip:gw@example.net SIP/2.0",
            via,
            "Content-Length: 0\r\n",
            "",
        ),
        options_like(
            "REGISTER sip:acme.example.net SIP/2.0",
            via,
            "Contact: <sip:a@127.0.0.1>\r\nContent-Length: 0\r\n",
            "",
        ),
        render(
            "INVITE sip:gw@example.net SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-rnd\n\
             Max-Forwards: 70\nFrom: <sip:a@example.com>;tag=r1\nTo: <sip:gw@example.net>\n\
             Call-ID: rnd-1\nCSeq: 1 INVITE\nContent-Type: application/sdp\nContent-Length: {cl}\n\n{sdp}",
            via,
        ),
    ];
    for batch in 0..10 {
        for _ in 0..100 {
            let d = match rng.random_range(0..4) {
                0 => {
                    let n = rng.random_range(0..1500);
                    (0..n).map(|_| rng.random::<u8>()).collect::<Vec<u8>>()
                }
                _ => {
                    let mut d = seeds[rng.random_range(0..seeds.len())].clone();
                    for _ in 0..rng.random_range(1..8) {
                        match rng.random_range(0..4) {
                            0 if !d.is_empty() => {
                                let i = rng.random_range(0..d.len());
                                d[i] = rng.random();
                            }
                            1 if !d.is_empty() => {
                                let i = rng.random_range(0..d.len());
                                d.truncate(i);
                            }
                            2 if !d.is_empty() => {
                                let i = rng.random_range(0..d.len());
                                let j = rng.random_range(i..d.len());
                                let chunk = d[i..j].to_vec();
                                let at = rng.random_range(0..=d.len());
                                d.splice(at..at, chunk);
                            }
                            _ => {
                                let at = rng.random_range(0..=d.len());
                                let b = [b'\r', b'\n', b':', b';', b' ', b'<', b'"', b'%', 0]
                                    [rng.random_range(0..9)];
                                d.insert(at, b);
                            }
                        }
                    }
                    d
                }
            };
            sender.send_to(&d, gw).await?;
        }
        assert_alive(gw, &format!("random batch {batch}")).await?;
    }
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
