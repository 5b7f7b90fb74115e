//! The error type of the SDP module.

use std::fmt;

/// Longest excerpt of an offending line quoted in an error message.
const QUOTE_MAX_CHARS: usize = 80;

/// Why a session description (or its JSON envelope) was refused.
///
/// Every problem found while reading SDP text names the 1-based line number,
/// and where useful quotes the line (cut to about 80 characters), so that a
/// person reading a log can find the culprit in the remote's SDP.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The SDP text is empty or holds only whitespace.
    #[error("empty SDP")]
    Empty,
    /// The SDP text is larger than [`MAX_SDP_BYTES`](super::MAX_SDP_BYTES).
    #[error("SDP is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Size of the refused text in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The data section (or a candidate fragment) lists more candidates than
    /// [`MAX_CANDIDATES`](super::MAX_CANDIDATES).
    #[error("line {line}: more than {max} candidates")]
    TooManyCandidates {
        /// 1-based line of the first candidate over the limit.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A syntax or semantic problem on one line.
    #[error("{}", fmt_line(*line, text, problem))]
    Line {
        /// 1-based line number.
        line: usize,
        /// The offending line, cut to about 80 characters; empty when the
        /// message reads better without it.
        text: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The SDP has no data-channel m-line.
    #[error("no data-channel m-line (m=application ... webrtc-datachannel)")]
    NoDataSection,
    /// The SDP has neither a data-channel m-line nor an audio or video m-line that is not
    /// rejected.
    #[error("no data-channel, audio or video m-line (or every one is rejected with port 0)")]
    NoMediaSection,
    /// A required attribute is absent, e.g. `a=ice-ufrag (in the data m-line
    /// or the session)`.
    #[error("missing {0}")]
    Missing(String),
    /// A trickled candidate (outside an SDP body) is ill-formed.
    #[error("bad candidate \"{candidate}\": {problem}")]
    BadCandidate {
        /// The candidate, cut to about 80 characters.
        candidate: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The JSON text does not parse as JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The JSON value is not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A required JSON field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A JSON field has the wrong type.
    #[error("field `{field}` must be {expected}")]
    WrongFieldType {
        /// The field name as written in JSON.
        field: &'static str,
        /// What it should be, e.g. "a string".
        expected: &'static str,
    },
    /// The `type` field of a description is not a known SDP type.
    #[error("unknown type `{0}`, expected offer or answer")]
    UnknownType(String),
}

fn fmt_line(line: usize, text: &str, problem: &str) -> String {
    if text.is_empty() {
        format!("line {line}: {problem}")
    } else {
        format!("line {line} \"{text}\": {problem}")
    }
}

/// Cuts `text` to about [`QUOTE_MAX_CHARS`] characters (on a char boundary)
/// and escapes control characters and quotes, for quoting in a message.
pub(crate) fn quote(text: &str) -> String {
    struct Escaped<'a>(&'a str);
    impl fmt::Display for Escaped<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for c in self.0.chars() {
                if c.is_control() || c == '"' || c == '\\' {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            Ok(())
        }
    }
    let count = text.chars().count();
    if count <= QUOTE_MAX_CHARS {
        Escaped(text).to_string()
    } else {
        let cut: String = text.chars().take(QUOTE_MAX_CHARS - 3).collect();
        format!("{}...", Escaped(&cut))
    }
}

impl SdpError {
    /// Builds a [`SdpError::Line`] quoting `text`.
    pub(crate) fn line(line: usize, text: &str, problem: impl Into<String>) -> Self {
        // An ICE password is a credential: errors are logged and sent back to clients.
        let text = match text.trim_start().strip_prefix("a=ice-pwd:") {
            Some(_) => "a=ice-pwd:***".to_owned(),
            None => quote(text),
        };
        SdpError::Line {
            line,
            text,
            problem: problem.into(),
        }
    }

    /// The 1-based line number the error is about, if any.
    pub fn line_number(&self) -> Option<usize> {
        match self {
            SdpError::Line { line, .. } | SdpError::TooManyCandidates { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Replaces the value after `Pwd: ` / `pwd: ` / `password: ` / `ice-pwd:` (an SDP line
/// quoted in an error) with `***`.
pub fn redact_secrets(text: &str) -> String {
    let mut out = text.to_owned();
    for key in ["Pwd: ", "pwd: ", "password: ", "ice-pwd:"] {
        let mut from = 0;
        while let Some(at) = out[from..].find(key) {
            let start = from + at + key.len();
            let end = out[start..]
                .find(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '\\')
                .map_or(out.len(), |n| start + n);
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn ice_password_is_redacted() {
        let line =
            "Started agent: isControlling? true, remoteUfrag: abcd, remotePwd: s3cr3tpassword";
        let r = super::redact_secrets(line);
        assert!(
            !r.contains("s3cr3t") && r.contains("remoteUfrag: abcd"),
            "{r}"
        );
        let line =
            r#"bad SDP: line 8 "a=ice-pwd:s3cr3tpassword0123456789": a=ice-pwd appears twice"#;
        let r = super::redact_secrets(line);
        assert_eq!(
            r,
            r#"bad SDP: line 8 "a=ice-pwd:***": a=ice-pwd appears twice"#
        );
    }
}
