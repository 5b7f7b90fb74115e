//! The device's signaling over MQTT topics, sans-IO: topic names, message parsing and the
//! limits per client id. `mqtt::device` runs it.
//!
//! With prefix `P` and device `D`:
//! - `P/D/status`: retained `{"online":true,"streams":[..],"version":".."}`; the same
//!   with `"online":false` is the will and is published on a clean shutdown;
//! - `P/D/in/SESSION`: client to device, `{"type":"hello"}`, `{"type":"description",
//!   "value":{"type":"offer","sdp":..}}`, `{"type":"candidate","value":{..}|null}`,
//!   `{"type":"bye"}`;
//! - `P/D/out/SESSION`: device to client, `{"type":"ice-servers","value":[..]}`, the
//!   answer, candidates, `{"type":"error","value":".."}`, `{"type":"bye"}`.
//!
//! SESSION is the client's MQTT client id, so a broker ACL with `%c` lets each client
//! read only its own replies.

use crate::sdp::{Description, IceCandidateInit, SdpType};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The topics of one device.
#[derive(Clone, Debug)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics under `prefix/device/`; both must be plain topic levels.
    pub fn new(prefix: &str, device: &str) -> Result<Self, String> {
        for (what, v) in [("mqtt-prefix", prefix), ("device-id", device)] {
            check_level(what, v)?;
        }
        Ok(Self {
            base: format!("{prefix}/{device}"),
        })
    }
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    /// What the device subscribes to.
    pub fn inbound(&self) -> String {
        format!("{}/in/+", self.base)
    }
    pub fn outbound(&self, session: &str) -> String {
        format!("{}/out/{session}", self.base)
    }
    /// The session a message on `topic` belongs to, if `topic` is one of our `in/` topics.
    pub fn session_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix("/in/")
            .filter(|s| check_level("session", s).is_ok())
    }
}

/// A topic level we name: 1 to 64 of letters, digits, `-_.`; no wildcard, no `/`.
fn check_level(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {v:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// A message from a client.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Hello,
    Description(Description),
    /// `None`: end of candidates.
    Candidate(Option<IceCandidateInit>),
    Bye,
}

/// Parses a client's message; errors say what is wrong (for the `error` reply).
pub fn parse(payload: &[u8], max: usize) -> Result<Inbound, String> {
    if payload.len() > max {
        return Err(format!(
            "message of {} bytes, above max-body ({max})",
            payload.len()
        ));
    }
    let msg: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let kind = msg
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or("missing \"type\"")?;
    let value = msg.get("value").cloned().unwrap_or(serde_json::Value::Null);
    match kind {
        "hello" => Ok(Inbound::Hello),
        "bye" => Ok(Inbound::Bye),
        "description" => {
            let d = Description::from_json(&value.to_string()).map_err(|e| e.to_string())?;
            if d.kind != SdpType::Offer {
                return Err(format!(
                    "expected an offer, got {:?} (the device answers)",
                    d.kind.as_str()
                ));
            }
            crate::sdp::parse(&d.sdp).map_err(|e| format!("bad SDP: {e}"))?;
            Ok(Inbound::Description(d))
        }
        "candidate" if value.is_null() => Ok(Inbound::Candidate(None)),
        "candidate" => IceCandidateInit::from_json(&value.to_string())
            .map(|c| Inbound::Candidate(Some(c)))
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "unknown message type {other:?}; expected hello, description, candidate or bye"
        )),
    }
}

/// `{"type":KIND,"value":VALUE}`.
pub fn message(kind: &str, value: serde_json::Value) -> Bytes {
    Bytes::from(serde_json::json!({ "type": kind, "value": value }).to_string())
}

/// `{"type":KIND}`.
pub fn bare(kind: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "type": kind }).to_string())
}

/// The retained status.
pub fn status(online: bool, streams: &[String], version: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({ "online": online, "streams": streams, "version": version }).to_string(),
    )
}

/// Messages per client id: at most `burst` at once, refilled at `per_second`; and at most
/// `max_clients` client ids tracked (those quiet for a minute are forgotten).
pub struct RateLimits {
    burst: f64,
    per_second: f64,
    max_clients: usize,
    buckets: HashMap<String, (f64, Instant)>,
}

