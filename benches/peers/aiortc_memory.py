#!/usr/bin/env python3
"""Memory and file descriptors per aiortc peer connection.

    PY=$(benches/setup-aiortc | tail -n1)
    $PY benches/peers/aiortc_memory.py [--counts 1,10,100] [--host 127.0.0.1]

In ONE process, connects pairs of aiortc peer connections to each other over
loopback (each pair = 2 RTCPeerConnections with one open data channel
"bench"), growing the population to each count of pairs in turn, and after
every step measures the process RSS (VmRSS from /proc/self/status) and its
open file descriptors.  The baseline is measured after the imports, before the
first pair.  Prints one JSON line:

  {"peer":"aiortc","version":...,"baseline_rss_kib":...,
   "points":[{"pairs":K,"connections":2K,"rss_kib":...,"fds":...,
              "per_connection_kib":(rss-baseline)/(2K),...}, ...]}

Counts are cumulative (the 10-pair point reuses the pair of the 1-pair point),
so RSS is never measured after closing connections, where the allocator would
keep freed memory.  Each step is time-boxed (--step-timeout, default 120 s):
a step that runs out reports the pairs reached and the run stops there.
"""

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aiortc_peer import restrict_host  # noqa: E402

log = logging.getLogger("aiortc_memory")


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


async def make_pair():
    from aiortc import RTCConfiguration, RTCPeerConnection

    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    loop = asyncio.get_running_loop()
    a_open = loop.create_future()
    b_open = loop.create_future()
    dc = a.createDataChannel("bench")
    dc.on("open", lambda: a_open.done() or a_open.set_result(dc))

    @b.on("datachannel")
    def on_dc(channel) -> None:
        if channel.readyState == "open":
            b_open.done() or b_open.set_result(channel)
        else:
            channel.on("open", lambda: b_open.done() or b_open.set_result(channel))

    try:
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        await asyncio.gather(a_open, b_open)
    except BaseException:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)
        raise
    return a, b


async def grow(pairs: list, target: int, deadline: float, batch: int) -> None:
    """Add pairs (`batch` at a time) until len(pairs) == target or deadline."""
    while len(pairs) < target:
        left = deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        n = min(batch, target - len(pairs))
        tasks = [asyncio.ensure_future(make_pair()) for _ in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=left)
        for t in pending:
            t.cancel()
        for t in done:
            if not t.cancelled() and t.exception() is None:
                pairs.append(t.result())
            elif not t.cancelled():
                log.warning("pair failed: %r", t.exception())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            raise asyncio.TimeoutError


async def amain(args) -> dict:
    import aiortc

    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    # Imports done and one event loop running: this is the baseline.
    gc.collect()
    baseline = vm_rss_kib()
    baseline_fds = open_fds()
    out = {
        "peer": "aiortc",
        "version": aiortc.__version__,
        "python": sys.version.split()[0],
        "baseline_rss_kib": baseline,
        "baseline_fds": baseline_fds,
        "points": [],
    }
    pairs: list = []
    t_start = time.monotonic()
    for k in counts:
        t0 = time.monotonic()
        timed_out = False
        try:
            await grow(pairs, k, t0 + args.step_timeout, args.batch)
        except asyncio.TimeoutError:
            timed_out = True
        setup_seconds = time.monotonic() - t0
        # Let the connections settle (ICE consent checks, SCTP heartbeats)
        # before measuring, as a long-lived service would.
        await asyncio.sleep(args.settle)
        gc.collect()
        reached = len(pairs)
        rss = vm_rss_kib()
        fds = open_fds()
        conns = 2 * reached
        point = {
            "pairs": reached,
            "connections": conns,
            "rss_kib": rss,
            "fds": fds,
            "threads": threads(),
            "per_connection_kib": (rss - baseline) / conns if conns else None,
            "per_connection_fds": (fds - baseline_fds) / conns if conns else None,
            "setup_seconds": setup_seconds,  # to connect this step's new pairs
        }
        if timed_out:
            point["timed_out"] = True
            point["requested_pairs"] = k
        prev = out["points"][-1] if out["points"] else None
        if prev and conns > prev["connections"]:
            # Cost of each connection added since the previous point: free of
            # the one-off costs (lazy imports, OpenSSL setup) of the first pair.
            point["marginal_kib_per_connection"] = (
                (rss - prev["rss_kib"]) / (conns - prev["connections"]))
        out["points"].append(point)
        log.info("%s", json.dumps(point))
        if timed_out:
            break
    out["total_seconds"] = time.monotonic() - t_start
    await asyncio.gather(*(pc.close() for pair in pairs for pc in pair),
                         return_exceptions=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="aiortc memory per peer connection")
    ap.add_argument("--counts", default="1,10,100", help="pair counts (default 1,10,100)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--step-timeout", type=float, default=120.0,
                    help="seconds allowed to reach each count (default 120)")
    ap.add_argument("--batch", type=int, default=10,
                    help="pairs connected concurrently (default 10)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait before each measurement (default 1)")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    args = ap.parse_args()
    # -v: this script's progress; -vv: aiortc/aioice INFO too; -vvv: DEBUG.
    logging.basicConfig(stream=sys.stderr,
                        level=max(logging.DEBUG, logging.WARNING - 10 * (args.verbose - 1)),
                        format="[aiortc_memory %(name)s %(levelname)s] %(message)s")
    log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    restrict_host(args.host)
    code = 0
    try:
        out = asyncio.run(amain(args))
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    print(json.dumps(out, separators=(",", ":")), flush=True)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
