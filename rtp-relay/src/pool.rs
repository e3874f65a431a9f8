//! The port pool: which even RTP ports (RTCP on the next odd one) of the configured range are
//! free. It exists apart from the sockets so that a port goes back to the pool exactly once,
//! when the session that held it is gone (the lease's `Drop`), whatever way the session ended.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::RelayError;

/// Free even ports of the range, taken from the front and given back at the end (so a port
/// just freed is the last to be reused, which lets late packets of an old call die out).
#[derive(Debug)]
pub(crate) struct PortPool {
    free: VecDeque<u16>,
    capacity: usize,
}

impl PortPool {
    /// The even ports `p` of `[min, max]` whose `p + 1` is also in the range.
    pub(crate) fn new(min: u16, max: u16) -> Result<Self, RelayError> {
        let first = min.saturating_add(min % 2);
        let free: VecDeque<u16> = (u32::from(first)..u32::from(max))
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .collect();
        if free.is_empty() {
            return Err(RelayError::Config(format!(
                "port range {min}-{max} holds no RTP/RTCP port pair"
            )));
        }
        let capacity = free.len();
        Ok(Self { free, capacity })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }
}

/// The pool shared by a relay and the leases of its sessions.
pub(crate) type SharedPool = Arc<Mutex<PortPool>>;

fn lock(pool: &SharedPool) -> MutexGuard<'_, PortPool> {
    // A panic while holding this lock leaves a consistent deque: keep going.
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

/// One RTP/RTCP port pair taken from the pool; it goes back when dropped.
#[derive(Debug)]
pub(crate) struct PortLease {
    pool: SharedPool,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        lock(&self.pool).free.push_back(self.port);
    }
}

/// Two bound sockets and the lease of their ports; the sockets are declared first so they are
/// closed before the ports go back to the pool.
#[derive(Debug)]
pub(crate) struct BoundPair {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    pub(crate) lease: PortLease,
}

/// Takes a free pair and binds both sockets. A pair that cannot be bound (another process
/// holds one of its ports) goes back to the end of the pool and the next one is tried; after
/// trying every free pair once, the pool is exhausted.
pub(crate) fn bind_pair(pool: &SharedPool, ip: IpAddr) -> Result<BoundPair, RelayError> {
    let attempts = lock(pool).free();
    for _ in 0..attempts {
        let Some(port) = lock(pool).free.pop_front() else {
            break;
        };
        let lease = PortLease {
            pool: Arc::clone(pool),
            port,
        };
        let Ok(rtp) = UdpSocket::bind(SocketAddr::new(ip, port)) else {
            continue;
        };
        let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)) else {
            continue;
        };
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        return Ok(BoundPair { rtp, rtcp, lease });
    }
    Err(RelayError::PortsExhausted)
}

impl BoundPair {
    pub(crate) fn port(&self) -> u16 {
        self.lease.port
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_even_pairs_inside_the_range() {
        let p = PortPool::new(20001, 20006).unwrap();
        assert_eq!(
            p.free.iter().copied().collect::<Vec<_>>(),
            vec![20002, 20004]
        );
        assert_eq!(PortPool::new(20000, 20001).unwrap().capacity(), 1);
        assert!(matches!(
            PortPool::new(20001, 20002),
            Err(RelayError::Config(_))
        ));
        assert!(PortPool::new(65534, 65535).is_ok());
        assert!(PortPool::new(65535, 65535).is_err());
    }
}