/// Why a message was not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client sends too fast: its message is dropped (one error reply per burst).
    Flood { first: bool },
    /// Too many clients at once.
    Full,
}

impl RateLimits {
    pub fn new(burst: u32, per_second: f64, max_clients: usize) -> Self {
        Self {
            burst: burst as f64,
            per_second,
            max_clients,
            buckets: HashMap::new(),
        }
    }

    /// Takes one message for `client` at `now`.
    pub fn take(&mut self, client: &str, now: Instant) -> Result<(), Refused> {
        if !self.buckets.contains_key(client) {
            if self.buckets.len() >= self.max_clients {
                self.forget(now);
            }
            if self.buckets.len() >= self.max_clients {
                return Err(Refused::Full);
            }
            self.buckets.insert(client.to_owned(), (self.burst, now));
        }
        let (tokens, at) = self.buckets.get_mut(client).expect("inserted");
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            // The first refusal costs a token more (below 0): later ones until the bucket
            // refills are not reported again.
            let first = *tokens >= 0.0;
            if first {
                *tokens = -1.0;
            }
            return Err(Refused::Flood { first });
        }
        *tokens -= 1.0;
        Ok(())
    }

    /// Forgets clients quiet for a minute (their bucket is full again anyway).
    pub fn forget(&mut self, now: Instant) {
        self.buckets
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(60));
    }

    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_named_as_the_issue_says() {
        let t = Topics::new("smolrtc", "cam1").unwrap();
        assert_eq!(t.status(), "smolrtc/cam1/status");
        assert_eq!(t.inbound(), "smolrtc/cam1/in/+");
        assert_eq!(t.outbound("c1"), "smolrtc/cam1/out/c1");
        assert_eq!(t.session_of("smolrtc/cam1/in/c1"), Some("c1"));
        assert_eq!(t.session_of("smolrtc/cam1/out/c1"), None);
        assert_eq!(t.session_of("smolrtc/cam2/in/c1"), None);
        assert_eq!(t.session_of("smolrtc/cam1/in/c1/x"), None);
        assert!(Topics::new("a/b", "c").is_err());
        assert!(Topics::new("p", "dev#").is_err());
        assert!(Topics::new("p", "").is_err());
    }

    #[test]
    fn messages_parse_and_bad_ones_say_why() {
        assert_eq!(parse(br#"{"type":"hello"}"#, 100).unwrap(), Inbound::Hello);
        assert_eq!(parse(br#"{"type":"bye"}"#, 100).unwrap(), Inbound::Bye);
        assert_eq!(
            parse(br#"{"type":"candidate","value":null}"#, 100).unwrap(),
            Inbound::Candidate(None)
        );
        let c = br#"{"type":"candidate","value":{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0"}}"#;
        assert!(matches!(
            parse(c, 1000).unwrap(),
            Inbound::Candidate(Some(_))
        ));
        for (m, why) in [
            (&b"{nope"[..], "not JSON"),
            (br#"{"value":1}"#, "missing \"type\""),
            (br#"{"type":"shout"}"#, "unknown message type"),
            (
                br#"{"type":"description","value":{"type":"answer","sdp":"v=0"}}"#,
                "expected an offer",
            ),
            (
                br#"{"type":"description","value":{"type":"offer","sdp":"garbage"}}"#,
                "bad SDP",
            ),
        ] {
            let e = parse(m, 1000).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(parse(&[b' '; 101], 100)
            .unwrap_err()
            .contains("above max-body"));
    }

    #[test]
    fn a_flooding_client_is_held_back_others_are_not() {
        let mut r = RateLimits::new(5, 2.0, 2);
        let t0 = Instant::now();
        for _ in 0..5 {
            r.take("a", t0).unwrap();
        }
        assert_eq!(r.take("a", t0), Err(Refused::Flood { first: true }));
        assert_eq!(r.take("a", t0), Err(Refused::Flood { first: false }));
        r.take("b", t0).unwrap();
        // A third client while two are tracked and active: refused.
        assert_eq!(r.take("c", t0), Err(Refused::Full));
        // Refilled at 2 a second.
        r.take("a", t0 + Duration::from_secs(1)).unwrap();
        // Quiet clients are forgotten.
        r.take("c", t0 + Duration::from_secs(120)).unwrap();
        assert!(r.clients() <= 2);
    }
}
