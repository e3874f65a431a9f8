//! SIP message framing at the transport edge, before any parser sees the bytes.
//!
//! RFC 3261 18.3: over UDP, a message whose Content-Length is larger than the body it carries
//! must be discarded (parsers tend to accept it), and bytes beyond Content-Length are ignored.
//! Over TCP, Content-Length is mandatory and delimits messages in the stream, so framing answers
//! `Incomplete` until a whole message has arrived (as mini-redis does for its frames). Limits
//! on size, header count and line length apply to both, so a peer cannot make us buffer or scan
//! without bound.

/// Largest SIP message we accept (UDP datagrams are smaller; TCP peers get cut off here).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most header lines in one message.
pub const MAX_HEADERS: usize = 100;
/// Longest header line.
pub const MAX_LINE: usize = 8 * 1024;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_MESSAGE`], too many headers or a line too long.
    TooLarge(&'static str),
    /// No blank line ends the headers (UDP), or the start line is not SIP.
    Malformed(&'static str),
    /// Content-Length missing (required on TCP), unparsable, or given twice differently.
    BadContentLength,
    /// UDP: Content-Length says more than the datagram carries (RFC 3261 18.3: discard).
    Truncated { declared: usize, present: usize },
}

/// A framed message: header block and body, borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Start line and headers, without the blank line.
    pub head: &'a [u8],
    pub body: &'a [u8],
    /// Bytes of input this message used (TCP: where the next one starts).
    pub consumed: usize,
}

/// Result of trying to frame a TCP stream buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame<'a> {
    Complete(Frame<'a>),
    /// Read more bytes and try again.
    Incomplete,
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Scans the header block for limits and the Content-Length (`Content-Length` or compact `l`).
fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    let text =
        std::str::from_utf8(head).map_err(|_| FrameError::Malformed("headers are not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default();
    if !(start.ends_with("SIP/2.0") || start.starts_with("SIP/2.0 ")) {
        return Err(FrameError::Malformed("start line is not SIP/2.0"));
    }
    let mut found: Option<usize> = None;
    for (i, line) in lines.enumerate() {
        if i >= MAX_HEADERS {
            return Err(FrameError::TooLarge("too many header lines"));
        }
        if line.len() > MAX_LINE {
            return Err(FrameError::TooLarge("header line too long"));
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| FrameError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(FrameError::BadContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Frames one UDP datagram. A missing Content-Length means the body runs to the end of the
/// datagram; one larger than the body is refused; extra bytes after it are dropped.
pub fn frame_datagram(datagram: &[u8]) -> Result<Frame<'_>, FrameError> {
    if datagram.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge("message over 64 KiB"));
    }
    let head_end = find_head_end(datagram).ok_or(FrameError::Malformed("no end of headers"))?;
    let head = &datagram[..head_end];
    let rest = &datagram[head_end + 4..];
    let body = match content_length(head)? {
        Some(declared) if declared > rest.len() => {
            return Err(FrameError::Truncated {
                declared,
                present: rest.len(),
            });
        }
        Some(declared) => &rest[..declared],
        None => rest,
    };
    Ok(Frame {
        head,
        body,
        consumed: datagram.len(),
    })
}

/// Frames the next message of a TCP stream buffer. Keep-alive CRLFs (RFC 5626) before a
/// message are skipped and counted in `consumed`.
pub fn frame_stream(buf: &[u8]) -> Result<StreamFrame<'_>, FrameError> {
    let skip = buf.chunks(2).take_while(|c| *c == b"\r\n").count() * 2;
    let msg = &buf[skip..];
    let Some(head_end) = find_head_end(msg) else {
        if msg.len() > MAX_MESSAGE {
            return Err(FrameError::TooLarge("headers over 64 KiB"));
        }
        return Ok(StreamFrame::Incomplete);
    };
    let head = &msg[..head_end];
    let declared = content_length(head)?.ok_or(FrameError::BadContentLength)?;
    let total = head_end + 4 + declared;
    if total > MAX_MESSAGE {
        return Err(FrameError::TooLarge("message over 64 KiB"));
    }
    if msg.len() < total {
        return Ok(StreamFrame::Incomplete);
    }
    Ok(StreamFrame::Complete(Frame {
        head,
        body: &msg[head_end + 4..total],
        consumed: skip + total,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn invite(declared: &str, body: &str) -> Vec<u8> {
        format!(
            "INVITE sip:+14155550100@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
             Call-ID: abc\r\nCSeq: 1 INVITE\r\n{declared}\r\n{body}"
        )
        .into_bytes()
    }

    #[test]
    fn udp_content_length_larger_than_body_is_refused() {
        let d = invite("Content-Length: 50\r\n", "v=0\r\n");
        assert_eq!(
            frame_datagram(&d),
            Err(FrameError::Truncated {
                declared: 50,
                present: 5
            })
        );
        let d = invite("l: 6\r\n", "v=0\r\n");
        assert!(
            matches!(frame_datagram(&d), Err(FrameError::Truncated { .. })),
            "compact form too"
        );
    }

    #[test]
    fn udp_extra_bytes_are_dropped_and_missing_length_means_rest() {
        let d = invite("Content-Length: 3\r\n", "v=0\r\ngarbage");
        assert_eq!(frame_datagram(&d).unwrap().body, b"v=0");
        let d = invite("", "v=0\r\n");
        assert_eq!(frame_datagram(&d).unwrap().body, b"v=0\r\n");
        let resp = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(frame_datagram(resp).unwrap().body, b"");
    }

    #[test]
    fn malformed_and_oversized_are_refused() {
        assert!(
            frame_datagram(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n").is_err(),
            "no blank line"
        );
        assert!(frame_datagram(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert_eq!(
            frame_datagram(&invite("Content-Length: x\r\n", "")),
            Err(FrameError::BadContentLength)
        );
        assert_eq!(
            frame_datagram(&invite("Content-Length: 1\r\nl: 2\r\n", "ab")),
            Err(FrameError::BadContentLength)
        );
        let many = format!(
            "OPTIONS sip:x SIP/2.0\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            frame_datagram(many.as_bytes()),
            Err(FrameError::TooLarge(_))
        ));
        let long = format!(
            "OPTIONS sip:x SIP/2.0\r\nX-A: {}\r\n\r\n",
            "a".repeat(MAX_LINE)
        );
        assert!(matches!(
            frame_datagram(long.as_bytes()),
            Err(FrameError::TooLarge(_))
        ));
        assert!(frame_datagram(&vec![b'a'; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn tcp_stream_framing() {
        let one = invite("Content-Length: 5\r\n", "v=0\r\n");
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&one);
        stream.extend_from_slice(&one[..20]);
        // A partial first message is Incomplete, never an error.
        for cut in 0..4 + one.len() {
            assert_eq!(
                frame_stream(&stream[..cut]).unwrap(),
                StreamFrame::Incomplete,
                "cut {cut}"
            );
        }
        let StreamFrame::Complete(f) = frame_stream(&stream).unwrap() else {
            panic!()
        };
        assert_eq!(f.body, b"v=0\r\n");
        assert_eq!(f.consumed, 4 + one.len());
        assert_eq!(
            frame_stream(&stream[f.consumed..]).unwrap(),
            StreamFrame::Incomplete
        );
        // TCP requires Content-Length.
        assert_eq!(
            frame_stream(&invite("", "")),
            Err(FrameError::BadContentLength)
        );
        // A declared body over the limit is refused before waiting for it.
        assert!(matches!(
            frame_stream(&invite("Content-Length: 999999\r\n", "")),
            Err(FrameError::TooLarge(_))
        ));
        // Headers that never end are refused once past the limit.
        let endless = format!(
            "OPTIONS sip:x SIP/2.0\r\n{}",
            "X: y\r\n".repeat(MAX_MESSAGE / 6 + 1)
        );
        assert!(frame_stream(endless.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn framing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = frame_datagram(&bytes);
            let _ = frame_stream(&bytes);
        }

        #[test]
        fn framing_never_panics_on_sip_shaped_input(
            head in "(INVITE sip:a SIP/2.0|SIP/2.0 200 OK)\r\n((Content-Length|l|Via): [0-9a-z ]{0,6}\r\n){0,5}\r\n",
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut m = head.into_bytes();
            m.extend_from_slice(&body);
            if let Ok(f) = frame_datagram(&m) {
                prop_assert!(f.body.len() <= body.len());
            }
            if let Ok(StreamFrame::Complete(f)) = frame_stream(&m) {
                prop_assert!(f.consumed <= m.len());
            }
        }
    }
}
