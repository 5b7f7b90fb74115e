//! Counting what clients hold (connections, WebSockets, sessions; in all and per client
//! address) and logging refusals without letting a flood flood the log.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A count of live things (connections, WebSockets) and a slot in it, freed on drop.
#[derive(Clone, Default)]
pub(crate) struct Counter(Rc<Cell<usize>>);

impl Counter {
    /// A slot, unless `max` are taken.
    pub(crate) fn take(&self, max: usize) -> Option<Slot> {
        (self.0.get() < max).then(|| {
            self.0.set(self.0.get() + 1);
            Slot(self.0.clone())
        })
    }
}

/// One place in a [`Counter`], given back when dropped.
pub(crate) struct Slot(Rc<Cell<usize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Counts of live things per client address, and a slot in one, freed on drop. The map
/// holds only addresses with something live, so it is bounded by the live things.
#[derive(Clone, Default)]
pub(crate) struct PerAddress(Rc<RefCell<HashMap<IpAddr, usize>>>);

impl PerAddress {
    /// A slot for `ip`, unless `max` are taken by it.
    pub(crate) fn take(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = self.0.borrow_mut();
        let n = map.entry(ip).or_default();
        if *n >= max {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.0.clone(), ip))
    }
}

/// One place in a [`PerAddress`] count, given back when dropped.
pub(crate) struct AddressSlot(Rc<RefCell<HashMap<IpAddr, usize>>>, IpAddr);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.0.borrow_mut();
        if let Some(n) = map.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// The address a client is counted under: an IPv4-mapped IPv6 address (a dual-stack
/// listener's view of an IPv4 client) as the IPv4 address.
pub(crate) fn client_address(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Logs a kind of refusal at most once a second, counting the lines it held back, so a
/// flood (of connections, of wrong tokens) cannot flood the log.
#[derive(Default)]
pub(crate) struct QuietLog {
    last: Cell<Option<Instant>>,
    held: Cell<u64>,
}

impl QuietLog {
    pub(crate) fn warn(&self, line: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.held.set(self.held.get() + 1);
            return;
        }
        self.last.set(Some(now));
        match self.held.replace(0) {
            0 => log::warn!("{}", line()),
            n => log::warn!(
                "{} ({n} more like it in the last second not logged)",
                line()
            ),
        }
    }
}

/// One [`QuietLog`] per kind of refusal (a route and a status, say), so a flood of one
/// kind neither floods the log nor hides the first line of another. Kinds are `'static`
/// names, never client text, so the map stays small.
#[derive(Default)]
pub(crate) struct QuietLogs(RefCell<HashMap<(&'static str, u16), QuietLog>>);

impl QuietLogs {
    pub(crate) fn warn(&self, kind: &'static str, status: u16, line: impl FnOnce() -> String) {
        self.0
            .borrow_mut()
            .entry((kind, status))
            .or_default()
            .warn(line);
    }
}
