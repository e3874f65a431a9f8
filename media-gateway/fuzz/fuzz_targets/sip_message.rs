//! Fuzzes the gateway's whole decision for one UDP datagram ([`inspect`]) and, for what it
//! passes on, the rsipstack parse and header accessors the stack then runs.
//!
//! Beyond "no panic", it checks the contract the UDP socket relies on: whatever `inspect`
//! passes parses with rsipstack and fits the stack's buffer; whatever it answers is a
//! well-formed SIP response to a request, never to a response or an ACK.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use rsipstack::sip::SipMessage;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use switchboard_gateway::framing::frame_stream;
use switchboard_gateway::inspect::{Inspection, STACK_BUFFER, inspect};

fuzz_target!(|data: &[u8]| {
    let from = SocketAddr::from(([192, 0, 2, 7], 5070));
    let _ = frame_stream(data);
    match inspect(data, from) {
        Inspection::Pass(bytes) => {
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                return;
            }
            assert!(
                bytes.len() <= STACK_BUFFER,
                "passed more than the stack buffer"
            );
            let msg = match SipMessage::try_from(bytes.as_slice()) {
                Ok(m) => m,
                Err(e) => panic!("passed a message rsipstack cannot parse: {e}"),
            };
            // What the transaction and dialog layers read from a message.
            let _ = msg.to_string();
            let _ = msg.via_header().and_then(|v| v.typed());
            let _ = msg.from_header().and_then(|f| f.tag());
            let _ = msg.to_header().and_then(|t| t.uri());
            let _ = msg.cseq_header().and_then(|c| c.typed());
            let _ = msg.contact_header().and_then(|c| c.typed());
            if let SipMessage::Request(req) = msg {
                let _ = rsipstack::transport::SipConnection::update_msg_received(
                    req.into(),
                    from,
                    rsipstack::sip::Transport::Udp,
                )
                .map(|m| m.to_string());
            }
        }
        Inspection::Reply {
            status, response, ..
        } => {
            assert!(!data.starts_with(b"SIP/"), "answered a response");
            assert!(!data.starts_with(b"ACK "), "answered an ACK");
            assert!((400..=599).contains(&status));
            match SipMessage::try_from(response.as_slice()) {
                Ok(SipMessage::Response(r)) => assert_eq!(r.status_code.code(), status),
                Ok(SipMessage::Request(_)) => panic!("reply is a request"),
                Err(e) => panic!("reply does not parse: {e}"),
            }
        }
        Inspection::Drop(_) => {}
    }
});
