//! ICE restart of `serve --publish` by PATCH (issue 22, RFC 9725 §4.3.2): one `smolrtc
//! serve` publishes to a second one's WHIP ingest through a UDP forwarder (the receiver's
//! answer candidate points at it); the forwarder then drops everything both ways, as a
//! path that dies (a Wi-Fi roam, a NAT rebinding). The publisher's ICE goes disconnected,
//! it PATCHes new credentials (`If-Match: *`), the receiver restarts ICE and answers with
//! its own; media flows again on the same session. When the endpoint refuses the PATCH,
//! the publisher falls back to DELETE and a new POST. Needs ffmpeg (`.ci/setup`).

#[path = "common/publish.rs"]
mod fixture;
#[path = "common/forward.rs"]
#[allow(dead_code)]
mod forward;
#[path = "common/http.rs"]
mod http;
#[path = "common/media.rs"]
mod media;

use fixture::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The paths to the receiver, one forwarder per answered POST; each can be cut.
#[derive(Clone, Default)]
struct Paths(Arc<Mutex<Vec<Arc<AtomicBool>>>>);

impl Paths {
    /// Points `answer`'s candidate at a new forwarder.
    fn route(&self, answer: &mut String) {
        let cut = Arc::new(AtomicBool::new(false));
        self.0.lock().unwrap().push(cut.clone());
        forward::route_candidate(answer, |target| {
            let back = cut.clone();
            forward::Forwarder::start_filtered(
                target,
                move |_| !cut.load(Ordering::Relaxed),
                move |_| !back.load(Ordering::Relaxed),
            )
            .front()
        });
    }

    /// Drops everything on path `n` from now on.
    fn cut(&self, n: usize) {
        self.0.lock().unwrap()[n].store(true, Ordering::Relaxed);
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[test]
fn a_dead_path_is_restarted_by_patch_and_media_flows_again() {
    let dir = temp_dir("ice-restart");
    let receiver = receiver(&dir, "receiver", 0, &dir, &[]);
    let paths = Paths::default();
    let routed = paths.clone();
    let endpoint = endpoint(receiver.addr, None, move |answer| routed.route(answer));
    let publisher = publisher(&dir, "publisher", &source(), &whip(endpoint), &[]);
    wait_frames("60 frames at the receiver", &publisher, &receiver, 60);
    assert_eq!(paths.count(), 1);
    paths.cut(0);
    wait_for("the ICE restart", &[&publisher, &receiver], || {
        publisher.log().contains("restarting ICE (PATCH)")
    });
    let before = sink_frames(&receiver, "cam");
    wait_frames(
        "60 more frames after the restart",
        &publisher,
        &receiver,
        before + 60,
    );
    // The receiver restarted ICE on the PATCH and answered with its new credentials...
    let log = receiver.log();
    assert!(log.contains("PATCH: ICE restart"), "{log}");
    // ...the publisher applied them and the restart connected, on the same session: no
    // DELETE, no second POST.
    let log = publisher.log();
    assert!(log.contains("ICE restart: PATCH"), "{log}");
    assert!(log.contains("200 OK"), "{log}");
    assert!(log.contains("the ICE restart connected"), "{log}");
    let p = publish_state(&publisher, "cam");
    assert_eq!(p["state"], "connected", "{p}");
    assert_eq!(p["reconnects"], 0, "{p}");
    assert_eq!(paths.count(), 1, "a second POST");
    let log = publisher.stop();
    assert!(log.contains("publish cam: DELETE"), "{log}");
    let _ = receiver.stop();
    // One session, one recording, decodable across the restart.
    assert_eq!(recordings(&dir).len(), 1, "{:?}", recordings(&dir));
    check_recordings(&dir, before + 60);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_restart_falls_back_to_a_new_post() {
    let dir = temp_dir("ice-restart-refused");
    let receiver = receiver(&dir, "receiver", 0, &dir, &[]);
    let paths = Paths::default();
    let routed = paths.clone();
    let to = receiver.addr;
    // The endpoint keeps the resource itself (a relative Location): it refuses every
    // PATCH (RFC 9725 lets an endpoint do neither trickle nor restart) and passes DELETEs.
    let hook: Hook = Box::new(move |_, head, body| {
        let line = head.lines().next().unwrap_or_default().to_owned();
        let close = "Content-Length: 0\r\nConnection: close\r\n\r\n";
        if line.starts_with("patch") {
            return Some(format!("HTTP/1.1 405 Method Not Allowed\r\n{close}"));
        }
        if let Some(path) = line.strip_prefix("delete ") {
            let path = path.split_whitespace().next().unwrap_or_default();
            let r = http::request(to, "DELETE", path, None, b"");
            return Some(format!("HTTP/1.1 {} X\r\n{close}", r.status));
        }
        if !line.starts_with("post") {
            return None;
        }
        let r = http::request(to, "POST", "/whip/cam", Some("application/sdp"), body);
        let mut text = r.text();
        routed.route(&mut text);
        let location = r.header("location").unwrap_or_default().to_owned();
        Some(format!(
            "HTTP/1.1 {} X\r\nLocation: {location}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            r.status,
            text.len()
        ))
    });
    let endpoint = endpoint_with(receiver.addr, None, hook, |_| {});
    let publisher = publisher(&dir, "publisher", &source(), &whip(endpoint), &[]);
    wait_frames("60 frames at the receiver", &publisher, &receiver, 60);
    paths.cut(0);
    wait_for("a second POST", &[&publisher, &receiver], || {
        paths.count() >= 2
    });
    let before = sink_frames(&receiver, "cam");
    wait_frames(
        "60 more frames on the new connection",
        &publisher,
        &receiver,
        before + 60,
    );
    let log = publisher.log();
    let line = log
        .lines()
        .find(|l| l.contains("the restart failed"))
        .unwrap_or_else(|| panic!("no refused restart: {log}"));
    assert!(line.contains("405"), "{line}");
    let p = publish_state(&publisher, "cam");
    assert_eq!(p["state"], "connected", "{p}");
    assert!(p["reconnects"].as_u64().unwrap() >= 1, "{p}");
    // The old resource was DELETEd: the receiver closed its session.
    assert!(
        receiver.log().contains("DELETE: closed"),
        "{}",
        receiver.log()
    );
    drop(publisher);
    let _ = receiver.stop();
    check_recordings(&dir, before + 60);
    let _ = std::fs::remove_dir_all(&dir);
}
