//! The SDP decisions of a WebRTC leg, pure (text in, text or a refusal out): what a browser's
//! offer must carry, which codec we take, the offer str0m is shown (one audio m-line, only the
//! chosen formats: `red`, `rtx`, CN and the rest are never negotiated) and the m-lines we refuse
//! with port 0 in the answer (video, data channels).
//!
//! str0m does the offer/answer itself; these checks run before it so a bad offer gets a clear
//! reason (the gateway's 488 reason phrase) instead of a generic parse error.

use std::fmt::Write as _;

/// A codec a WebRTC leg can carry on the browser side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    Opus,
}

impl Codec {
    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    fn matches(self, name: &str, rate: u32) -> bool {
        name.eq_ignore_ascii_case(self.name()) && rate == self.clock_rate()
    }
}

/// Media direction of the audio m-line: the same type the gateway's plain SDP uses.
pub use switchboard_media::sdp::Direction;

/// Why an offer (or answer) is refused; [`SdpRefusal::reason`] is the 488's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpRefusal {
    TooLarge,
    NotText,
    NoAudio,
    SeveralAudio,
    NotWebrtc,
    NoRtcpMux,
    NoFingerprint,
    NoIceCredentials,
    NoCommonCodec,
    BadSetup,
}

impl SdpRefusal {
    /// A short reason for the SIP response (a `Warning` text).
    pub fn reason(self) -> &'static str {
        match self {
            SdpRefusal::TooLarge => "SDP too large",
            SdpRefusal::NotText => "SDP is not UTF-8 text",
            SdpRefusal::NoAudio => "no audio m-line",
            SdpRefusal::SeveralAudio => "more than one audio m-line",
            SdpRefusal::NotWebrtc => "not a WebRTC offer: UDP/TLS/RTP/SAVPF required",
            SdpRefusal::NoRtcpMux => "rtcp-mux required",
            SdpRefusal::NoFingerprint => "no DTLS fingerprint",
            SdpRefusal::NoIceCredentials => "no ICE credentials",
            SdpRefusal::NoCommonCodec => "no common codec (PCMU, PCMA or opus)",
            SdpRefusal::BadSetup => "DTLS setup must be actpass or active",
        }
    }
}

impl std::fmt::Display for SdpRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for SdpRefusal {}

/// The codec and telephone-event payload types a leg uses on the browser side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub codec: Codec,
    /// The codec's payload type on the browser side.
    pub pt: u8,
    /// Telephone-event payload types at 8 kHz and at 48 kHz, if negotiated.
    pub tele_8k: Option<u8>,
    pub tele_48k: Option<u8>,
}

/// An SDP cut into its session part and media sections (each starting with its `m=` line).
#[derive(Debug)]
struct Sections<'a> {
    session: Vec<&'a str>,
    media: Vec<Vec<&'a str>>,
}

fn sections(sdp: &str) -> Sections<'_> {
    let mut s = Sections {
        session: Vec::new(),
        media: Vec::new(),
    };
    for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            s.media.push(vec![line]);
        } else if let Some(m) = s.media.last_mut() {
            m.push(line);
        } else {
            s.session.push(line);
        }
    }
    s
}

/// `m=<kind> <port> <proto> <fmt>...` split.
struct MLine<'a> {
    kind: &'a str,
    port: &'a str,
    proto: &'a str,
    formats: Vec<&'a str>,
}

fn m_line(line: &str) -> Option<MLine<'_>> {
    let mut parts = line.strip_prefix("m=")?.split_ascii_whitespace();
    Some(MLine {
        kind: parts.next()?,
        port: parts.next()?,
        proto: parts.next()?,
        formats: parts.collect(),
    })
}

fn attr<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let rest = l.strip_prefix("a=")?;
        match rest.split_once(':') {
            Some((n, v)) if n == name => Some(v.trim()),
            None if rest == name => Some(""),
            _ => None,
        }
    })
}

