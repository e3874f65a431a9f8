//! A minimal SDP (RFC 4566) offer/answer (RFC 3264) for one audio stream: enough for carriers
//! and desk phones (G.711 and telephone-event), with hold detected from the direction.
//!
//! Input is bounded (size, lines, media sections) and every malformed line is an error, never a
//! panic.

use std::fmt::Write as _;

use crate::MediaError;

pub const MAX_SDP_BYTES: usize = 16 * 1024;
pub const MAX_SDP_LINES: usize = 256;
pub const MAX_MEDIA: usize = 8;

/// Audio codecs we relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes for this offered direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// An offer of sendonly or inactive puts the other side on hold.
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<u8>,
    /// (payload type, encoding name, clock rate) from `a=rtpmap`.
    pub rtpmaps: Vec<(u8, String, u32)>,
    pub connection: Option<String>,
    pub direction: Direction,
    pub ptime: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    pub connection: Option<String>,
    pub media: Vec<Media>,
}

fn err(line: usize, reason: &'static str) -> MediaError {
    MediaError::Sdp { line, reason }
}

impl Sdp {
    pub fn parse(text: &str) -> Result<Self, MediaError> {
        if text.len() > MAX_SDP_BYTES {
            return Err(MediaError::SdpTooLarge("more than 16 KiB"));
        }
        let mut sdp = Sdp {
            connection: None,
            media: Vec::new(),
        };
        let mut session_direction = Direction::SendRecv;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            if n > MAX_SDP_LINES {
                return Err(MediaError::SdpTooLarge("more than 256 lines"));
            }
            let line = raw.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (kind, value) = line
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or(err(n, "expected <type>=<value>"))?;
            match kind {
                "c" => {
                    // c=IN IP4 203.0.113.5
                    let mut parts = value.split_whitespace();
                    let (Some("IN"), Some("IP4" | "IP6"), Some(addr), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return Err(err(n, "bad c= line"));
                    };
                    let addr = addr.split('/').next().unwrap_or(addr).to_owned();
                    match sdp.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sdp.connection = Some(addr),
                    }
                }
                "m" => {
                    if sdp.media.len() == MAX_MEDIA {
                        return Err(MediaError::SdpTooLarge("more than 8 media sections"));
                    }
                    let mut parts = value.split_whitespace();
                    let kind = parts.next().ok_or(err(n, "m= without media"))?.to_owned();
                    let port = parts
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or(err(n, "bad m= port"))?;
                    let proto = parts.next().ok_or(err(n, "m= without proto"))?.to_owned();
                    let formats = parts
                        .map(|f| f.parse::<u8>().ok().filter(|pt| *pt < 128))
                        .collect::<Option<Vec<_>>>()
                        .ok_or(err(n, "bad payload type in m="))?;
                    sdp.media.push(Media {
                        kind,
                        port,
                        proto,
                        formats,
                        rtpmaps: Vec::new(),
                        connection: None,
                        direction: session_direction,
                        ptime: None,
                    });
                }
                "a" => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    let direction = match name {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    match (direction, sdp.media.last_mut()) {
                        (Some(d), Some(m)) => m.direction = d,
                        (Some(d), None) => session_direction = d,
                        (None, Some(m)) if name == "rtpmap" => {
                            // a=rtpmap:0 PCMU/8000
                            let (pt, enc) = arg.split_once(' ').ok_or(err(n, "bad rtpmap"))?;
                            let pt = pt.parse::<u8>().map_err(|_| err(n, "bad rtpmap type"))?;
                            let mut enc = enc.trim().split('/');
                            let name = enc.next().unwrap_or_default().to_owned();
                            let rate = enc
                                .next()
                                .and_then(|r| r.parse().ok())
                                .ok_or(err(n, "bad rtpmap rate"))?;
                            m.rtpmaps.push((pt, name, rate));
                        }
                        (None, Some(m)) if name == "ptime" => {
                            m.ptime = Some(
                                arg.trim()
                                    .parse()
                                    .ok()
                                    .filter(|p| (10..=200).contains(p))
                                    .ok_or(err(n, "bad ptime"))?,
                            );
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Ok(sdp)
    }

    /// The first audio section, if any.
    pub fn audio(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.kind == "audio" && m.port != 0)
    }
}

impl Media {
    fn encoding_of(&self, pt: u8) -> Option<(String, u32)> {
        self.rtpmaps
            .iter()
            .find(|(p, _, _)| *p == pt)
            .map(|(_, n, r)| (n.to_ascii_uppercase(), *r))
            .or(match pt {
                0 => Some(("PCMU".into(), 8000)),
                8 => Some(("PCMA".into(), 8000)),
                _ => None,
            })
    }

    /// The offered telephone-event payload type at 8 kHz, if any.
    pub fn telephone_event(&self) -> Option<u8> {
        self.formats.iter().copied().find(|&pt| {
            self.encoding_of(pt)
                .is_some_and(|(n, r)| n == "TELEPHONE-EVENT" && r == 8000)
        })
    }
}

/// What we agreed for an audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    pub dtmf_pt: Option<u8>,
    pub remote_addr: String,
    pub remote_port: u16,
    /// The offerer's direction (hold when sendonly/inactive).
    pub offered: Direction,
}

/// Chooses the first offered codec we support (the offerer's preference order).
pub fn negotiate(offer: &Sdp, supported: &[Codec]) -> Result<Negotiated, MediaError> {
    let audio = offer.audio().ok_or(MediaError::NoCommonCodec)?;
    let codec = audio
        .formats
        .iter()
        .find_map(|&pt| {
            let (name, rate) = audio.encoding_of(pt)?;
            supported
                .iter()
                .copied()
                .find(|c| c.name() == name && rate == 8000 && c.payload_type() == pt)
        })
        .ok_or(MediaError::NoCommonCodec)?;
    let remote_addr = audio
        .connection
        .clone()
        .or_else(|| offer.connection.clone())
        .ok_or(MediaError::Sdp {
            line: 0,
            reason: "no connection address",
        })?;
    Ok(Negotiated {
        codec,
        dtmf_pt: audio.telephone_event(),
        remote_addr,
        remote_port: audio.port,
        offered: audio.direction,
    })
}

/// Renders our side: one audio stream at `addr:port` with `codec` (and telephone-event).
pub fn render(
    session_id: u64,
    version: u64,
    addr: &str,
    port: u16,
    codec: Codec,
    dtmf_pt: Option<u8>,
    direction: Direction,
) -> String {
    let mut s = String::with_capacity(256);
    let pt = codec.payload_type();
    let _ = write!(
        s,
        "v=0\r\no=switchboard {session_id} {version} IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
    );
    let _ = write!(s, "m=audio {port} RTP/AVP {pt}");
    if let Some(d) = dtmf_pt {
        let _ = write!(s, " {d}");
    }
    let _ = write!(s, "\r\na=rtpmap:{pt} {}/8000\r\n", codec.name());
    if let Some(d) = dtmf_pt {
        let _ = write!(
            s,
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
        );
    }
    let _ = write!(s, "a=ptime:20\r\na={}\r\n", direction.attr());
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=call\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn negotiates_offerers_first_supported_codec() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let n = negotiate(&sdp, &[Codec::Pcmu, Codec::Pcma]).unwrap();
        assert_eq!(n.codec, Codec::Pcma, "offerer's order wins");
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(
            (n.remote_addr.as_str(), n.remote_port),
            ("192.0.2.10", 40000)
        );
        assert!(!n.offered.is_hold());
        let n = negotiate(&sdp, &[Codec::Pcmu]).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
    }

