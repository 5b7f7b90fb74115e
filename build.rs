//! Build-time board profile: `SMOLRTC_BOARD=<name>` (a file `boards/<name>.toml`) names the
//! board the binary is built for; `smolrtc --version` prints it with the target triple, and
//! `smolrtc serve` takes its default limits from it. Without it the board is "native" and
//! the defaults are the library's.

use std::path::Path;

fn main() {
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
    println!("cargo:rustc-env=SMOLRTC_BOARD={board}");
    println!("cargo:rustc-env=SMOLRTC_TARGET={target}");
    println!("cargo:rustc-env=SMOLRTC_BOARD_CPU={cpu}");
    println!("cargo:rustc-env=SMOLRTC_BOARD_MAX_SESSIONS={max_sessions}");
    println!("cargo:rustc-env=SMOLRTC_BOARD_SCTP_RECEIVE_BUFFER={receive_buffer}");
}
