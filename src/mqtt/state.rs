//! The client's sans-IO half: framing the byte stream into packets (oversized ones skipped
//! without being buffered), packet ids, QoS 1 publishes in flight (resent with DUP after a
//! reconnect), duplicates of received QoS 1 publishes dropped, and the subscriptions to
//! renew on each connection.

use bytes::Bytes;
use mqtt_proto::v3::{Header, Packet, Publish};
use mqtt_proto::{Pid, QoS, QosPid, TopicName};
use std::collections::VecDeque;

/// One unit out of the byte stream.
#[derive(Debug)]
pub(crate) enum Frame {
    Packet(Packet),
    /// A PUBLISH larger than the limit: its topic and packet id (to acknowledge it), the
    /// rest skipped unread.
    Oversized {
        topic: String,
        pid: Option<Pid>,
        len: usize,
    },
}

/// Splits the bytes from the broker into packets, holding at most `max` bytes of one (plus
/// the head of an oversized PUBLISH: its topic, at most 64 KiB).
pub(crate) struct Framer {
    buf: Vec<u8>,
    /// Bytes of an oversized packet still to drop as they arrive.
    skip: usize,
    max: usize,
}

impl Framer {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            skip: 0,
            max,
        }
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) {
        let n = self.skip.min(data.len());
        self.skip -= n;
        data = &data[n..];
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, an error if the stream
    /// is not MQTT (the connection must then be dropped).
    pub(crate) fn next(&mut self) -> Result<Option<Frame>, String> {
        if self.skip > 0 || self.buf.len() < 2 {
            return Ok(None);
        }
        let header = match Header::decode(&self.buf) {
            Ok(h) => h,
            Err(e) if e.is_eof() => return Ok(None),
            Err(e) => return Err(format!("bad packet header: {e}")),
        };
        // The fixed header: one byte, then the remaining length in 1 to 4 bytes (checked
        // by the decode above).
        let head = 1 + self.buf[1..]
            .iter()
            .position(|b| b & 0x80 == 0)
            .map_or(4, |i| i + 1);
        let total = head + header.remaining_len as usize;
        if total > self.max {
            return self.oversized(header, head, total);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let packet = Packet::decode(&self.buf[..total])
            .map_err(|e| format!("bad {:?} packet: {e}", header.typ))?
            .ok_or_else(|| format!("truncated {:?} packet", header.typ))?;
        self.buf.drain(..total);
        Ok(Some(Frame::Packet(packet)))
    }

    fn oversized(
        &mut self,
        header: Header,
        head: usize,
        total: usize,
    ) -> Result<Option<Frame>, String> {
        if header.typ != mqtt_proto::v3::PacketType::Publish {
            return Err(format!(
                "{:?} packet of {total} bytes, above the limit of {}",
                header.typ, self.max
            ));
        }
        // Topic length, topic, then (QoS > 0) the packet id.
        let Some(len_bytes) = self.buf.get(head..head + 2) else {
            return Ok(None);
        };
        let topic_len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
        let pid_len = if header.qos == QoS::Level0 { 0 } else { 2 };
        let need = head + 2 + topic_len + pid_len;
        if need > total {
            return Err("PUBLISH shorter than its topic".into());
        }
        if self.buf.len() < need {
            return Ok(None);
        }
        let topic = String::from_utf8_lossy(&self.buf[head + 2..head + 2 + topic_len]).into_owned();
        let pid = if pid_len == 2 {
            let at = head + 2 + topic_len;
            let v = u16::from_be_bytes([self.buf[at], self.buf[at + 1]]);
            Some(Pid::try_from(v).map_err(|e| format!("bad packet id: {e}"))?)
        } else {
            None
        };
        let held = self.buf.len().min(total);
        self.buf.drain(..held);
        self.skip = total - held;
        Ok(Some(Frame::Oversized {
            topic,
            pid,
            len: total,
        }))
    }
}

/// How many received QoS 1 publishes are remembered to drop their redeliveries.
const DEDUPE_WINDOW: usize = 256;

/// What survives a reconnect: publishes not yet acknowledged, subscriptions, recent ids.
pub(crate) struct Session {
    next_pid: u16,
    /// Sent (or to send) QoS 1 publishes, oldest first, until their PUBACK.
    inflight: VecDeque<Publish>,
    /// Filters to subscribe to on every connection.
    pub(crate) subscriptions: Vec<String>,
    /// (packet id, payload hash) of recent QoS 1 publishes received.
    seen: VecDeque<(u16, u64)>,
}

impl Session {
    pub(crate) fn new() -> Self {
        Self {
            next_pid: 0,
            inflight: VecDeque::new(),
            subscriptions: Vec::new(),
            seen: VecDeque::new(),
        }
    }

    /// A fresh packet id, not one in flight.
    pub(crate) fn pid(&mut self) -> Pid {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            let taken = self
                .inflight
                .iter()
                .any(|p| p.qos_pid.pid().map(|p| p.value()) == Some(self.next_pid));
            if !taken {
                return Pid::try_from(self.next_pid).expect("non-zero");
            }
        }
    }

    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// A QoS 1 publish, kept until acknowledged; returns it to send.
    pub(crate) fn publish(&mut self, topic: TopicName, payload: Bytes, retain: bool) -> Publish {
        let pid = self.pid();
        let mut p = Publish::new(QosPid::Level1(pid), topic, payload);
        p.retain = retain;
        self.inflight.push_back(p.clone());
        p
    }

    pub(crate) fn acked(&mut self, pid: Pid) -> bool {
        let before = self.inflight.len();
        self.inflight.retain(|p| p.qos_pid.pid() != Some(pid));
        before != self.inflight.len()
    }

    /// What to resend after a reconnect, in order, marked DUP.
    pub(crate) fn resend(&mut self) -> Vec<Publish> {
        for p in &mut self.inflight {
            p.dup = true;
        }
        self.inflight.iter().cloned().collect()
    }

    /// True if a received QoS 1 publish is new; a redelivery (DUP, same id and payload as one
    /// seen) is false.
    pub(crate) fn is_new(&mut self, p: &Publish) -> bool {
        let Some(pid) = p.qos_pid.pid() else {
            return true;
        };
        let key = (pid.value(), hash(&p.topic_name, &p.payload));
        if p.dup && self.seen.contains(&key) {
            return false;
        }
        // A reused id with new content replaces the old entry.
        self.seen.retain(|k| k.0 != key.0);
        if self.seen.len() == DEDUPE_WINDOW {
            self.seen.pop_front();
        }
        self.seen.push_back(key);
        true
    }
}

