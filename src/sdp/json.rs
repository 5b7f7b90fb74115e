//! W3C JSON forms: `RTCSessionDescriptionInit` and `RTCIceCandidateInit`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{quote, SdpError};
use super::parse::check_candidate_value;

/// The `type` of a session description (W3C `RTCSdpType`), lowercase in JSON.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// `"offer"`
    Offer,
    /// `"answer"`
    Answer,
    /// `"pranswer"` (provisional answer)
    Pranswer,
    /// `"rollback"` (its `sdp` may be empty)
    Rollback,
}

impl SdpType {
    /// The JSON value, e.g. `"offer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SdpType::Offer => "offer",
            SdpType::Answer => "answer",
            SdpType::Pranswer => "pranswer",
            SdpType::Rollback => "rollback",
        }
    }
}

/// A session description as exchanged by browsers and signalling servers:
/// `{"type":"offer","sdp":"v=0\r\n..."}` (W3C `RTCSessionDescriptionInit`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Description {
    /// Offer, answer, ...
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text.
    pub sdp: String,
}

impl Description {
    /// Reads one line a person pasted (the console peer, `smolrtc bench peer`): W3C JSON
    /// whose `type` is `offer` or `answer` (or `expected`, checked before the SDP, so that
    /// pasting this side's own description says so) and whose SDP parses. The error names
    /// the problem (for SDP, the line).
    pub fn parse_line(line: &str, expected: Option<SdpType>) -> Result<Description, String> {
        let line = line.trim();
        if line.is_empty() {
            return Err("empty line".into());
        }
        let description = Description::from_json(line).map_err(|e| e.to_string())?;
        match (description.kind, expected) {
            (kind, Some(expected)) if kind != expected => {
                let got = match kind {
                    SdpType::Offer | SdpType::Answer => format!("an {}", kind.as_str()),
                    other => format!("type `{}`", other.as_str()),
                };
                return Err(format!(
                    "expected an {}, got {got} (is it this side's own description?)",
                    expected.as_str()
                ));
            }
            (SdpType::Offer | SdpType::Answer, _) => {}
            (other, _) => {
                return Err(format!(
                    "type `{}` is not supported here, expected offer or answer",
                    other.as_str()
                ))
            }
        }
        super::parse(&description.sdp).map_err(|e| format!("bad SDP: {e}"))?;
        Ok(description)
    }

    /// Reads the JSON form with clear errors: `not JSON: ...`,
    /// `missing field `sdp``, `unknown type `foo`, expected offer or answer`.
    ///
    /// `pranswer` and `rollback` are accepted too; a rollback may omit `sdp`.
    /// Unknown fields are ignored. The SDP text itself is not checked here:
    /// pass it to [`parse`](super::parse).
    pub fn from_json(json: &str) -> Result<Description, SdpError> {
        let map = object(json)?;
        let kind = match map.get("type") {
            None | Some(Value::Null) => return Err(SdpError::MissingField("type")),
            Some(Value::String(s)) => match s.as_str() {
                "offer" => SdpType::Offer,
                "answer" => SdpType::Answer,
                "pranswer" => SdpType::Pranswer,
                "rollback" => SdpType::Rollback,
                other => return Err(SdpError::UnknownType(quote(other))),
            },
            Some(_) => {
                return Err(SdpError::WrongFieldType {
                    field: "type",
                    expected: "a string",
                })
            }
        };
        let sdp = match map.get("sdp") {
            None | Some(Value::Null) if kind == SdpType::Rollback => String::new(),
            None | Some(Value::Null) => return Err(SdpError::MissingField("sdp")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(SdpError::WrongFieldType {
                    field: "sdp",
                    expected: "a string",
                })
            }
        };
        Ok(Description { kind, sdp })
    }

    /// The JSON form, e.g. `{"type":"answer","sdp":"v=0\r\n..."}`.
    pub fn to_json(&self) -> String {
        // Serializing a struct of a string and a unit enum cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A trickled ICE candidate as W3C `RTCIceCandidateInit` JSON:
/// `{"candidate":"candidate:...","sdpMid":"0","sdpMLineIndex":0}`.
///
/// An empty `candidate` means end-of-candidates. Absent optional fields are
/// left out when serializing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct IceCandidateInit {
    /// `"candidate:..."` (without `a=`), or empty for end-of-candidates.
    pub candidate: String,
    /// Mid of the m-line the candidate belongs to.
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Index of the m-line the candidate belongs to.
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    /// ICE username fragment the candidate belongs to.
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

impl IceCandidateInit {
    /// Reads and checks the JSON form. `candidate` is required; it must be
    /// empty (end-of-candidates) or a well-formed candidate, with or without
    /// an `a=` prefix. Optional fields may be absent or null.
    pub fn from_json(json: &str) -> Result<IceCandidateInit, SdpError> {
        let map = object(json)?;
        let candidate = match map.get("candidate") {
            None | Some(Value::Null) => return Err(SdpError::MissingField("candidate")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(SdpError::WrongFieldType {
                    field: "candidate",
                    expected: "a string",
                })
            }
        };
        let opt_string = |field: &'static str| match map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SdpError::WrongFieldType {
                field,
                expected: "a string or null",
            }),
        };
        let sdp_mid = opt_string("sdpMid")?;
        let username_fragment = opt_string("usernameFragment")?;
        let sdp_mline_index = match map.get("sdpMLineIndex") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or(
                SdpError::WrongFieldType {
                    field: "sdpMLineIndex",
                    expected: "an integer 0..65535 or null",
                },
            )?),
        };
        let init = IceCandidateInit {
            candidate,
            sdp_mid,
            sdp_mline_index,
            username_fragment,
        };
        if !init.is_end_of_candidates() {
            check_candidate_value(init.sdp_value()).map_err(|problem| SdpError::BadCandidate {
                candidate: quote(&init.candidate),
                problem,
            })?;
        }
        Ok(init)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// True when this marks the end of candidates (empty `candidate`).
    pub fn is_end_of_candidates(&self) -> bool {
        self.candidate.trim().is_empty()
    }

    /// The candidate as the value of an SDP attribute (`"candidate:..."`),
    /// whichever of `a=candidate:...` or `candidate:...` was given.
    pub fn sdp_value(&self) -> &str {
        let c = self.candidate.trim();
        c.strip_prefix("a=").unwrap_or(c)
    }
}

fn object(json: &str) -> Result<Map<String, Value>, SdpError> {
    match serde_json::from_str::<Value>(json) {
        Err(e) => Err(SdpError::NotJson(e.to_string())),
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SdpError::NotAnObject),
    }
}