    #[test]
    fn hold_and_static_payload_types() {
        let sdp =
            Sdp::parse("v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 5000 RTP/AVP 0\r\na=sendonly\r\n")
                .unwrap();
        let n = negotiate(&sdp, &[Codec::Pcmu]).unwrap();
        assert!(n.offered.is_hold());
        assert_eq!(n.offered.answer(), Direction::RecvOnly);
        assert_eq!(n.dtmf_pt, None);
    }

    #[test]
    fn answer_renders_and_parses_back() {
        let text = render(
            7,
            1,
            "127.0.0.1",
            30000,
            Codec::Pcmu,
            Some(101),
            Direction::SendRecv,
        );
        let sdp = Sdp::parse(&text).unwrap();
        let n = negotiate(&sdp, &[Codec::Pcmu]).unwrap();
        assert_eq!(
            (n.codec, n.dtmf_pt, n.remote_port),
            (Codec::Pcmu, Some(101), 30000)
        );
    }

    #[test]
    fn refuses_bad_or_oversized_input() {
        assert!(
            negotiate(
                &Sdp::parse("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 9\r\n").unwrap(),
                &[Codec::Pcmu]
            )
            .is_err()
        );
        assert!(Sdp::parse("m=audio notaport RTP/AVP 0").is_err());
        assert!(Sdp::parse("m=audio 5000 RTP/AVP 300").is_err());
        assert!(Sdp::parse("garbage").is_err());
        assert!(Sdp::parse("c=IN IP4").is_err());
        assert!(Sdp::parse(&"a=x\r\n".repeat(300)).is_err());
        assert!(Sdp::parse(&"x".repeat(MAX_SDP_BYTES + 1)).is_err());
        assert!(Sdp::parse(&"m=audio 1 RTP/AVP 0\r\n".repeat(9)).is_err());
        // No connection address anywhere.
        assert!(
            negotiate(
                &Sdp::parse("m=audio 5000 RTP/AVP 0").unwrap(),
                &[Codec::Pcmu]
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,400}") {
            if let Ok(sdp) = Sdp::parse(&text) {
                let _ = negotiate(&sdp, &[Codec::Pcmu, Codec::Pcma]);
            }
        }

        #[test]
        fn parse_never_panics_on_sdp_shaped_lines(lines in proptest::collection::vec(
            "(v|o|c|m|a|t|s)=[ -~]{0,40}", 0..30)) {
            let _ = Sdp::parse(&lines.join("\r\n"));
        }
    }
}
