//! The recording tap: a session copies each incoming audio payload, as received (still
//! G.711), into a shared batch that the recorder swaps out every few tens of milliseconds.
//!
//! Why not a channel of decoded frames: at hundreds of recorded calls, a channel send, a
//! heap allocation and a decode per packet on the relay's hot path cost more than the
//! relaying itself (`scripts/bench recording`). Here a packet costs one uncontended lock and
//! one copy of its payload into buffers that keep their capacity; decoding happens in the
//! recorder, in bulk.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use switchboard_media::g711::Law;

use crate::Leg;

/// One incoming audio payload of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapFrame {
    pub leg: Leg,
    /// How the payload is encoded.
    pub law: Law,
    /// RTP timestamp of the packet as sent by the leg's remote.
    pub timestamp: u32,
    /// Arrival time (wall clock, ms since the Unix epoch), so a consumer reading frames in
    /// batches still places them by when they came.
    pub at_ms: u64,
    payload: Range<usize>,
}

/// Frames taken from a tap, their payloads in one buffer. Reused from batch to batch.
#[derive(Debug, Default)]
pub struct TapBatch {
    frames: Vec<TapFrame>,
    payloads: Vec<u8>,
}

impl TapBatch {
    /// The frames in arrival order, with their payloads.
    pub fn iter(&self) -> impl Iterator<Item = (&TapFrame, &[u8])> {
        self.frames
            .iter()
            .map(|f| (f, self.payloads.get(f.payload.clone()).unwrap_or(&[])))
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.payloads.clear();
    }
}

#[derive(Debug)]
struct Shared {
    batch: TapBatch,
    /// The writer is gone (session ended or tap removed): what is left is the last batch.
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    shared: Mutex<Shared>,
    capacity: usize,
}

fn lock(inner: &Inner) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves plain buffers behind: still usable.
    inner
        .shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A tap holding at most `capacity` frames between two takes (beyond that, frames are
/// dropped and counted in the leg's `tap_dropped`). The writer goes to [`crate::Session::tap`],
/// the reader to the recorder.
pub fn tap(capacity: usize) -> (TapWriter, TapReader) {
    let inner = Arc::new(Inner {
        shared: Mutex::new(Shared {
            batch: TapBatch::default(),
            closed: false,
        }),
        capacity,
    });
    (
        TapWriter {
            inner: Arc::clone(&inner),
        },
        TapReader { inner },
    )
}

/// The session's end of a tap. Dropping it (the session ended, or the tap was replaced)
/// closes the tap.
#[derive(Debug)]
pub struct TapWriter {
    inner: Arc<Inner>,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The batch is full: the frame is dropped.
    Full,
    /// The reader is gone: the tap may be removed.
    Closed,
}

impl TapWriter {
    pub(crate) fn push(&self, frame: TapHeader, payload: &[u8]) -> Pushed {
        if Arc::strong_count(&self.inner) == 1 {
            return Pushed::Closed;
        }
        let mut s = lock(&self.inner);
        if s.batch.frames.len() >= self.inner.capacity {
            return Pushed::Full;
        }
        let start = s.batch.payloads.len();
        s.batch.payloads.extend_from_slice(payload);
        s.batch.frames.push(TapFrame {
            leg: frame.leg,
            law: frame.law,
            timestamp: frame.timestamp,
            at_ms: frame.at_ms,
            payload: start..start + payload.len(),
        });
        Pushed::Queued
    }
}

impl Drop for TapWriter {
    fn drop(&mut self) {
        lock(&self.inner).closed = true;
    }
}

/// A frame's fields, without its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapHeader {
    pub leg: Leg,
    pub law: Law,
    pub timestamp: u32,
    pub at_ms: u64,
}

/// The recorder's end of a tap.
#[derive(Debug)]
pub struct TapReader {
    inner: Arc<Inner>,
}

impl TapReader {
    /// Swaps everything queued since the last take into `batch` (which should be empty; its
    /// buffers go to the writer). Returns false once the writer is gone: then `batch` holds
    /// the last frames there will be.
    pub fn take(&mut self, batch: &mut TapBatch) -> bool {
        batch.clear();
        let mut s = lock(&self.inner);
        std::mem::swap(&mut s.batch, batch);
        !s.closed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(ts: u32) -> TapHeader {
        TapHeader {
            leg: Leg::Caller,
            law: Law::Ulaw,
            timestamp: ts,
            at_ms: 7,
        }
    }

    #[test]
    fn frames_come_out_in_order_with_their_payloads_and_a_full_tap_drops() {
        let (w, mut r) = tap(2);
        assert_eq!(w.push(header(0), &[1; 160]), Pushed::Queued);
        assert_eq!(w.push(header(160), &[2; 80]), Pushed::Queued);
        assert_eq!(w.push(header(320), &[3; 160]), Pushed::Full);
        let mut b = TapBatch::default();
        assert!(r.take(&mut b));
        let got: Vec<(u32, Vec<u8>)> = b.iter().map(|(f, p)| (f.timestamp, p.to_vec())).collect();
        assert_eq!(got, vec![(0, vec![1; 160]), (160, vec![2; 80])]);
        // Room again after the take; the next batch holds only what came since.
        assert_eq!(w.push(header(480), &[4; 160]), Pushed::Queued);
        assert!(r.take(&mut b));
        assert_eq!(b.len(), 1);
        assert_eq!(b.iter().next().unwrap().1, &[4; 160][..]);
    }

    #[test]
    fn dropping_either_end_closes_the_tap() {
        let (w, mut r) = tap(8);
        w.push(header(0), &[1; 160]);
        drop(w);
        let mut b = TapBatch::default();
        assert!(!r.take(&mut b), "closed");
        assert_eq!(b.len(), 1, "the last frames are still handed out");
        let (w, r) = tap(8);
        drop(r);
        assert_eq!(w.push(header(0), &[1; 160]), Pushed::Closed);
    }
}
