//! The SIP UDP socket as rsipstack sees it, with our own checks in front of its parser.
//!
//! rsipstack's UDP transport parses whatever arrives. [`FramedUdpSocket`] sits between the
//! kernel socket and that parser: it drops datagrams from banned sources before any parsing,
//! applies [`crate::framing::frame_datagram`] (size limits, RFC 3261 18.3: a Content-Length larger
//! than the body is refused, bytes beyond it are cut off) and answers a refused request with a
//! 400 built from its raw headers, so a broken message costs one small reply and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::UdpSocket;

use crate::framing::{FrameError, MAX_MESSAGE, frame_datagram};

/// Decides, before parsing, whether a source may talk to us at all (the ban list).
pub trait SourceFilter: Send + Sync + 'static {
    fn allowed(&self, ip: IpAddr) -> bool;
}

/// Counters of what the edge refused, for metrics and tests.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    pub refused: std::sync::atomic::AtomicU64,
    pub banned: std::sync::atomic::AtomicU64,
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
/// headers a response must echo (RFC 3261 8.2.6.2). `None` for responses, ACKs, and heads too
/// broken to answer.
pub fn raw_error_response(head: &[u8], status: u16, reason: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let method = start.split(' ').next()?;
    if start.starts_with("SIP/2.0") || method.eq_ignore_ascii_case("ACK") || method.is_empty() {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    let mut have = 0;
    for line in lines {
        let Some((name, _)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
        ) {
            out.push_str(line);
            out.push_str("\r\n");
            have += 1;
        }
    }
    if have < 5 {
        return None;
    }
    out.push_str("Server: switchboard\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// The head of a datagram, for answering a refused one: everything before the blank line, or
/// the whole datagram if there is none.
fn head_of(datagram: &[u8]) -> &[u8] {
    datagram
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(datagram, |end| &datagram[..end])
}

#[async_trait]
impl rsipstack::platform::net::UdpSocket for FramedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut raw = self.raw.lock().await;
        loop {
            let (len, from) = self.socket.recv_from(&mut raw).await?;
            let datagram = &raw[..len];
            if !self.filter.allowed(from.ip()) {
                self.counters
                    .banned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            // Keep-alives (RFC 5626 CRLF) go to the stack, which answers them.
            if datagram.iter().all(|b| b.is_ascii_whitespace()) {
                let n = len.min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                return Ok((n, from));
            }
            let refusal = match frame_datagram(datagram) {
                Ok(frame) => {
                    let total = frame.head.len() + 4 + frame.body.len();
                    if total <= buf.len() {
                        buf[..frame.head.len()].copy_from_slice(frame.head);
                        buf[frame.head.len()..frame.head.len() + 4].copy_from_slice(b"\r\n\r\n");
                        buf[frame.head.len() + 4..total].copy_from_slice(frame.body);
                        return Ok((total, from));
                    }
                    (513, "Message Too Large")
                }
                Err(FrameError::TooLarge(_)) => (513, "Message Too Large"),
                Err(FrameError::Truncated { .. }) => (400, "Content-Length Exceeds Body"),
                Err(FrameError::BadContentLength) => (400, "Bad Content-Length"),
                Err(FrameError::Malformed(_)) => (400, "Bad Request"),
            };
            self.counters
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%from, status = refusal.0, "refused SIP datagram");
            if let Some(reply) = raw_error_response(head_of(datagram), refusal.0, refusal.1) {
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
