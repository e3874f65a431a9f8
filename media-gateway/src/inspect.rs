//! The whole pre-transaction decision for one UDP datagram, as a pure function.
//!
//! rsipstack's UDP serve loop drops whatever its parser refuses without a word, so a peer
//! that sends a broken request retransmits it until its timer fires and never learns why.
//! [`inspect`] runs in front of that loop (from [`crate::udp::FramedUdpSocket`]) and decides,
//! with no IO, what happens to a datagram:
//!
//! 1. framing ([`crate::framing::frame_datagram`]: size limits, RFC 3261 18.3 Content-Length);
//! 2. a trial parse with the same rsipstack parser the stack uses, plus the Via rewrite the
//!    serve loop applies, so a message we pass on is one the stack will accept;
//! 3. the basic validity checks of RFC 3261 8.2 / 16.3 that the parser does not make: a
//!    request has Via, From, To, Call-ID and CSeq (each single-valued one once, with balanced
//!    quotes and `<>` and no empty parameters), the CSeq method matches the Request-Line,
//!    Max-Forwards (if any) is 0-255, the Request-URI is a bare sip/sips/tel URI without
//!    headers; a response has a status code in 100..=699 and a CSeq;
//! 4. what rsipstack's endpoint needs to key a transaction (it drops the request unanswered
//!    otherwise). Legal SIP that trips it (LWS around separators, RFC 4475 `wsinv`; an RFC
//!    2543 From without a tag, `inv2543`) is repaired and passed on re-serialised.
//!
//! The outcome is [`Inspection::Pass`] (the bytes to hand to the stack), [`Inspection::Reply`]
//! (a final error response to send back to the source: 400 with a reason naming the problem,
//! 501 for a method we do not know, 505 for another SIP version, 416 for another URI scheme,
//! 420 for a Require we do not support, 513 for a too large message) or [`Inspection::Drop`]
//! (responses, ACKs, and garbage without the headers a response must echo). Being pure, it is
//! unit-tested here, driven over UDP by `tests/torture.rs` and fuzzed in `media-gateway/fuzz`.

use std::borrow::Cow;
use std::net::SocketAddr;

use rsipstack::sip::prelude::{HasHeaders, HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Request, SipMessage, Transport};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::SipConnection;

use crate::framing::{FrameError, frame_datagram};

/// Largest message the stack's UDP receive buffer holds (rsipstack's `MAX_UDP_BUF_SIZE`).
pub const STACK_BUFFER: usize = 8192;

/// What to do with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// Hand these bytes to the SIP stack: the framed message (headers, blank line, body cut to
    /// Content-Length; a Content-Length header added when the datagram had none and carries a
    /// body, RFC 3261 18.3), known to parse.
    Pass(Vec<u8>),
    /// Do not pass it on; send `response` (a complete SIP response) back to the source.
    Reply {
        status: u16,
        reason: Cow<'static, str>,
        response: Vec<u8>,
    },
    /// Ignore it silently (why, for logs and tests).
    Drop(&'static str),
}

/// What the start line says the datagram is, before anything is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Response,
    Ack,
    Request,
}

fn kind_of(datagram: &[u8]) -> Kind {
    if datagram.starts_with(b"SIP/") {
        Kind::Response
    } else if datagram.starts_with(b"ACK ") || datagram.starts_with(b"ACK\t") {
        Kind::Ack
    } else {
        Kind::Request
    }
}

/// RFC 3261 25.1 `token` characters (a method name is a token).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

/// The start line as text (up to the first CRLF or LF), if it is UTF-8.
fn start_line(datagram: &[u8]) -> Option<&str> {
    let end = datagram
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(datagram.len());
    let line = std::str::from_utf8(&datagram[..end]).ok()?;
    Some(line.strip_suffix('\r').unwrap_or(line))
}

/// The method named by the first raw CSeq line of a head, if any.
fn raw_cseq_method(head: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(head).ok()?;
    text.split(['\r', '\n']).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("cseq")
            .then(|| value.split_whitespace().nth(1))
            .flatten()
    })
}

