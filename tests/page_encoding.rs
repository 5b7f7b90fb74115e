//! The page is embedded gzipped (build.rs) and served with `Content-Encoding: gzip`: every
//! file of `web/` comes back, once inflated, byte for byte as it is in the repository, with
//! and without `Accept-Encoding`; a request whose `Accept-Encoding` refuses gzip gets `406`
//! and a JSON error that says how to ask.

mod common;

use common::http::{request_from, Reply};
use common::service::start;
use std::io::Read;
use std::path::Path;

/// Every page file the service serves, by path, and the repository file it comes from.
const PAGE: [(&str, &str, &str); 7] = [
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/index.html", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/style.css", "style.css", "text/css; charset=utf-8"),
    ("/mqtt.js", "mqtt.js", "text/javascript; charset=utf-8"),
    ("/broker.js", "broker.js", "text/javascript; charset=utf-8"),
    ("/sinks.js", "sinks.js", "text/javascript; charset=utf-8"),
];

fn source(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("web").join(file)).unwrap()
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// The reply is the gzip of `file`, labelled as such.
fn assert_gzipped_page(r: &Reply, path: &str, file: &str, content_type: &str) {
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{path}");
    assert_eq!(r.header("content-type"), Some(content_type), "{path}");
    assert_eq!(r.header("vary"), Some("accept-encoding"), "{path}");
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len(), "{path}");
    let text = source(file);
    assert!(
        r.body.len() * 2 < text.len(),
        "{path}: {} bytes for {} of text: not compressed",
        r.body.len(),
        text.len()
    );
    assert!(gunzip(&r.body) == text, "{path}: not web/{file}, inflated");
}

#[test]
fn the_page_is_served_gzipped_with_and_without_accept_encoding() {
    let (_rt, h) = start(|_| {});
    for (path, file, ct) in PAGE {
        // What browsers send.
        let r = request_from(
            h.addr,
            None,
            "GET",
            path,
            &["Accept-Encoding: gzip, deflate, br, zstd"],
            None,
            b"",
        );
        assert_gzipped_page(&r, path, file, ct);
        // No Accept-Encoding: any coding is acceptable (RFC 9110 12.5.3).
        let r = request_from(h.addr, None, "GET", path, &[], None, b"");
        assert_gzipped_page(&r, path, file, ct);
    }
    // Other spellings that let gzip through.
    for accept in [
        "GZIP",
        "x-gzip",
        "*",
        "br;q=1.0, gzip;q=0.5",
        "identity, *;q=0.1",
        "gzip;q=0, gzip",
    ] {
        let header = format!("Accept-Encoding: {accept}");
        let r = request_from(h.addr, None, "GET", "/", &[&header], None, b"");
        assert_gzipped_page(&r, accept, "index.html", "text/html; charset=utf-8");
    }
}

#[test]
fn a_client_refusing_gzip_gets_406_saying_how_to_ask() {
    let (_rt, h) = start(|_| {});
    for accept in [
        "identity",
        "",
        "br, deflate",
        "gzip;q=0",
        "gzip; q=0.000, br",
        "*;q=0",
        "*, gzip;q=0",
    ] {
        let header = format!("Accept-Encoding: {accept}");
        for path in ["/", "/app.js"] {
            let r = request_from(h.addr, None, "GET", path, &[&header], None, b"");
            assert_eq!(r.status, 406, "{accept:?} {path}: {}", r.text());
            assert!(r.header("content-encoding").is_none(), "{accept:?}");
            let error = r.json()["error"].as_str().unwrap().to_string();
            assert!(
                error.contains("Accept-Encoding: gzip") && error.contains("curl --compressed"),
                "{error}"
            );
        }
    }
    // The API is not affected: JSON is generated, not stored compressed.
    let r = request_from(
        h.addr,
        None,
        "GET",
        "/api/sessions",
        &["Accept-Encoding: identity"],
        None,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-encoding").is_none());
}
