//! Build-time board profile: `SMOLRTC_BOARD=<name>` (a file `boards/<name>.toml`) names the
//! board the binary is built for; `smolrtc --version` prints it with the target triple, and
//! `smolrtc serve` takes its default limits from it. Without it the board is "native" and
//! the defaults are the library's.
//!
//! With the `service` feature it also gzips the page (`web/*`) into `OUT_DIR/web/`: the
//! service embeds and serves those bytes (`Content-Encoding: gzip`), a quarter of the text's
//! size in the binary (docs/FOOTPRINT.md).

use std::io::Write;
use std::path::Path;

/// The page's files the service serves (src/service/http.rs embeds `OUT_DIR/web/<name>.gz`).
const PAGE_FILES: [&str; 6] = [
    "index.html",
    "app.js",
    "style.css",
    "mqtt.js",
    "broker.js",
    "sinks.js",
];

fn main() {
    if std::env::var_os("CARGO_FEATURE_SERVICE").is_some() {
        compress_page();
    }
    println!("cargo:rerun-if-env-changed=SMOLRTC_BOARD");
    let target = std::env::var("TARGET").unwrap_or_default();
    let board = std::env::var("SMOLRTC_BOARD").unwrap_or_default();
    let board = if board.is_empty() {
        "native".to_string()
    } else {
        board
    };

    // The library's defaults: 64 sessions, 3 MiB SCTP receive window (SctpConfig).
    let mut max_sessions = "64".to_string();
    let mut receive_buffer = "3145728".to_string();
    let mut cpu = "default".to_string();
    if board != "native" {
        let path = Path::new("boards").join(format!("{board}.toml"));
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("SMOLRTC_BOARD={board}: cannot read {}: {e}", path.display())
        });
        let get = |key: &str| -> String {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| {
                    let v = v.split('#').next().unwrap_or("").trim();
                    v.trim_matches('"').to_string()
                })
                .unwrap_or_else(|| panic!("{}: no `{key}`", path.display()))
        };
        let want = get("target");
        if want != target {
            panic!("board {board} is built for {want}, not {target} (use --target {want})");
        }
        max_sessions = get("max_sessions");
        receive_buffer = get("sctp_receive_buffer");
        cpu = get("cpu");
        for (k, v) in [
            ("max_sessions", &max_sessions),
            ("sctp_receive_buffer", &receive_buffer),
        ] {
            if v.parse::<u32>().is_err() {
                panic!("{}: `{k}` is not a number: {v}", path.display());
            }
        }
    }
    drop_unwind_tables(&target);
    println!("cargo:rustc-env=SMOLRTC_BOARD={board}");
    println!("cargo:rustc-env=SMOLRTC_TARGET={target}");
    println!("cargo:rustc-env=SMOLRTC_BOARD_CPU={cpu}");
    println!("cargo:rustc-env=SMOLRTC_BOARD_MAX_SESSIONS={max_sessions}");
    println!("cargo:rustc-env=SMOLRTC_BOARD_SCTP_RECEIVE_BUFFER={receive_buffer}");
}

/// `SMOLRTC_DROP_UNWIND_TABLES=1` (cross/build sets it for the `board` profile, which aborts
/// on panic): the binary is linked without its unwind tables, .eh_frame and .eh_frame_hdr
/// (16% of the rpi4 binary; rustc emits them even with `-C force-unwind-tables=no`). Nothing
/// unwinds when a panic aborts, and std's backtrace printer, finding no frame information,
/// prints none (docs/FOOTPRINT.md). GNU ld on aarch64 musl only, where that was tested (other
/// targets ignore it); a profile that unwinds must not set it (its panics could not unwind).
fn drop_unwind_tables(target: &str) {
    println!("cargo:rerun-if-env-changed=SMOLRTC_DROP_UNWIND_TABLES");
    if std::env::var("SMOLRTC_DROP_UNWIND_TABLES").as_deref() != Ok("1") {
        return;
    }
    if !(target.starts_with("aarch64-") && target.ends_with("-musl")) {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let script = Path::new(&dir).join("cross/no-eh-frame.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg=-Wl,--no-eh-frame-hdr");
    println!("cargo:rustc-link-arg=-Wl,-T,{}", script.display());
}

/// gzip (best compression, no file name, time 0: the same bytes on every build) of each
/// page file.
fn compress_page() {
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("web");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/web");
    for name in PAGE_FILES {
        let path = Path::new("web").join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let text =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        gz.write_all(&text).expect("gzip in memory");
        let gz = gz.finish().expect("gzip in memory");
        let dest = out.join(format!("{name}.gz"));
        std::fs::write(&dest, gz)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
    }
}