/// Why a request whose Request-Line (or whole message) rsipstack refused is broken, as the
/// status and reason to answer with.
fn request_line_problem(line: &str, head: &[u8]) -> (u16, Cow<'static, str>) {
    let mut parts = line.split([' ', '\t']).filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return (400, "Malformed Request-Line".into());
    };
    let extra = parts.next().is_some();
    if !is_token(method) {
        return (400, "Malformed Request-Line".into());
    }
    if !extra && version != "SIP/2.0" {
        return if version.starts_with("SIP/") {
            (505, "Version Not Supported".into())
        } else {
            (400, "Malformed Request-Line".into())
        };
    }
    // RFC 3261 8.2.3 / RFC 4475 3.1.2.18: a CSeq naming another method is a broken request
    // even when the method is one we do not know.
    if raw_cseq_method(head).is_some_and(|m| m != method) {
        return (400, "CSeq Method Mismatch".into());
    }
    // One SP between the three elements, none after (RFC 3261 7.1).
    if extra || line.split(' ').count() != 3 {
        return (400, "Malformed Request-Line".into());
    }
    if method.parse::<Method>().is_err() {
        return (501, "Not Implemented".into());
    }
    if uri.parse::<rsipstack::sip::Uri>().is_err() {
        let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        return match scheme.as_deref() {
            Some("sip" | "sips" | "tel") | None => (400, "Bad Request-URI".into()),
            Some(s) if s.starts_with('<') => (400, "Bad Request-URI".into()),
            Some(_) => (416, "Unsupported URI Scheme".into()),
        };
    }
    (400, "Malformed Headers".into())
}

/// RFC 3261 8.2 / 16.3 checks on a parsed request; `Err` names the problem (the reason
/// phrase of the 400).
fn validate_request(req: &Request) -> Result<(), (u16, &'static str)> {
    let bad = |reason| (400, reason);
    let count = |pred: fn(&Header) -> bool| req.headers.iter().filter(|h| pred(h)).count();
    let via = req.via_header().map_err(|_| bad("Missing Via"))?;
    for h in req.headers.iter() {
        let problem = match h {
            Header::Via(v) if !well_formed(v.value(), true) => "Bad Via",
            Header::From(f) if !well_formed(f.value(), false) => "Bad From",
            Header::To(t) if !well_formed(t.value(), false) => "Bad To",
            Header::Contact(c) if !well_formed(c.value(), true) => "Bad Contact",
            _ => continue,
        };
        return Err(bad(problem));
    }
    via.first_value()
        .and_then(|v| v.typed())
        .map_err(|_| bad("Bad Via"))?;
    match count(|h| matches!(h, Header::From(_))) {
        0 => return Err(bad("Missing From")),
        1 => {}
        _ => return Err(bad("Multiple From")),
    }
    let from = req.from_header().map_err(|_| bad("Missing From"))?;
    from.typed().map_err(|_| bad("Bad From"))?;
    match count(|h| matches!(h, Header::To(_))) {
        0 => return Err(bad("Missing To")),
        1 => {}
        _ => return Err(bad("Multiple To")),
    }
    let to = req.to_header().map_err(|_| bad("Missing To"))?;
    to.typed().map_err(|_| bad("Bad To"))?;
    match count(|h| matches!(h, Header::CallId(_))) {
        0 => return Err(bad("Missing Call-ID")),
        1 => {}
        _ => return Err(bad("Multiple Call-ID")),
    }
    let call_id = req.call_id_header().map_err(|_| bad("Missing Call-ID"))?;
    let call_id = call_id.value().trim();
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Err(bad("Bad Call-ID"));
    }
    match count(|h| matches!(h, Header::CSeq(_))) {
        0 => return Err(bad("Missing CSeq")),
        1 => {}
        _ => return Err(bad("Multiple CSeq")),
    }
    let cseq = req.cseq_header().map_err(|_| bad("Missing CSeq"))?;
    let cseq = cseq.typed().map_err(|_| bad("Bad CSeq"))?;
    if cseq.seq >= 1 << 31 {
        return Err(bad("Bad CSeq"));
    }
    if cseq.method != req.method {
        return Err(bad("CSeq Method Mismatch"));
    }
    for h in req.headers.iter() {
        match h {
            // RFC 3261 20.22: 0 to 255.
            Header::MaxForwards(mf) if mf.value().trim().parse::<u8>().is_err() => {
                return Err(bad("Bad Max-Forwards"));
            }
            // RFC 3261 20.10: a URI with `?`, `,` or `;` must be in a name-addr (`<...>`);
            // in an addr-spec, `?` would start URI headers that are not allowed there.
            Header::Contact(c) if !c.value().contains('<') && c.value().contains('?') => {
                return Err(bad("Bad Contact"));
            }
            _ => {}
        }
    }
    // RFC 3261 8.2.2.1: a Request-URI scheme we do not understand gets 416.
    if matches!(req.uri.scheme, Some(rsipstack::sip::Scheme::Other(_))) {
        return Err((416, "Unsupported URI Scheme"));
    }
    // RFC 3261 19.1.5: URI headers are not allowed in a Request-URI.
    if !req.uri.headers.is_empty() {
        return Err(bad("Bad Request-URI"));
    }
    Ok(())
}

