//! The SIP UDP socket as rsipstack sees it, with our own checks in front of its parser.
//!
//! rsipstack's UDP transport parses whatever arrives and drops, without a word, what it cannot
//! parse. [`FramedUdpSocket`] sits between the kernel socket and that parser: it drops
//! datagrams from banned sources before any parsing, then hands each datagram to
//! [`crate::inspect::inspect`] (framing, a trial parse, RFC 3261 8.2 validity) and either
//! passes the framed message on or answers a broken request itself (400 naming the problem,
//! 501, 505, 513) with a response built from its raw headers by [`raw_error_response`], so a
//! broken message costs one small reply and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::UdpSocket;

use crate::framing::MAX_MESSAGE;
use crate::inspect::{Inspection, inspect};

/// Decides, before parsing, whether a source may talk to us at all (the ban list).
pub trait SourceFilter: Send + Sync + 'static {
    fn allowed(&self, ip: IpAddr) -> bool;
}

/// Counters of what the edge refused (Prometheus counters, see [`crate::metrics`]).
#[derive(Debug, Clone)]
pub struct EdgeCounters {
    pub refused: prometheus::IntCounter,
    pub banned: prometheus::IntCounter,
}

impl EdgeCounters {
    pub fn new(metrics: &crate::metrics::GatewayMetrics) -> Self {
        Self {
            refused: metrics.edge_refused.with_label_values(&["malformed"]),
            banned: metrics.edge_refused.with_label_values(&["banned"]),
        }
    }
}

/// A UDP socket whose `recv_from` only returns framed, size-checked SIP messages.
pub struct FramedUdpSocket {
    socket: UdpSocket,
    filter: Arc<dyn SourceFilter>,
    counters: Arc<EdgeCounters>,
    /// One receive buffer, reused: only the transport's serve loop receives.
    raw: tokio::sync::Mutex<Vec<u8>>,
}

impl FramedUdpSocket {
    pub fn new(
        socket: UdpSocket,
        filter: Arc<dyn SourceFilter>,
        counters: Arc<EdgeCounters>,
    ) -> Self {
        Self {
            socket,
            filter,
            counters,
            raw: tokio::sync::Mutex::new(vec![0u8; MAX_MESSAGE + 1]),
        }
    }
}

/// Builds `SIP/2.0 <status> <reason>` for a request from its raw header block, copying the
/// headers a response must echo (RFC 3261 8.2.6.2: every Via, From, To, Call-ID, CSeq; a To
/// without a tag gets one). `None` for responses, ACKs, and heads too broken to answer: the
/// peer matches a response to its request by the top Via branch and the CSeq (RFC 3261
/// 17.1.3), so without a Via and a CSeq line there is nobody to answer.
pub fn raw_error_response(head: &[u8], status: u16, reason: &str) -> Option<Vec<u8>> {
    raw_error_response_with(head, status, reason, "")
}

/// [`raw_error_response`] with `extra` header lines (each ending in CRLF) added.
pub fn raw_error_response_with(
    head: &[u8],
    status: u16,
    reason: &str,
    extra: &str,
) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let method = start.split([' ', '\t']).next()?;
    if start.starts_with("SIP/") || method.eq_ignore_ascii_case("ACK") || method.is_empty() {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    let (mut via, mut from, mut to, mut call_id, mut cseq) = (false, false, false, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let seen = match name.as_str() {
            "via" | "v" => {
                via = true;
                false
            }
            "from" | "f" => std::mem::replace(&mut from, true),
            "to" | "t" => {
                if std::mem::replace(&mut to, true) {
                    continue;
                }
                out.push_str(line);
                if !value.to_ascii_lowercase().contains("tag=") {
                    out.push_str(";tag=sb-refused");
                }
                out.push_str("\r\n");
                continue;
            }
            "call-id" | "i" => std::mem::replace(&mut call_id, true),
            "cseq" => std::mem::replace(&mut cseq, true),
            _ => continue,
        };
        if !seen {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !(via && cseq) {
        return None;
    }
    out.push_str(extra);
    out.push_str("Server: switchboard\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

#[async_trait]
impl rsipstack::platform::net::UdpSocket for FramedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut raw = self.raw.lock().await;
        loop {
            let (len, from) = self.socket.recv_from(&mut raw).await?;
            let datagram = &raw[..len];
            if !self.filter.allowed(from.ip()) {
                self.counters.banned.inc();
                continue;
            }
            let (status, reason, reply) = match inspect(datagram, from) {
                Inspection::Pass(bytes) => {
                    // `inspect` passes nothing larger than the stack's buffer; a caller with a
                    // smaller one gets the message cut, which the stack then refuses.
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    return Ok((n, from));
                }
                Inspection::Reply {
                    status,
                    reason,
                    response,
                } => (status, reason, Some(response)),
                Inspection::Drop(why) => (0, why.into(), None),
            };
            self.counters.refused.inc();
            tracing::debug!(%from, status, %reason, "refused SIP datagram");
            if let Some(reply) = reply {
                let _ = self.socket.send_to(&reply, from).await;
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "INVITE sip:+15550100100@gw SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 500";

    #[test]
    fn error_response_echoes_the_dialog_headers() {
        let reply = raw_error_response(HEAD.as_bytes(), 400, "Bad Request").unwrap_or_default();
        let text = String::from_utf8(reply).unwrap_or_default();
        assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"));
        for h in [
            "Via: SIP/2.0/UDP",
            "From: <sip:a@x>;tag=1",
            // RFC 3261 8.2.6.2: a To without a tag gets one.
            "To: <sip:b@y>;tag=sb-refused\r\n",
            "Call-ID: c1",
            "CSeq: 1 INVITE",
        ] {
            assert!(text.contains(h), "{h} missing in {text}");
        }
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn no_error_response_for_responses_acks_or_garbage() {
        assert!(raw_error_response(b"SIP/2.0 200 OK\r\nVia: x", 400, "x").is_none());
        let ack = HEAD.replacen("INVITE", "ACK", 1);
        assert!(raw_error_response(ack.as_bytes(), 400, "x").is_none());
        assert!(raw_error_response(b"\x00\xff garbage", 400, "x").is_none());
    }
}