fn hash(topic: &str, payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, payload: &[u8], pid: u16) -> Publish {
        let qos = if pid == 0 {
            QosPid::Level0
        } else {
            QosPid::Level1(Pid::try_from(pid).unwrap())
        };
        Publish::new(
            qos,
            TopicName::try_from(topic).unwrap(),
            Bytes::copy_from_slice(payload),
        )
    }

    fn bytes(p: Packet) -> Vec<u8> {
        p.encode().unwrap().as_ref().to_vec()
    }

    #[test]
    fn framer_splits_packets_across_any_chunking() {
        let mut stream = bytes(Packet::Pingresp);
        stream.extend(bytes(publish("a/b", b"hello", 7).into()));
        stream.extend(bytes(Packet::Puback(Pid::try_from(3).unwrap())));
        for chunk in [1, 2, 3, 5, 100] {
            let mut f = Framer::new(1024);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                f.push(c);
                while let Some(fr) = f.next().unwrap() {
                    got.push(fr);
                }
            }
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert!(
                matches!(&got[1], Frame::Packet(Packet::Publish(p)) if &p.payload[..] == b"hello")
            );
        }
    }

    #[test]
    fn oversized_publish_is_skipped_and_the_next_packet_read() {
        let big = vec![b'x'; 5000];
        let mut stream = bytes(publish("t/in/c1", &big, 9).into());
        stream.extend(bytes(publish("t/in/c1", b"small", 10).into()));
        let mut f = Framer::new(1000);
        let mut got = Vec::new();
        for c in stream.chunks(700) {
            f.push(c);
            while let Some(fr) = f.next().unwrap() {
                got.push(fr);
            }
            assert!(f.buf.len() <= 1000 + 700, "held {}", f.buf.len());
        }
        assert_eq!(got.len(), 2);
        match &got[0] {
            Frame::Oversized { topic, pid, len } => {
                assert_eq!(topic, "t/in/c1");
                assert_eq!(pid.map(|p| p.value()), Some(9));
                assert!(*len > 5000);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&got[1], Frame::Packet(Packet::Publish(p)) if &p.payload[..] == b"small"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut f = Framer::new(1000);
        f.push(&[0xf0, 0x00]);
        assert!(f.next().is_err());
        let mut f = Framer::new(1000);
        // CONNACK claiming 4 GB.
        f.push(&[0x20, 0xff, 0xff, 0xff, 0x7f]);
        assert!(f.next().is_err());
    }

    #[test]
    fn inflight_publishes_are_resent_with_dup_until_acked() {
        let mut s = Session::new();
        let t = |x: &str| TopicName::try_from(x).unwrap();
        let a = s.publish(t("x/1"), Bytes::from_static(b"1"), false);
        let b = s.publish(t("x/2"), Bytes::from_static(b"2"), true);
        assert_ne!(a.qos_pid.pid(), b.qos_pid.pid());
        assert!(s.acked(a.qos_pid.pid().unwrap()));
        assert!(!s.acked(a.qos_pid.pid().unwrap()));
        let again = s.resend();
        assert_eq!(again.len(), 1);
        assert!(again[0].dup && again[0].retain);
        assert_eq!(&again[0].payload[..], b"2");
    }

    #[test]
    fn redeliveries_are_dropped_new_messages_kept() {
        let mut s = Session::new();
        let p = publish("in/c", b"offer", 5);
        assert!(s.is_new(&p));
        let mut dup = p.clone();
        dup.dup = true;
        assert!(!s.is_new(&dup));
        // The same id reused for another message is new.
        assert!(s.is_new(&publish("in/c", b"candidate", 5)));
        assert!(s.is_new(&publish("in/c", b"qos0", 0)));
    }

    #[test]
    fn packet_ids_skip_those_in_flight() {
        let mut s = Session::new();
        let t = TopicName::try_from("x").unwrap();
        let first = s.publish(t.clone(), Bytes::new(), false);
        s.next_pid = u16::MAX;
        // Wraps past 0 and past the id still in flight.
        assert_eq!(s.pid().value(), 2);
        assert_eq!(first.qos_pid.pid().unwrap().value(), 1);
    }
}