/// Everything the stack needs of a request before a transaction exists: our RFC 3261 checks,
/// the Via rewrite of rsipstack's UDP loop, and the transaction key its endpoint builds
/// (a request whose key cannot be built is dropped there without an answer).
fn stack_accepts(req: &Request, from: SocketAddr) -> Result<(), (u16, &'static str)> {
    validate_request(req)?;
    if req
        .from_header()
        .and_then(|f| f.tag())
        .ok()
        .flatten()
        .is_none()
    {
        return Err((400, "Missing From Tag"));
    }
    SipConnection::update_msg_received(req.clone().into(), from, Transport::Udp)
        .map_err(|_| (400, "Bad Via"))?;
    TransactionKey::from_request(req, TransactionRole::Server)
        .map_err(|_| (400, "Malformed Headers"))?;
    Ok(())
}

/// RFC 3261 25.1: LWS is allowed around `;`, `=`, `/`, `,` and `:` (SEMI, EQUAL, SLASH,
/// COMMA, COLON), but rsipstack's header parsers do not all take it. Removes it there (outside
/// quoted strings and `<...>`) and collapses other whitespace runs to one space.
fn tighten(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut quoted, mut escaped, mut angle) = (false, false, 0usize);
    let mut pending_space = false;
    for c in value.trim().chars() {
        if quoted {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        if angle == 0 && c.is_whitespace() {
            pending_space = true;
            continue;
        }
        let separator = angle == 0 && matches!(c, ';' | '=' | '/' | ',' | ':');
        let after_separator = angle == 0
            && out
                .chars()
                .last()
                .is_some_and(|l| matches!(l, ';' | '=' | '/' | ',' | ':'));
        if pending_space && !separator && !after_separator && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        match c {
            '"' if angle == 0 => quoted = true,
            '<' => angle += 1,
            '>' => angle = angle.saturating_sub(1),
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A copy of `req` that rsipstack can take when it is legal SIP the stack trips over: LWS
/// around separators in Via, From, To and Contact is removed ([`tighten`]), and a From
/// without a tag (RFC 2543 peers, RFC 3261 12.2.1.1 treats it as a null tag) gets one, the
/// same for every retransmission, so the stack can key a transaction on it.
fn repair(mut req: Request) -> Request {
    for h in req.headers.iter_mut() {
        match h {
            Header::Via(v) => *v = tighten(v.value()).into(),
            Header::From(f) => *f = tighten(f.value()).into(),
            Header::To(t) => *t = tighten(t.value()).into(),
            Header::Contact(c) => *c = tighten(c.value()).into(),
            _ => {}
        }
    }
    let call_id = req
        .call_id_header()
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if let Ok(from) = req.from_header_mut()
        && from.tag().ok().flatten().is_none()
    {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&(from.value(), call_id.as_str()), &mut hasher);
        let tag = std::hash::Hasher::finish(&hasher);
        let value = format!("{};tag=rfc2543-{tag:016x}", from.value());
        *from = value.into();
    }
    req
}

/// Request-Line checks the parser does not make (RFC 3261 7.1, 8.2.2.1, RFC 4475 3.1.2.7,
/// 3.3.3): one SP between elements, no `<>` around the Request-URI, a scheme we serve.
fn request_uri_problem(line: &str) -> Option<(u16, &'static str)> {
    let mut parts = line.split(' ');
    let (Some(_), Some(uri), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some((400, "Malformed Request-Line"));
    };
    if uri.contains(['<', '>']) {
        return Some((400, "Bad Request-URI"));
    }
    let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sip" | "sips" | "tel") => None,
        Some(_) => Some((416, "Unsupported URI Scheme")),
        None => Some((400, "Bad Request-URI")),
    }
}

/// Syntax the typed parsers let through: a quoted string left open, `<` without `>`, or an
/// empty parameter or list element (`;;`, `,,`, a trailing `;`), outside quotes and `<...>`.
fn well_formed(value: &str, list: bool) -> bool {
    let (mut quoted, mut escaped, mut angle) = (false, false, 0i32);
    let mut segment_empty = true;
    for c in value.chars() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            segment_empty = false;
            continue;
        }
        match c {
            '"' if angle == 0 => quoted = true,
            '<' => angle += 1,
            '>' => {
                angle -= 1;
                if angle < 0 {
                    return false;
                }
            }
            ';' if angle == 0 => {
                if segment_empty {
                    return false;
                }
                segment_empty = true;
                continue;
            }
            ',' if angle == 0 && list => {
                if segment_empty {
                    return false;
                }
                segment_empty = true;
                continue;
            }
            c if c.is_whitespace() => continue,
            _ => {}
        }
        segment_empty = false;
    }
    !quoted && angle == 0 && !segment_empty
}

