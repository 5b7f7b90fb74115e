//! The signaling endpoints: `POST /api/offer`, `GET /api/sessions`, `POST /api/report`,
//! and WHIP (`POST /whip`, `PATCH`/`DELETE /whip/<id>`, RFC 9725).

use super::error::ServiceError;
use super::http::{json_response, read_body, refusal, require_content_type, Body};
use super::{client_address, complete_description, Shared, Via};
use crate::sdp::{self, Description, IceCandidateInit, SdpType};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::rc::Rc;

pub(super) fn sessions(shared: &Shared) -> Response<Body> {
    let list: Vec<_> = shared
        .list()
        .into_iter()
        .map(|(id, via, state, age)| serde_json::json!({"id": id, "via": via, "state": state, "age_s": age}))
        .collect();
    json_response(StatusCode::OK, serde_json::json!({ "sessions": list }))
}

/// Offer in, session up, answer out with every candidate. On failure the session is closed.
pub(super) async fn answer_offer(
    shared: &Rc<Shared>,
    via: Via,
    peer: SocketAddr,
    offer: Description,
) -> Result<(String, Description), ServiceError> {
    // Parse first: a bad offer must not cost a session.
    sdp::parse(&offer.sdp).map_err(ServiceError::BadSdp)?;
    answer_in_session(shared, via, peer, offer, async |_| Ok(())).await
}

/// Opens a session, lets `prepare` set up its peer connection (a viewer's tracks, a sink's
/// receivers), then
/// answers `offer`; returns the session id and the answer with every candidate. On failure
/// the session is closed.
pub(super) async fn answer_in_session(
    shared: &Rc<Shared>,
    via: Via,
    peer: SocketAddr,
    offer: Description,
    prepare: impl AsyncFnOnce(&super::NewSession) -> Result<(), ServiceError>,
) -> Result<(String, Description), ServiceError> {
    let s = shared.open(via, false, client_address(peer)).await?;
    let result = async {
        prepare(&s).await?;
        s.pc.set_remote_description(offer).await?;
        let answer = s.pc.create_answer().await?;
        s.pc.set_local_description(answer).await?;
        Ok::<_, ServiceError>(())
    }
    .await;
    if let Err(e) = result {
        shared.close(&s.id).await;
        return Err(e);
    }
    let answer = complete_description(&s, shared.config.gather_timeout).await?;
    Ok((s.id, answer))
}

pub(super) async fn api_offer(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    // ?stream=NAME: the offer's audio/video sections receive that stream; ?sink=NAME: what
    // the offer sends goes to that sink (both: talk-back in one session).
    let stream = super::guard::query_value(req.uri().query(), "stream");
    let sink = super::guard::query_value(req.uri().query(), "sink");
    require_content_type(&req, "application/json")?;
    let body = read_body(shared, req).await?;
    let text = utf8(&body)?;
    let offer = Description::from_json(text).map_err(|e| ServiceError::BadBody(e.to_string()))?;
    if offer.kind != SdpType::Offer {
        return Err(ServiceError::BadBody(format!(
            "expected an offer, got {:?}",
            offer.kind.as_str()
        )));
    }
    let (id, answer) = match (stream, sink) {
        #[cfg(feature = "media")]
        (Some(name), sink) => {
            super::streams::answer_offer_with_stream(
                shared,
                Via::Http,
                peer,
                &name,
                sink.as_deref(),
                offer,
            )
            .await?
        }
        #[cfg(feature = "media")]
        (None, Some(sink)) => {
            super::sinks::answer_offer_with_sink(shared, Via::Http, peer, &sink, offer).await?
        }
        #[cfg(not(feature = "media"))]
        (Some(name), _) => return Err(ServiceError::UnknownStream(name)),
        #[cfg(not(feature = "media"))]
        (None, Some(name)) => return Err(ServiceError::UnknownSink(name)),
        (None, None) => answer_offer(shared, Via::Http, peer, offer).await?,
    };
    log::info!("[{id}] answered POST /api/offer");
    let mut r = json_response(
        StatusCode::OK,
        serde_json::json!({"type": "answer", "sdp": answer.sdp}),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-session-id", v);
    }
    Ok(r)
}

pub(super) async fn whip_post(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    let offer = Description {
        kind: SdpType::Offer,
        sdp: sdp_body(shared, req).await?,
    };
    let (id, answer) = answer_offer(shared, Via::Whip, peer, offer).await?;
    log::info!("[{id}] answered POST /whip");
    Ok(created(answer, &format!("/whip/{id}")))
}

