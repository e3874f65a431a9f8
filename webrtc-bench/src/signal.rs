//! The signalling between `gen` and `serve`, on a Unix socket: one message is a header line of
//! words whose last word is the length of a body that follows (an SDP, or 0). No SIP: the
//! benchmark measures media legs, not call setup.
//!
//! gen -> serve: `open ID CALLER_ADDR LEN` + the browser's offer; `status 0`; `close 0` (end
//! every call); `quit 0`.
//! serve -> gen: `ok ID CALLER_PORT LEN` + the answer, or `err ID REASON... 0`;
//! `status CONNECTED CLOSED CALLS 0`; `closed 0`.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest header line.
const MAX_HEAD: usize = 512;
/// Largest body (the endpoints' SDP limit).
pub const MAX_BODY: usize = 16 * 1024;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub words: Vec<String>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn new(words: &[&str], body: &[u8]) -> Self {
        Self {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            body: body.to_vec(),
        }
    }

    /// The words as `&str`, for matching.
    pub fn words(&self) -> Vec<&str> {
        self.words.iter().map(String::as_str).collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.words.join(" ").into_bytes();
        out.extend_from_slice(format!(" {}\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A header line (without its newline) -> its words and the body length.
pub fn parse_head(line: &str) -> Result<(Vec<String>, usize), String> {
    let mut words: Vec<String> = line.split_ascii_whitespace().map(str::to_owned).collect();
    let len = words
        .pop()
        .and_then(|l| l.parse::<usize>().ok())
        .ok_or_else(|| format!("no body length in {line:?}"))?;
    if words.is_empty() {
        return Err("empty message".into());
    }
    if len > MAX_BODY {
        return Err(format!("body of {len} bytes"));
    }
    Ok((words, len))
}

/// Reads one message; `None` at the end of the stream.
pub async fn read<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Message>, String> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err("header line too long or cut".into());
    }
    let text = std::str::from_utf8(&line).map_err(|_| "header is not UTF-8")?;
    let (words, len) = parse_head(text)?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok(Some(Message { words, body }))
}

pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<(), String> {
    w.write_all(&m.encode()).await.map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_with_and_without_body() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n";
        let open = Message::new(&["open", "7", "127.0.0.1:4000"], sdp);
        let status = Message::new(&["status"], b"");
        let mut wire = open.encode();
        wire.extend_from_slice(&status.encode());
        let mut r = &wire[..];
        assert_eq!(read(&mut r).await.unwrap(), Some(open));
        assert_eq!(read(&mut r).await.unwrap(), Some(status));
        assert_eq!(read(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        assert!(parse_head("open 7").is_ok());
        assert!(parse_head("open x").is_err(), "no length");
        assert!(parse_head("5").is_err(), "no words");
        assert!(parse_head(&format!("open {}", MAX_BODY + 1)).is_err());
        let long = vec![b'a'; MAX_HEAD + 10];
        assert!(read(&mut &long[..]).await.is_err());
        // A body shorter than announced.
        assert!(read(&mut &b"open 10\nabc"[..]).await.is_err());
    }
}
