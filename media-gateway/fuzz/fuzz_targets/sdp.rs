//! Fuzzes the SDP offer path of an inbound call: `Sdp::parse` on the INVITE body, then
//! `negotiate` against the codec lists the gateway uses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_media::sdp::{Codec, Sdp, negotiate};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(sdp) = Sdp::parse(&text) else {
        return;
    };
    if let Some(audio) = sdp.audio() {
        let _ = audio.telephone_event();
    }
    for supported in [
        &[Codec::Pcmu, Codec::Pcma][..],
        &[Codec::Pcma][..],
        &[Codec::Pcmu][..],
        &[][..],
    ] {
        if let Ok(n) = negotiate(&sdp, supported) {
            assert!(
                supported.contains(&n.codec),
                "negotiated a codec we do not support"
            );
            // Our answer to it must be an SDP we parse ourselves.
            let answer = switchboard_media::sdp::render(
                1,
                1,
                "192.0.2.1",
                30_000,
                n.codec,
                n.dtmf_pt,
                n.offered.answer(),
            );
            assert!(
                Sdp::parse(&answer).is_ok(),
                "our answer does not parse: {answer:?}"
            );
        }
    }
});