/// The body of a WHIP/WHEP `POST`: `application/sdp`, UTF-8 (`415`, `400` otherwise).
pub(super) async fn sdp_body(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<String, ServiceError> {
    require_content_type(&req, "application/sdp")?;
    let body = read_body(shared, req).await?;
    Ok(utf8(&body)?.to_owned())
}

/// A WHIP/WHEP `201 Created`: the answer as `application/sdp`, the session's resource in
/// `Location`.
pub(super) fn created(answer: Description, location: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(answer.sdp)));
    *r.status_mut() = StatusCode::CREATED;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    r
}

/// What a media resource path asks for: `LIST` (`GET /api/streams`, `/api/sinks`), a new
/// session at `PREFIX/NAME` (`POST`), or an existing one at `PREFIX/NAME/<id>` (`PATCH`,
/// `DELETE`). WHEP and WHIP ingest share this shape.
#[cfg(feature = "media")]
pub(super) enum MediaRoute<'a> {
    List,
    Post(&'a str),
    Patch(&'a str),
    Delete(&'a str),
}

#[cfg(feature = "media")]
impl<'a> MediaRoute<'a> {
    pub(super) fn parse(
        method: &hyper::Method,
        path: &'a str,
        list: &str,
        prefix: &str,
    ) -> std::result::Result<Self, ServiceError> {
        use hyper::Method;
        let rest = path.strip_prefix(prefix).unwrap_or_default();
        match (path == list, rest.split_once('/'), method) {
            (true, _, &Method::GET) => Ok(Self::List),
            (false, None, &Method::POST) => Ok(Self::Post(rest)),
            (false, Some((_, id)), &Method::PATCH) => Ok(Self::Patch(id)),
            (false, Some((_, id)), &Method::DELETE) => Ok(Self::Delete(id)),
            (_, _, m) => Err(ServiceError::MethodNotAllowed {
                method: m.to_string(),
                path: super::http::clip(path).to_owned(),
            }),
        }
    }
}

/// Serves a media resource path (see [`MediaRoute`]) under `(list path, prefix)`: `list`
/// answers the LIST, `post` a new session; PATCH and DELETE are the same for all.
#[cfg(feature = "media")]
pub(super) async fn media_route(
    shared: &Rc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    path: &str,
    (list_path, prefix): (&str, &str),
    list: fn(&Shared) -> Response<Body>,
    post: impl AsyncFnOnce(
        &Rc<Shared>,
        SocketAddr,
        &str,
        Request<Incoming>,
    ) -> Result<Response<Body>, ServiceError>,
) -> Result<Response<Body>, ServiceError> {
    match MediaRoute::parse(req.method(), path, list_path, prefix)? {
        MediaRoute::List => Ok(list(shared)),
        MediaRoute::Post(name) => post(shared, peer, name, req).await,
        MediaRoute::Patch(id) => whip_patch(shared, id, req).await,
        MediaRoute::Delete(id) => whip_delete(shared, id).await,
    }
}

pub(super) async fn whip_patch(
    shared: &Rc<Shared>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    let pc = shared
        .session(id)
        .ok_or_else(|| ServiceError::UnknownSession(id.to_owned()))?;
    require_content_type(&req, "application/trickle-ice-sdpfrag")?;
    let body = read_body(shared, req).await?;
    let text = utf8(&body)?;
    let (ufrag, candidates, end) =
        sdp::parse_candidate_fragment(text).map_err(ServiceError::BadFragment)?;
    // RFC 9725 §4.3.2: new credentials (ufrag and password) ask for an ICE restart.
    if let (Some(ufrag), Some((_, pwd))) = (ufrag, ice_credentials(text)) {
        let current = pc.remote_description().await;
        if current.is_some_and(|d| ice_credentials(&d.sdp).is_none_or(|(u, _)| u != ufrag)) {
            return ice_restart(id, &pc, (ufrag, pwd), candidates, end).await;
        }
    }
    let n = candidates.len();
    for c in candidates {
        let added = pc
            .add_ice_candidate(IceCandidateInit {
                candidate: c,
                sdp_mid: None,
                sdp_mline_index: Some(0),
                username_fragment: None,
            })
            .await;
        if let Err(e @ crate::Error::Limit(_)) = added {
            // The session logged reaching the cap once; no line per refused request.
            return Ok(refusal(&ServiceError::Peer(e)));
        }
        added?;
    }
    if end {
        pc.add_ice_candidate(IceCandidateInit {
            candidate: String::new(),
            sdp_mid: None,
            sdp_mline_index: Some(0),
            username_fragment: None,
        })
        .await?;
    }
    log::info!(
        "[{id}] PATCH: {n} candidates{}",
        if end { ", end-of-candidates" } else { "" }
    );
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// Adds a fragment's candidates (and its end) to `pc`.
async fn add_candidates(
    pc: &crate::PeerConnection,
    candidates: Vec<String>,
    end: bool,
) -> Result<(), ServiceError> {
    let ends = end.then(String::new);
    for candidate in candidates.into_iter().chain(ends) {
        pc.add_ice_candidate(IceCandidateInit {
            candidate,
            sdp_mid: None,
            sdp_mline_index: Some(0),
            username_fragment: None,
        })
        .await?;
    }
    Ok(())
}

/// An ICE restart by PATCH (RFC 9725 §4.3.2): the remote offer again with the client's new
/// credentials (so the peer connection restarts ICE as for any re-offer, DTLS and media
/// carrying on), our answer's new credentials and candidates in the `200`.
async fn ice_restart(
    id: &str,
    pc: &crate::PeerConnection,
    (ufrag, pwd): (String, String),
    candidates: Vec<String>,
    end: bool,
) -> Result<Response<Body>, ServiceError> {
    let Some(remote) = pc.remote_description().await else {
        return Err(ServiceError::Peer(crate::Error::invalid(
            "an ICE restart before any offer",
        )));
    };
    let offer = Description {
        kind: SdpType::Offer,
        sdp: with_ice_credentials(&remote.sdp, &ufrag, &pwd),
    };
    pc.set_remote_description(offer).await?;
    let answer = pc.create_answer().await?;
    let text = answer.sdp.clone();
    pc.set_local_description(answer).await?;
    let n = candidates.len();
    add_candidates(pc, candidates, end).await?;
    let (local_ufrag, local_pwd) = ice_credentials(&text).unwrap_or_default();
    let mid = sdp_value(&text, "a=mid:").unwrap_or_default();
    let ours = sdp::candidate_attributes(&text);
    log::info!(
        "[{id}] PATCH: ICE restart ({n} candidates{}); answered with {} candidates",
        if end { ", end-of-candidates" } else { "" },
        ours.len()
    );
    let frag = sdp::write_candidate_fragment(&local_ufrag, &local_pwd, &mid, &ours, true);
    let mut r = Response::new(Full::new(Bytes::from(frag)));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    // The ICE session's tag (RFC 9725 §4.3.1): a new one per restart.
    if let Ok(v) = HeaderValue::from_str(&format!("\"{local_ufrag}\"")) {
        h.insert(hyper::header::ETAG, v);
    }
    Ok(r)
}

/// The first value of `key` (`a=mid:`, ...) in an SDP text or fragment.
pub(super) fn sdp_value(sdp: &str, key: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(str::to_owned)
}

/// An SDP text's (or fragment's) `a=ice-ufrag` and `a=ice-pwd`, when it has both.
pub(super) fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    Some((
        sdp_value(sdp, "a=ice-ufrag:")?,
        sdp_value(sdp, "a=ice-pwd:")?,
    ))
}

/// `sdp` with new ICE credentials on every `a=ice-ufrag`/`a=ice-pwd` line and without its
/// candidates (they belong to the old credentials; the new ones come in the fragment):
/// the description an ICE restart by PATCH stands for.
pub(super) fn with_ice_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

pub(super) async fn whip_delete(
    shared: &Rc<Shared>,
    id: &str,
) -> Result<Response<Body>, ServiceError> {
    if !shared.close(id).await {
        return Err(ServiceError::UnknownSession(id.to_owned()));
    }
    log::info!("[{id}] DELETE: closed");
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "closed": id }),
    ))
}

