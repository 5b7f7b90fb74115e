#!/usr/bin/env python3
"""Pair two bench peers that speak the smolrtc bench-peer protocol.

    pair.py --offerer "<cmd>" --answerer "<cmd>" [--timeout 180]

Starts both commands (shlex-split, no shell), relays the offerer's
{"type":"offer"} line to the answerer's stdin and the answerer's
{"type":"answer"} line to the offerer's stdin, collects each side's
{"result": {...}} line and prints one JSON object on stdout:

    {"offerer": {...result...}, "answerer": {...result...}}

On a peer error, a timeout or an early exit it kills both peers, prints
{"error": "...", "offerer_stderr": "<tail>", "answerer_stderr": "<tail>", ...}
and exits 1.  Only the standard library is used, so any python3 can run it.
"""

import argparse
import json
import os
import queue
import shlex
import subprocess
import sys
import tempfile
import threading
import time

STDERR_TAIL = 4000


def log(msg: str) -> None:
    print(f"[pair] {msg}", file=sys.stderr, flush=True)


class Proc:
    def __init__(self, name: str, cmd: str, events: "queue.Queue") -> None:
        self.name = name
        self.cmd = cmd
        self.err = tempfile.TemporaryFile()
        self.p = subprocess.Popen(
            shlex.split(cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            start_new_session=True,  # so a kill reaches the whole peer group
        )
        self.result = None
        t = threading.Thread(target=self._read, args=(events,), daemon=True)
        t.start()

    def _read(self, events) -> None:
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                log(f"{self.name}: non-JSON stdout line ignored: {line[:200]}")
                continue
            events.put((self.name, msg))
        events.put((self.name, None))  # EOF

    def send_line(self, msg: dict) -> None:
        self.p.stdin.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())
        self.p.stdin.flush()
        self.p.stdin.close()  # one signaling line per peer

    def stderr_tail(self) -> str:
        self.err.seek(0, os.SEEK_END)
        size = self.err.tell()
        self.err.seek(max(0, size - STDERR_TAIL))
        return self.err.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, 9)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def run_pair(offerer_cmd: str, answerer_cmd: str, timeout: float, exit_wait: float) -> dict:
    events: "queue.Queue" = queue.Queue()
    procs = {"offerer": Proc("offerer", offerer_cmd, events)}
    try:
        procs["answerer"] = Proc("answerer", answerer_cmd, events)
    except OSError:
        procs["offerer"].kill()
        raise
    other = {"offerer": "answerer", "answerer": "offerer"}
    want = {"offerer": "offer", "answerer": "answer"}
    relayed = set()
    eof = set()
    deadline = time.monotonic() + timeout
    error = None
    try:
        while any(p.result is None for p in procs.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                error = f"timeout after {timeout:g} s"
                break
            try:
                name, msg = events.get(timeout=left)
            except queue.Empty:
                continue
            proc = procs[name]
            if msg is None:
                eof.add(name)
                if proc.result is None:
                    try:
                        proc.p.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
                    error = f"{name} exited (code {proc.p.poll()}) without a result"
                    break
                continue
            if not isinstance(msg, dict):
                continue
            if "error" in msg:
                error = f"{name} reported error: {msg['error']}"
                break
            if "result" in msg:
                proc.result = msg["result"]
                continue
            if msg.get("type") in ("offer", "answer"):
                if msg["type"] != want[name] or name in relayed:
                    error = f"{name} sent an unexpected {msg['type']!r} line"
                    break
                relayed.add(name)
                try:
                    procs[other[name]].send_line(msg)
                except (BrokenPipeError, ValueError) as exc:
                    error = f"could not pass the {msg['type']} to {other[name]}: {exc}"
                    break
                continue
            log(f"{name}: unknown line ignored: {json.dumps(msg)[:200]}")

        if error is None:
            # Both results are in: give the peers a moment to close and exit.
            end = time.monotonic() + exit_wait
            for p in procs.values():
                try:
                    p.p.wait(max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log(f"{p.name} did not exit within {exit_wait:g} s; killing it")
    finally:
        for p in procs.values():
            p.kill()

    if error is not None:
        out = {"error": error}
        for name, p in procs.items():
            out[f"{name}_cmd"] = p.cmd
            out[f"{name}_exit"] = p.p.returncode
            out[f"{name}_result"] = p.result
            out[f"{name}_stderr"] = p.stderr_tail()
        return out
    return {
        "offerer": procs["offerer"].result,
        "answerer": procs["answerer"].result,
        "exit_codes": {n: p.p.returncode for n, p in procs.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="Pair two smolrtc-protocol bench peers.")
    ap.add_argument("--offerer", required=True, help="offerer command line (shlex-split)")
    ap.add_argument("--answerer", required=True, help="answerer command line (shlex-split)")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="seconds until both results must be in (default 180)")
    ap.add_argument("--exit-wait", type=float, default=10.0,
                    help="seconds the peers get to exit after their results (default 10)")
    args = ap.parse_args()
    try:
        out = run_pair(args.offerer, args.answerer, args.timeout, args.exit_wait)
    except OSError as exc:
        out = {"error": f"could not start a peer: {exc}"}
    print(json.dumps(out), flush=True)
    if "error" in out:
        log(out["error"])
        sys.exit(1)
    for side in ("offerer", "answerer"):
        r = out[side]
        if isinstance(r, dict):
            log(f"{side}: {r.get('peer')} {r.get('direction')} {r.get('mode', '')} "
                f"{r.get('bytes')} B in {r.get('messages')} msgs, {r.get('seconds', 0):.3f} s, "
                f"{r.get('mbps', 0):.1f} Mbit/s, setup_ms={r.get('setup_ms')}, "
                f"intact={r.get('intact')}")


if __name__ == "__main__":
    main()