/// rtpmap of `pt` in a media section: (encoding name, clock rate).
fn rtpmap<'a>(lines: &[&'a str], pt: &str) -> Option<(&'a str, u32)> {
    lines.iter().find_map(|l| {
        let rest = l.strip_prefix("a=rtpmap:")?;
        let (p, enc) = rest.split_once(' ')?;
        if p != pt {
            return None;
        }
        let mut e = enc.trim().split('/');
        let name = e.next()?;
        let rate = e.next()?.parse().ok()?;
        Some((name, rate))
    })
}

/// The encoding of `pt`: its rtpmap, or the static payload types 0 and 8.
fn encoding<'a>(lines: &[&'a str], pt: &str) -> Option<(&'a str, u32)> {
    rtpmap(lines, pt).or(match pt {
        "0" => Some(("PCMU", 8000)),
        "8" => Some(("PCMA", 8000)),
        _ => None,
    })
}

fn direction_of(lines: &[&str]) -> Option<Direction> {
    lines.iter().rev().find_map(|l| match *l {
        "a=sendrecv" => Some(Direction::SendRecv),
        "a=sendonly" => Some(Direction::SendOnly),
        "a=recvonly" => Some(Direction::RecvOnly),
        "a=inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

/// The audio m-line's direction (its own attribute, else the session's, else sendrecv).
pub fn audio_direction(sdp: &str) -> Direction {
    let s = sections(sdp);
    s.media
        .iter()
        .find(|m| m_line(m[0]).is_some_and(|m| m.kind == "audio"))
        .and_then(|m| direction_of(m))
        .or_else(|| direction_of(&s.session))
        .unwrap_or(Direction::SendRecv)
}

/// Which codec we take from a browser's list (in its order): the carrier's G.711 if offered,
/// else Opus, else the other G.711 (the relay converts between the laws), with the
/// telephone-event payload types.
fn choose(lines: &[&str], formats: &[&str], carrier: Codec) -> Result<Choice, SdpRefusal> {
    let find = |c: Codec| {
        formats.iter().find_map(|f| {
            let (name, rate) = encoding(lines, f)?;
            c.matches(name, rate)
                .then(|| f.parse::<u8>().ok())
                .flatten()
        })
    };
    let other_law = match carrier {
        Codec::Pcma => Codec::Pcmu,
        _ => Codec::Pcma,
    };
    let (codec, pt) = [carrier, Codec::Opus, other_law]
        .into_iter()
        .find_map(|c| Some((c, find(c)?)))
        .ok_or(SdpRefusal::NoCommonCodec)?;
    let tele = |rate: u32| {
        formats.iter().find_map(|f| {
            let (name, r) = rtpmap(lines, f)?;
            (name.eq_ignore_ascii_case("telephone-event") && r == rate)
                .then(|| f.parse::<u8>().ok())
                .flatten()
        })
    };
    Ok(Choice {
        codec,
        pt,
        tele_8k: tele(8000),
        tele_48k: tele(48000),
    })
}

/// A browser's offer made fit for str0m: one audio m-line with only the chosen formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedOffer {
    /// The offer str0m answers.
    pub sdp: String,
    pub choice: Choice,
    pub direction: Direction,
    /// The offer's m-lines in order: `None` for the audio one, else the port-0 line that
    /// refuses it in our answer.
    refused: Vec<Option<String>>,
    /// The BUNDLE group's mids other than audio's (they leave the group).
    bundle_dropped: Vec<String>,
}

/// Checks a browser's offer and picks the codec. `carrier` is the other leg's codec (Opus
/// there means "no preference": G.711 µ-law first).
pub fn check_offer(
    sdp: &[u8],
    max_bytes: usize,
    carrier: Codec,
) -> Result<CheckedOffer, SdpRefusal> {
    if sdp.len() > max_bytes {
        return Err(SdpRefusal::TooLarge);
    }
    let text = std::str::from_utf8(sdp).map_err(|_| SdpRefusal::NotText)?;
    let s = sections(text);
    let mut audio = None;
    let mut refused = Vec::with_capacity(s.media.len());
    let mut bundle_dropped = Vec::new();
    for (i, m) in s.media.iter().enumerate() {
        let Some(line) = m_line(m[0]) else {
            return Err(SdpRefusal::NoAudio);
        };
        if line.kind == "audio" && line.port != "0" {
            if audio.is_some() {
                return Err(SdpRefusal::SeveralAudio);
            }
            audio = Some(i);
            refused.push(None);
        } else {
            if let Some(mid) = attr(m, "mid") {
                bundle_dropped.push(mid.to_owned());
            }
            let fmt = line.formats.first().copied().unwrap_or("0");
            let mut stub = format!(
                "m={} 0 {} {fmt}\r\nc=IN IP4 0.0.0.0\r\n",
                line.kind, line.proto
            );
            if let Some(mid) = attr(m, "mid") {
                let _ = write!(stub, "a=mid:{mid}\r\n");
            }
            refused.push(Some(stub));
        }
    }
    let audio_index = audio.ok_or(SdpRefusal::NoAudio)?;
    let a = &s.media[audio_index];
    let line = m_line(a[0]).ok_or(SdpRefusal::NoAudio)?;
    if !line.proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVPF") {
        return Err(SdpRefusal::NotWebrtc);
    }
    if attr(a, "rtcp-mux").is_none() {
        return Err(SdpRefusal::NoRtcpMux);
    }
    if attr(a, "fingerprint")
        .or_else(|| attr(&s.session, "fingerprint"))
        .is_none_or(str::is_empty)
    {
        return Err(SdpRefusal::NoFingerprint);
    }
    let ufrag = attr(a, "ice-ufrag").or_else(|| attr(&s.session, "ice-ufrag"));
    let pwd = attr(a, "ice-pwd").or_else(|| attr(&s.session, "ice-pwd"));
    if ufrag.is_none_or(str::is_empty) || pwd.is_none_or(str::is_empty) {
        return Err(SdpRefusal::NoIceCredentials);
    }
    if let Some(setup) = attr(a, "setup").or_else(|| attr(&s.session, "setup"))
        && !matches!(setup, "actpass" | "active")
    {
        return Err(SdpRefusal::BadSetup);
    }
    let choice = choose(a, &line.formats, carrier)?;
    let keep: Vec<String> = [Some(choice.pt), choice.tele_8k, choice.tele_48k]
        .into_iter()
        .flatten()
        .map(|p| p.to_string())
        .collect();
    let direction = direction_of(a)
        .or_else(|| direction_of(&s.session))
        .unwrap_or(Direction::SendRecv);

    // Rebuild: the session part (BUNDLE group cut to audio's mid), then the audio section
    // with only the kept formats and their attributes.
    let mut out = String::with_capacity(text.len());
    for l in &s.session {
        if let Some(group) = l.strip_prefix("a=group:BUNDLE") {
            let mids: Vec<&str> = group
                .split_ascii_whitespace()
                .filter(|m| !bundle_dropped.iter().any(|d| d == m))
                .collect();
            if !mids.is_empty() {
                let _ = write!(out, "a=group:BUNDLE {}\r\n", mids.join(" "));
            }
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    let _ = write!(
        out,
        "m=audio {} {} {}\r\n",
        line.port,
        line.proto,
        keep.join(" ")
    );
    for l in &a[1..] {
        // Per-format attributes only for the formats we keep.
        let per_format = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
            .iter()
            .find_map(|p| l.strip_prefix(p));
        if let Some(rest) = per_format {
            let pt = rest.split([' ', ':']).next().unwrap_or("");
            if pt != "*" && !keep.iter().any(|k| k == pt) {
                continue;
            }
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    Ok(CheckedOffer {
        sdp: out,
        choice,
        direction,
        refused,
        bundle_dropped,
    })
}

impl CheckedOffer {
    /// Puts the refused m-lines (port 0) back into str0m's answer at their places, so the
    /// answer has as many m-lines as the offer (RFC 3264).
    pub fn complete_answer(&self, answer: &str) -> String {
        if self.refused.iter().all(Option::is_none) {
            return answer.to_owned();
        }
        let s = sections(answer);
        let mut out = String::with_capacity(answer.len() + 128);
        for l in &s.session {
            out.push_str(l);
            out.push_str("\r\n");
        }
        let mut ours = s.media.iter();
        for slot in &self.refused {
            match slot {
                Some(stub) => out.push_str(stub),
                None => {
                    if let Some(m) = ours.next() {
                        for l in m {
                            out.push_str(l);
                            out.push_str("\r\n");
                        }
                    }
                }
            }
        }
        out
    }
}

/// Reads the browser's answer to our offer: the first audio format it kept is what it sends.
pub fn check_answer(sdp: &[u8], max_bytes: usize) -> Result<Choice, SdpRefusal> {
    if sdp.len() > max_bytes {
        return Err(SdpRefusal::TooLarge);
    }
    let text = std::str::from_utf8(sdp).map_err(|_| SdpRefusal::NotText)?;
    let s = sections(text);
    let a = s
        .media
        .iter()
        .find(|m| m_line(m[0]).is_some_and(|l| l.kind == "audio" && l.port != "0"))
        .ok_or(SdpRefusal::NoAudio)?;
    let line = m_line(a[0]).ok_or(SdpRefusal::NoAudio)?;
    if attr(a, "rtcp-mux").is_none() {
        return Err(SdpRefusal::NoRtcpMux);
    }
    if attr(a, "fingerprint")
        .or_else(|| attr(&s.session, "fingerprint"))
        .is_none()
    {
        return Err(SdpRefusal::NoFingerprint);
    }
    // The answerer's first audio codec, whatever it is among ours.
    let first = line
        .formats
        .iter()
        .find_map(|f| {
            let (name, rate) = encoding(a, f)?;
            [Codec::Pcmu, Codec::Pcma, Codec::Opus]
                .into_iter()
                .find(|c| c.matches(name, rate))
        })
        .ok_or(SdpRefusal::NoCommonCodec)?;
    choose(a, &line.formats, first)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// An offer shaped like Chromium's (trimmed), audio plus a video m-line, BUNDLEd.
    fn chrome_offer(audio_formats: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             a=msid-semantic: WMS\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF {audio_formats}\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n\
             a=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\n\
             {extra}\
             a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
             a=fmtp:63 111/111\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
             a=rtpmap:96 VP8/90000\r\n"
        )
    }

    const FORMATS: &str = "111 63 0 8 110 126";

    #[test]
    fn carrier_law_is_chosen_over_opus_and_red_is_stripped() {
        let offer = chrome_offer(FORMATS, "a=rtcp-mux\r\n");
        let c = check_offer(offer.as_bytes(), 16384, Codec::Pcmu).unwrap();
        assert_eq!(c.choice.codec, Codec::Pcmu);
        assert_eq!(c.choice.pt, 0);
        assert_eq!(c.choice.tele_8k, Some(126));
        assert_eq!(c.choice.tele_48k, Some(110));
        assert!(c.sdp.contains("m=audio 9 UDP/TLS/RTP/SAVPF 0 126 110\r\n"));
        assert!(!c.sdp.contains("red/"), "{}", c.sdp);
        assert!(!c.sdp.contains("opus"));
        assert!(!c.sdp.contains("m=video"));
        assert!(c.sdp.contains("a=group:BUNDLE 0\r\n"));
        let c = check_offer(offer.as_bytes(), 16384, Codec::Pcma).unwrap();
        assert_eq!((c.choice.codec, c.choice.pt), (Codec::Pcma, 8));
    }

    #[test]
    fn opus_when_the_carrier_law_is_absent() {
        let offer = chrome_offer("111 63 110 126", "a=rtcp-mux\r\n");
        let c = check_offer(offer.as_bytes(), 16384, Codec::Pcmu).unwrap();
        assert_eq!((c.choice.codec, c.choice.pt), (Codec::Opus, 111));
        assert!(c.sdp.contains("a=fmtp:111 minptime=10"));
        // Only the other law: taken (the relay converts).
        let offer = chrome_offer("8 126", "a=rtcp-mux\r\n");
        let c = check_offer(offer.as_bytes(), 16384, Codec::Pcmu).unwrap();
        assert_eq!(c.choice.codec, Codec::Pcma);
        let offer = chrome_offer("63 110", "a=rtcp-mux\r\n");
        assert_eq!(
            check_offer(offer.as_bytes(), 16384, Codec::Pcmu),
            Err(SdpRefusal::NoCommonCodec)
        );
    }

    #[test]
    fn refusals_say_why() {
        let ok = chrome_offer(FORMATS, "a=rtcp-mux\r\n");
        assert!(check_offer(ok.as_bytes(), 16384, Codec::Pcmu).is_ok());
        let no_mux = chrome_offer(FORMATS, "");
        assert_eq!(
            check_offer(no_mux.as_bytes(), 16384, Codec::Pcmu),
            Err(SdpRefusal::NoRtcpMux)
        );
        let no_fp = ok.replace("a=fingerprint:sha-256 AA:BB\r\n", "");
        assert_eq!(
            check_offer(no_fp.as_bytes(), 16384, Codec::Pcmu),
            Err(SdpRefusal::NoFingerprint)
        );
        let no_ice = ok.replace("a=ice-pwd:0123456789abcdefghijkl\r\n", "");
        assert_eq!(
            check_offer(no_ice.as_bytes(), 16384, Codec::Pcmu),
            Err(SdpRefusal::NoIceCredentials)
        );
        let plain = ok.replace("UDP/TLS/RTP/SAVPF 111", "RTP/AVP 111");
        assert_eq!(
            check_offer(plain.as_bytes(), 16384, Codec::Pcmu),
            Err(SdpRefusal::NotWebrtc)
        );
        let passive = ok.replace("a=setup:actpass", "a=setup:passive");
        assert_eq!(
            check_offer(passive.as_bytes(), 16384, Codec::Pcmu),
            Err(SdpRefusal::BadSetup)
        );
        assert_eq!(
            check_offer(ok.as_bytes(), 100, Codec::Pcmu),
            Err(SdpRefusal::TooLarge)
        );
        let video_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        assert_eq!(
            check_offer(video_only.as_bytes(), 16384, Codec::Pcmu),
            Err(SdpRefusal::NoAudio)
        );
        assert_eq!(
            check_offer(&[0xff, 0xfe], 16384, Codec::Pcmu),
            Err(SdpRefusal::NotText)
        );
        assert_eq!(SdpRefusal::NoRtcpMux.to_string(), "rtcp-mux required");
    }

    #[test]
    fn refused_m_lines_come_back_with_port_zero() {
        let offer = chrome_offer(FORMATS, "a=rtcp-mux\r\n");
        let c = check_offer(offer.as_bytes(), 16384, Codec::Pcmu).unwrap();
        let answer =
            "v=0\r\ns=-\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
        let full = c.complete_answer(answer);
        assert_eq!(
            full,
            "v=0\r\ns=-\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
             m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
        );
    }

    #[test]
    fn directions_are_read() {
        let offer = chrome_offer(FORMATS, "a=rtcp-mux\r\n");
        assert_eq!(audio_direction(&offer), Direction::SendRecv);
        let held = offer.replace("a=sendrecv", "a=sendonly");
        assert_eq!(audio_direction(&held), Direction::SendOnly);
        assert!(Direction::SendOnly.is_hold());
        let c = check_offer(held.as_bytes(), 16384, Codec::Pcmu).unwrap();
        assert_eq!(c.direction, Direction::SendOnly);
    }

    #[test]
    fn answers_are_read_in_the_answerers_order() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0 126\r\na=rtcp-mux\r\n\
                      a=fingerprint:sha-256 AA\r\na=rtpmap:0 PCMU/8000\r\n\
                      a=rtpmap:126 telephone-event/8000\r\n";
        let c = check_answer(answer.as_bytes(), 16384).unwrap();
        assert_eq!((c.codec, c.pt, c.tele_8k), (Codec::Pcmu, 0, Some(126)));
        let opus = answer
            .replace("0 126", "111 110")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2")
            .replace("126 telephone-event/8000", "110 telephone-event/48000");
        let c = check_answer(opus.as_bytes(), 16384).unwrap();
        assert_eq!((c.codec, c.pt, c.tele_48k), (Codec::Opus, 111, Some(110)));
        let no_mux = answer.replace("a=rtcp-mux\r\n", "");
        assert_eq!(
            check_answer(no_mux.as_bytes(), 16384),
            Err(SdpRefusal::NoRtcpMux)
        );
    }
}