/// A page's self-test report: logged in one line, handed to the host program.
pub(super) async fn report(
    shared: &Rc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    require_content_type(&req, "application/json")?;
    let body = read_body(shared, req).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ServiceError::BadBody(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ServiceError::BadBody("a report is a JSON object".into()));
    }
    log::info!(
        "client report: ok={} mode={} offering={} error={}",
        value["ok"],
        value["mode"],
        value["offering"],
        value["error"]
    );
    // Kept only while someone reads them (a test, a host program); otherwise just logged.
    if shared.reports.try_send(value).is_err() {
        log::debug!("client report not kept: nobody is reading reports");
    }
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "ok": true }),
    ))
}

fn utf8(body: &[u8]) -> Result<&str, ServiceError> {
    std::str::from_utf8(body).map_err(|_| ServiceError::BadBody("body is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ice_restart_stands_for_the_description_with_new_credentials() {
        let sdp = "v=0\r\na=ice-ufrag:old1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
                   a=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword00\r\n\
                   a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        let new = with_ice_credentials(sdp, "new2", "newpasswordnewpassword00");
        assert_eq!(
            ice_credentials(&new),
            Some(("new2".into(), "newpasswordnewpassword00".into()))
        );
        assert_eq!(new.matches("a=ice-ufrag:new2\r\n").count(), 2);
        assert!(!new.contains("old") && !new.contains("candidate"), "{new}");
        assert_eq!(sdp_value(&new, "a=mid:").as_deref(), Some("0"));
        assert_eq!(ice_credentials("a=ice-ufrag:x\r\n"), None);
    }
}