/// Option tags we support in Require: RFC 4028 session timers.
pub const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

/// RFC 3261 8.2.2.3: the option tags of the Require headers of a request (not ACK or
/// CANCEL) that we do not support ([`SUPPORTED_EXTENSIONS`]), comma-joined, when there are
/// any: such a request gets 420 Bad Extension listing them in Unsupported. (Proxy-Require is
/// for proxies; a UAS ignores it.)
fn required_extensions(req: &Request) -> Option<String> {
    if matches!(req.method, Method::Ack | Method::Cancel) {
        return None;
    }
    let tags: Vec<String> = req
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Require(r) => Some(r.value().to_owned()),
            _ => None,
        })
        .flat_map(|v| {
            v.split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty() && is_token(t))
                .filter(|t| {
                    !SUPPORTED_EXTENSIONS
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(t))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}

/// A final response to a refused request, or `Drop` when the kind of message or its head
/// does not allow one.
fn refuse(kind: Kind, head: &[u8], status: u16, reason: Cow<'static, str>) -> Inspection {
    if kind != Kind::Request {
        return Inspection::Drop(match kind {
            Kind::Response => "broken response",
            _ => "broken ACK",
        });
    }
    match crate::udp::raw_error_response(head, status, &reason) {
        Some(response) => Inspection::Reply {
            status,
            reason,
            response,
        },
        None => Inspection::Drop("broken request without the headers to answer it"),
    }
}

/// The head of a datagram: everything before the blank line, or the whole datagram.
fn head_of(datagram: &[u8]) -> &[u8] {
    datagram
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(datagram, |end| &datagram[..end])
}

/// Decides what happens to one datagram received from `from` (see the module docs).
pub fn inspect(datagram: &[u8], from: SocketAddr) -> Inspection {
    inspect_message(datagram, from, STACK_BUFFER)
}

/// [`inspect`] for one message of a message-framed transport (a WebSocket message carries
/// exactly one SIP message, RFC 7118 section 5), passing messages up to `max_len` bytes.
pub fn inspect_message(datagram: &[u8], from: SocketAddr, max_len: usize) -> Inspection {
    // Keep-alives (RFC 5626 CRLF) go to the stack, which answers them.
    if datagram.iter().all(|b| b.is_ascii_whitespace()) {
        return Inspection::Pass(datagram.to_vec());
    }
    let kind = kind_of(datagram);
    let frame = match frame_datagram(datagram) {
        Ok(frame) => frame,
        Err(e) => {
            let head = head_of(datagram);
            let (status, reason): (u16, Cow<'static, str>) = match e {
                FrameError::TooLarge(_) => (513, "Message Too Large".into()),
                FrameError::Truncated { .. } => (400, "Content-Length Exceeds Body".into()),
                FrameError::BadContentLength => (400, "Bad Content-Length".into()),
                FrameError::Malformed("no end of headers") => (400, "Truncated Message".into()),
                FrameError::Malformed(_) => match start_line(datagram) {
                    Some(line) if kind == Kind::Request => request_line_problem(line, head),
                    _ => (400, "Bad Request".into()),
                },
            };
            return refuse(kind, head, status, reason);
        }
    };
    let mut bytes: Vec<u8> = Vec::with_capacity(frame.head.len() + frame.body.len() + 32);
    bytes.extend_from_slice(frame.head);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(frame.body);
    let unparsable = || {
        let (status, reason) = match start_line(datagram) {
            Some(line) if kind == Kind::Request => request_line_problem(line, frame.head),
            _ => (400, "Bad Request".into()),
        };
        refuse(kind, frame.head, status, reason)
    };
    let Ok(mut parsed) = SipMessage::try_from(bytes.as_slice()) else {
        return unparsable();
    };
    // RFC 3261 18.3: without Content-Length, a UDP body runs to the end of the datagram, but
    // rsipstack's parser reads "no Content-Length" as an empty body. Say it explicitly.
    let has_length = parsed
        .headers()
        .iter()
        .any(|h| matches!(h, Header::ContentLength(_)));
    if !has_length && !frame.body.is_empty() {
        bytes.truncate(frame.head.len());
        bytes.extend_from_slice(format!("\r\nContent-Length: {}", frame.body.len()).as_bytes());
        bytes.extend_from_slice(b"\r\n\r\n");
        bytes.extend_from_slice(frame.body);
        let Ok(with_length) = SipMessage::try_from(bytes.as_slice()) else {
            return unparsable();
        };
        parsed = with_length;
    }
    match parsed {
        SipMessage::Response(resp) => {
            let code = resp.status_code.code();
            if !(100..=699).contains(&code) {
                return Inspection::Drop("status code out of range");
            }
            let cseq = resp.cseq_header().and_then(|c| c.typed());
            if resp.via_header().is_err() || cseq.is_err() {
                return Inspection::Drop("response without Via or with a bad CSeq");
            }
        }
        SipMessage::Request(req) => {
            if let Some((status, reason)) = start_line(datagram).and_then(request_uri_problem) {
                return refuse(kind, frame.head, status, reason.into());
            }
            let required = required_extensions(&req);
            if let Err((status, reason)) = stack_accepts(&req, from) {
                // Legal LWS or an RFC 2543 peer can trip rsipstack; retry on a repaired copy
                // and pass that on, else answer with what was wrong with the original.
                let repaired = repair(req);
                if stack_accepts(&repaired, from).is_err() {
                    return refuse(kind, frame.head, status, reason.into());
                }
                bytes = SipMessage::Request(repaired).to_bytes();
            }
            if let Some(unsupported) = required {
                return match crate::udp::raw_error_response_with(
                    frame.head,
                    420,
                    "Bad Extension",
                    &format!("Unsupported: {unsupported}\r\n"),
                ) {
                    Some(response) => Inspection::Reply {
                        status: 420,
                        reason: "Bad Extension".into(),
                        response,
                    },
                    None => Inspection::Drop("request without the headers to answer it"),
                };
            }
        }
    }
    if bytes.len() > max_len {
        return refuse(kind, frame.head, 513, "Message Too Large".into());
    }
    Inspection::Pass(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FROM: &str = "192.0.2.7:5070";

    fn addr() -> SocketAddr {
        FROM.parse().unwrap()
    }

    /// An OPTIONS request with `headers` replaced: each `(name, Some(value))` replaces or adds
    /// a header, `(name, None)` removes it.
    fn request(start: &str, changes: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut headers = vec![
            (
                "Via",
                "SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-t1".to_owned(),
            ),
            ("Max-Forwards", "70".to_owned()),
            ("From", "<sip:alice@example.com>;tag=a1".to_owned()),
            ("To", "<sip:gw@example.net>".to_owned()),
            ("Call-ID", "call-1@192.0.2.7".to_owned()),
            ("CSeq", "1 OPTIONS".to_owned()),
            ("Content-Length", "0".to_owned()),
        ];
        for (name, value) in changes {
            headers.retain(|(n, _)| n != name);
            if let Some(v) = value {
                headers.insert(headers.len() - 1, (name, (*v).to_owned()));
            }
        }
        let mut out = format!("{start}\r\n");
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn options(changes: &[(&str, Option<&str>)]) -> Vec<u8> {
        request("OPTIONS sip:gw@example.net SIP/2.0", changes)
    }

    fn reply_of(i: &Inspection) -> (u16, String, String) {
        match i {
            Inspection::Reply {
                status,
                reason,
                response,
            } => (
                *status,
                reason.to_string(),
                String::from_utf8_lossy(response).into_owned(),
            ),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_passes_and_parses() {
        let d = options(&[]);
        let Inspection::Pass(bytes) = inspect(&d, addr()) else {
            panic!("not passed")
        };
        assert_eq!(bytes, d);
        assert!(SipMessage::try_from(bytes.as_slice()).is_ok());
    }

    #[test]
    fn keepalives_pass_untouched() {
        assert_eq!(
            inspect(b"\r\n\r\n", addr()),
            Inspection::Pass(b"\r\n\r\n".to_vec())
        );
    }

    #[test]
    fn missing_mandatory_headers_get_a_400_naming_them() {
        for (name, reason) in [
            ("Call-ID", "Missing Call-ID"),
            ("From", "Missing From"),
            ("To", "Missing To"),
        ] {
            let i = inspect(&options(&[(name, None)]), addr());
            let (status, r, text) = reply_of(&i);
            assert_eq!((status, r.as_str()), (400, reason));
            assert!(
                text.starts_with(&format!("SIP/2.0 400 {reason}\r\n")),
                "{text}"
            );
            assert!(text.contains("Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-t1\r\n"));
            assert!(text.contains("CSeq: 1 OPTIONS\r\n"));
        }
    }

    #[test]
    fn bad_header_values_get_a_400() {
        for (change, reason) in [
            (("CSeq", Some("1 INVITE")), "CSeq Method Mismatch"),
            (("CSeq", Some("abc OPTIONS")), "Bad CSeq"),
            (("CSeq", Some("4294967296 OPTIONS")), "Bad CSeq"),
            (("Max-Forwards", Some("ten")), "Bad Max-Forwards"),
            (("Max-Forwards", Some("300")), "Bad Max-Forwards"),
            (
                ("Contact", Some("sip:a@b?Route=%3Csip:x%3E")),
                "Bad Contact",
            ),
            (("Via", Some("SIP/2.0/UDP ;;;;")), "Bad Via"),
            (("To", Some("<sip:@:>;;")), "Bad To"),
        ] {
            let i = inspect(&options(&[change]), addr());
            assert_eq!(reply_of(&i).0, 400, "{change:?}");
            assert_eq!(reply_of(&i).1, reason, "{change:?}");
        }
        let mut twice = options(&[]);
        let at = twice.len() - 2;
        twice.splice(at..at, b"Call-ID: other@x\r\n".iter().copied());
        assert_eq!(reply_of(&inspect(&twice, addr())).1, "Multiple Call-ID");
    }

    #[test]
    fn without_via_or_cseq_a_broken_request_is_dropped() {
        assert!(matches!(
            inspect(&options(&[("Via", None)]), addr()),
            Inspection::Drop(_)
        ));
        assert!(matches!(
            inspect(&options(&[("CSeq", None)]), addr()),
            Inspection::Drop(_)
        ));
    }

    #[test]
    fn unparsable_request_lines() {
        let unknown = request(
            "FOOBAR sip:gw@example.net SIP/2.0",
            &[("CSeq", Some("1 FOOBAR"))],
        );
        assert_eq!(reply_of(&inspect(&unknown, addr())).0, 501);
        let mismatch = request(
            "FOOBAR sip:gw@example.net SIP/2.0",
            &[("CSeq", Some("1 INVITE"))],
        );
        let (status, reason, _) = reply_of(&inspect(&mismatch, addr()));
        assert_eq!((status, reason.as_str()), (400, "CSeq Method Mismatch"));
        let uri_headers = request("OPTIONS sip:gw@example.net?Route=x SIP/2.0", &[]);
        assert_eq!(reply_of(&inspect(&uri_headers, addr())).0, 400);
        let version = request("OPTIONS sip:gw@example.net SIP/7.0", &[]);
        assert_eq!(reply_of(&inspect(&version, addr())).0, 505);
        let scheme = request("OPTIONS nobodyknows:gw@example.net SIP/2.0", &[]);
        assert_eq!(reply_of(&inspect(&scheme, addr())).0, 416);
        let no_host = request("OPTIONS sip: SIP/2.0", &[]);
        let (status, reason, _) = reply_of(&inspect(&no_host, addr()));
        assert_eq!((status, reason.as_str()), (400, "Bad Request-URI"));
        let spaces = request("OPTIONS  sip:gw@example.net   SIP/2.0", &[]);
        assert!(!matches!(inspect(&spaces, addr()), Inspection::Drop(_)));
    }

    /// RFC 4475 3.1.1.1 (wsinv): LWS around `/`, `;` and `=` is legal but trips rsipstack's
    /// Via and tag parsers, and the endpoint then drops the request unanswered.
    #[test]
    fn legal_lws_is_tightened_so_the_stack_takes_it() {
        let d = options(&[
            (
                "Via",
                Some("SIP  /   2.0\r\n /UDP\r\n    192.0.2.7:5070;branch=z9hG4bK-t2"),
            ),
            (
                "From",
                Some("\"J R \\\"\"   <sip:a@example.com> ;\r\n  tag = 98asjd8"),
            ),
        ]);
        let Inspection::Pass(bytes) = inspect(&d, addr()) else {
            panic!("not passed: {:?}", inspect(&d, addr()))
        };
        let Ok(SipMessage::Request(req)) = SipMessage::try_from(bytes.as_slice()) else {
            panic!("does not parse")
        };
        assert!(TransactionKey::from_request(&req, TransactionRole::Server).is_ok());
        let tag = req.from_header().and_then(|f| f.tag()).ok().flatten();
        assert_eq!(tag.map(|t| t.to_string()).as_deref(), Some("98asjd8"));
        assert_eq!(
            tighten(" SIP / 2.0 / UDP  h ;  a = b , x"),
            "SIP/2.0/UDP h;a=b,x"
        );
        assert_eq!(
            tighten("\"a ; b\"  < sip:x ; y >"),
            "\"a ; b\" < sip:x ; y >"
        );
    }

    /// RFC 4475 3.4.1 (inv2543): an RFC 2543 request has no From tag; rsipstack cannot key a
    /// transaction without one and dropped it. It gets the same tag on every retransmission.
    #[test]
    fn a_from_without_tag_gets_a_stable_one() {
        let d = options(&[("From", Some("<sip:+13035551111@example.net;user=phone>"))]);
        let Inspection::Pass(a) = inspect(&d, addr()) else {
            panic!("not passed")
        };
        assert_eq!(inspect(&d, addr()), Inspection::Pass(a.clone()));
        let Ok(SipMessage::Request(req)) = SipMessage::try_from(a.as_slice()) else {
            panic!("does not parse")
        };
        let tag = req.from_header().and_then(|f| f.tag()).ok().flatten();
        assert!(tag.is_some_and(|t| t.to_string().starts_with("rfc2543-")));
        // Without Content-Length either (inv2543): the repaired copy keeps the body.
        let mut d = options(&[
            ("From", Some("<sip:+13035551111@example.net;user=phone>")),
            ("Content-Length", None),
        ]);
        d.extend_from_slice(b"v=0\r\n");
        let Inspection::Pass(b) = inspect(&d, addr()) else {
            panic!("not passed")
        };
        let Ok(SipMessage::Request(req)) = SipMessage::try_from(b.as_slice()) else {
            panic!("does not parse")
        };
        assert_eq!(req.body, b"v=0\r\n");
    }

    #[test]
    fn syntax_the_parsers_let_through_gets_400() {
        for (change, reason) in [
            (("To", Some("\"Mr. J. User <sip:j@example.com>")), "Bad To"),
            (("Via", Some("SIP/2.0/UDP 192.0.2.15;;,;,,")), "Bad Via"),
            (
                ("Contact", Some("\"Joe\" <sip:joe@example.org>;;;;")),
                "Bad Contact",
            ),
            (("From", Some("<sip:a@example.com;tag=1")), "Bad From"),
        ] {
            let (status, r, _) = reply_of(&inspect(&options(&[change]), addr()));
            assert_eq!((status, r.as_str()), (400, reason), "{change:?}");
        }
        // Semicolons inside <...> and quotes are not parameters.
        let d = options(&[("To", Some("\"a;;b\" <sip:x;;y@example.com>"))]);
        assert!(matches!(inspect(&d, addr()), Inspection::Pass(_)));
        let ltgt = request("OPTIONS <sip:gw@example.net> SIP/2.0", &[]);
        assert_eq!(reply_of(&inspect(&ltgt, addr())).1, "Bad Request-URI");
        let novel = request("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", &[]);
        assert_eq!(reply_of(&inspect(&novel, addr())).0, 416);
    }

    #[test]
    fn require_timer_is_supported() {
        let d = options(&[("Require", Some("timer"))]);
        assert!(matches!(inspect(&d, addr()), Inspection::Pass(_)));
    }

    #[test]
    fn required_extensions_get_420_with_unsupported() {
        let d = options(&[("Require", Some("foo, bar"))]);
        let (status, _, text) = reply_of(&inspect(&d, addr()));
        assert_eq!(status, 420);
        assert!(text.contains("Unsupported: foo, bar\r\n"), "{text}");
        let d = options(&[("Proxy-Require", Some("foo"))]);
        assert!(matches!(inspect(&d, addr()), Inspection::Pass(_)));
    }

    #[test]
    fn framing_refusals_are_answered() {
        let long = options(&[("Content-Length", Some("100"))]);
        let (status, reason, _) = reply_of(&inspect(&long, addr()));
        assert_eq!(
            (status, reason.as_str()),
            (400, "Content-Length Exceeds Body")
        );
        let bad = options(&[("Content-Length", Some("-1"))]);
        assert_eq!(reply_of(&inspect(&bad, addr())).1, "Bad Content-Length");
        let big = options(&[("X-Big", Some(&"a".repeat(9000)))]);
        assert_eq!(reply_of(&inspect(&big, addr())).0, 513);
        let over_buffer = options(&[("X-Big", Some(&"a".repeat(8000))), ("X-B", Some("b"))]);
        assert_eq!(reply_of(&inspect(&over_buffer, addr())).0, 513);
    }

    #[test]
    fn responses_and_acks_are_never_answered() {
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-x\r\n\
                   From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\n\
                   CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(inspect(ok, addr()), Inspection::Pass(_)));
        let weird = String::from_utf8_lossy(ok).replace("200 OK", "999 Nope");
        assert!(matches!(
            inspect(weird.as_bytes(), addr()),
            Inspection::Drop(_)
        ));
        let short = String::from_utf8_lossy(ok).replace("Content-Length: 0", "Content-Length: 9");
        assert!(matches!(
            inspect(short.as_bytes(), addr()),
            Inspection::Drop(_)
        ));
        let ack = request(
            "ACK sip:gw@example.net SIP/2.0",
            &[("CSeq", Some("1 ACK")), ("Call-ID", None)],
        );
        assert!(matches!(inspect(&ack, addr()), Inspection::Drop(_)));
    }

    #[test]
    fn garbage_is_dropped() {
        for g in [
            &b"\x00\x01\x02\xff"[..],
            b"hello",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\r\n\r\nINVITE",
        ] {
            assert!(matches!(inspect(g, addr()), Inspection::Drop(_)), "{g:?}");
        }
    }

    /// RFC 3261 18.3 over UDP: no Content-Length means the body is the rest of the datagram.
    /// rsipstack alone would read an empty body (an INVITE's SDP offer would be lost).
    #[test]
    fn a_body_without_content_length_is_kept() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\n";
        let mut d = options(&[
            ("Content-Length", None),
            ("Content-Type", Some("application/sdp")),
        ]);
        d.extend_from_slice(sdp.as_bytes());
        let Inspection::Pass(bytes) = inspect(&d, addr()) else {
            panic!("not passed")
        };
        let Ok(SipMessage::Request(req)) = SipMessage::try_from(bytes.as_slice()) else {
            panic!("does not parse")
        };
        assert_eq!(req.body, sdp.as_bytes());
    }

    #[test]
    fn extra_bytes_after_content_length_are_cut() {
        let mut d = options(&[("Content-Length", Some("3"))]);
        d.extend_from_slice(b"v=0garbage");
        let Inspection::Pass(bytes) = inspect(&d, addr()) else {
            panic!("not passed")
        };
        assert!(bytes.ends_with(b"\r\n\r\nv=0"));
    }

    proptest::proptest! {
        #[test]
        fn inspect_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
            let _ = inspect(&bytes, addr());
        }

        #[test]
        fn passed_messages_parse(
            drop in proptest::collection::vec(0usize..7, 0..3),
            value in "[ -~]{0,12}",
            at in 0usize..7,
        ) {
            let names = ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Content-Length"];
            let mut changes: Vec<(&str, Option<&str>)> = drop.iter().map(|i| (names[*i], None)).collect();
            changes.push((names[at], Some(value.as_str())));
            let d = options(&changes);
            match inspect(&d, addr()) {
                Inspection::Pass(bytes) => {
                    let parsed = SipMessage::try_from(bytes.as_slice());
                    proptest::prop_assert!(parsed.is_ok());
                }
                Inspection::Reply { response, .. } => {
                    proptest::prop_assert!(SipMessage::try_from(response.as_slice()).is_ok());
                }
                Inspection::Drop(_) => {}
            }
        }
    }
}
