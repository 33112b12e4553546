//! Bounds on the relay's open event streams. Each holds a connection and a task for as long as
//! its run has not ended, and anyone who can reach the server may open one for any id: so there
//! are at most so many per client and in all, and each lasts at most so long (a browser client
//! gives up on a silent stream after a minute and polls anyway).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
};

/// Streams one client address may hold open at once: a page waits by push on 4 at most, so this
/// allows many tabs, or a few dozen users behind one address (an office's NAT).
pub const DEFAULT_MAX_STREAMS_PER_CLIENT: usize = 100;
/// Streams open at once on this instance.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;

/// Counts open streams and admits new ones within the bounds.
#[derive(Debug)]
pub(crate) struct StreamGate {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// `None`: clients without a known address, counted together.
    per_client: HashMap<Option<IpAddr>, usize>,
}

/// Why a stream was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The client holds `max_per_client` already.
    Client(usize),
    /// The instance holds `max_total` already.
    Instance(usize),
}

/// One admitted stream; dropping it (the stream ended or the browser left) frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<StreamGate>,
    client: Option<IpAddr>,
}

impl StreamGate {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Arc<StreamGate> {
        Arc::new(StreamGate {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            open: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Every change under the lock is a pair of counter updates: a poisoned lock's state holds.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more stream of `client`, or which bound is reached.
    pub(crate) fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Permit, Full> {
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Full::Instance(self.max_total));
        }
        let held = open.per_client.entry(client).or_default();
        if *held >= self.max_per_client {
            return Err(Full::Client(self.max_per_client));
        }
        *held += 1;
        open.total += 1;
        Ok(Permit {
            gate: self.clone(),
            client,
        })
    }

    /// `(open in all, open for client)`, for tests and the log.
    #[cfg(test)]
    pub(crate) fn counts(&self, client: Option<IpAddr>) -> (usize, usize) {
        let open = self.lock();
        (
            open.total,
            open.per_client.get(&client).copied().unwrap_or(0),
        )
    }

    /// The bounds, for the start-up line.
    pub(crate) fn describe(&self) -> String {
        format!(
            "up to {} streams, {} per client",
            self.max_total, self.max_per_client
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.per_client.get_mut(&self.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_client_and_in_all_and_places_come_back() {
        let gate = StreamGate::new(3, 2);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Full::Client(2));
        let _third = gate.admit(b).unwrap();
        assert_eq!(gate.admit(None).unwrap_err(), Full::Instance(3));
        drop(first);
        assert_eq!(gate.counts(a), (2, 1));
        let _again = gate.admit(a).unwrap();
        assert_eq!(gate.counts(a), (3, 2));
    }
}
