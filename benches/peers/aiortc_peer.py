#!/usr/bin/env python3
"""aiortc benchmark peer for smolrtc's interop/throughput benchmarks.

Speaks the smolrtc bench-peer line protocol on stdin/stdout (one JSON object
per line, UTF-8).  Run it with the interpreter printed by benches/setup-aiortc:

    PY=$(benches/setup-aiortc | tail -n1)
    $PY benches/peers/aiortc_peer.py --role offer  --direction send --bytes 67108864
    $PY benches/peers/aiortc_peer.py --role answer --direction recv --bytes 67108864

Protocol summary (see benches/peers/README.md for the full contract):
  offerer: prints {"type":"offer","sdp":...}, reads {"type":"answer","sdp":...}
  answerer: reads the offer line, prints the answer line
  The offerer creates the single data channel "bench"; the sender streams
  --bytes bytes where byte i of the stream is i % 251, paced by bufferedAmount,
  then sends the text "done"; the receiver checks the bytes and answers
  "ack <bytes_received>".  Each side prints one {"result": {...}} line (or
  {"error": "..."} and exits 1).  Logs go to stderr only.
"""

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import time

PATTERN_MOD = 251
HIGH_WATER = 1 << 20  # stop queueing above 1 MiB of bufferedAmount
LOW_WATER = 256 << 10  # resume when bufferedAmount falls to 256 KiB
DONE_GRACE_S = 0.25  # unordered receiver: quiet time after "done" for stragglers
LINGER_S = 3.0  # receiver: wait this long for the sender to hang up after the ack
DONE_RESEND_S = 1.0  # partially reliable sender: resend "done" until acked

log = logging.getLogger("aiortc_peer")


def now() -> float:
    return time.perf_counter()


def emit(obj) -> None:
    """Print one protocol line on stdout and flush it."""
    try:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except OSError as exc:  # e.g. the driver went away (EPIPE)
        log.warning("cannot write to stdout: %r", exc)


def restrict_host(host: str) -> None:
    """Make aioice gather host candidates on `host` only.

    aioice (aiortc's ICE agent) has no public option for choosing interfaces:
    it enumerates every interface through ifaddr and explicitly skips
    127.0.0.1.  Its gatherer looks the enumeration function up as a module
    global, so replacing that function is enough to gather on one address.
    An empty string or "all" keeps aiortc's default behaviour.
    """
    if host in ("", "all", "any"):
        return
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [host]


class Pattern:
    """Holds a window of the i % 251 stream, large enough for any message."""

    def __init__(self, size: int) -> None:
        self.buf = b""
        self.ensure(size)

    def ensure(self, size: int) -> None:
        need = size + PATTERN_MOD
        if len(self.buf) < need:
            reps = need // PATTERN_MOD + 1
            self.buf = bytes(range(PATTERN_MOD)) * reps

    def slice(self, offset: int, length: int) -> bytes:
        """Bytes offset..offset+length of the stream."""
        self.ensure(length)
        start = offset % PATTERN_MOD
        return self.buf[start : start + length]

    def is_contiguous(self, data: bytes) -> bool:
        """True when data[k+1] == (data[k] + 1) % 251 for every k."""
        if not data:
            return True
        if data[0] >= PATTERN_MOD:
            return False
        return data == self.slice(data[0], len(data))


def channel_mode(dc) -> str:
    if dc.maxRetransmits is not None:
        kind = f"max-retransmits={dc.maxRetransmits}"
    elif dc.maxPacketLifeTime is not None:
        kind = f"max-packet-life-time={dc.maxPacketLifeTime}"
    else:
        kind = "reliable"
    return kind + ("" if dc.ordered else ",unordered")


def is_reliable(dc) -> bool:
    return dc.maxRetransmits is None and dc.maxPacketLifeTime is None


class StdinLines:
    """Async line reader on stdin (a pipe or a tty)."""

    def __init__(self) -> None:
        self.reader = None

    async def readline(self) -> str:
        loop = asyncio.get_running_loop()
        if self.reader is None:
            try:
                reader = asyncio.StreamReader(limit=1 << 24)
                proto = asyncio.StreamReaderProtocol(reader)
                await loop.connect_read_pipe(lambda: proto, sys.stdin)
                self.reader = reader
            except (OSError, ValueError):
                self.reader = False  # e.g. a regular file: fall back to a thread
        while True:
            if self.reader:
                raw = await self.reader.readline()
                line = raw.decode("utf-8")
            else:
                line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                raise RuntimeError("stdin closed before the signaling line arrived")
            if line.strip():
                return line


def parse_signal(line: str, want: str) -> str:
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"bad signaling line ({exc}): {line[:200]!r}")
    if not isinstance(msg, dict) or msg.get("type") != want or "sdp" not in msg:
        raise RuntimeError(f"expected a {want!r} line, got: {line[:200]!r}")
    return msg["sdp"]


def accept_prflx(sdp: str) -> str:
    """Let aiortc learn the remote peer from its checks when the SDP has no
    candidates (a driver may hide them, e.g. to route through a relay).

    With a=end-of-candidates and no a=candidate, aioice fails ICE at once
    ("no candidate pairs") instead of waiting for peer-reflexive candidates,
    and an aiortc answerer then even answers without candidates.  Without the
    end-of-candidates marker it accepts the peer's checks as prflx candidates.
    """
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    if any(line.startswith("a=candidate:") for line in lines):
        return sdp
    if "a=end-of-candidates" not in lines:
        return sdp
    log.info("remote SDP has no candidates: dropping a=end-of-candidates, "
             "the peer will be learnt from its connectivity checks")
    sep = "\r\n" if "\r\n" in sdp else "\n"
    return sep.join(line for line in lines if line != "a=end-of-candidates")


class Peer:
    def __init__(self, args) -> None:
        self.args = args
        self.phase = "init"
        self.pc = None
        self.dc = None
        self.pattern = Pattern(args.message_size)
        self.setup_ms = None
        self.answer_setup_ms = None
        self.gather_ms = None
        self.remote_max_message_size = None
        self.failure = None  # set from callbacks, raised by the main task
        self.failed = asyncio.Event()

    # -- helpers -------------------------------------------------------------

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self.failed.set()

    async def wait_or_fail(self, aw):
        """Await `aw` unless a callback reported a failure first."""
        task = asyncio.ensure_future(aw)
        failed = asyncio.ensure_future(self.failed.wait())
        done, _ = await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            raise RuntimeError(self.failure)
        failed.cancel()
        return task.result()

    def watch_connection(self) -> None:
        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            state = self.pc.connectionState
            log.info("connection state: %s", state)
            if state == "failed":
                self.fail(f"peer connection failed during {self.phase}")

    # -- signaling -----------------------------------------------------------

    async def connect(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        args = self.args
        stdin = StdinLines()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.watch_connection()
        opened = asyncio.get_running_loop().create_future()

        if args.role == "offer":
            opts = {"ordered": not args.unordered}
            if args.max_retransmits is not None:
                opts["maxRetransmits"] = args.max_retransmits
            if args.max_packet_life_time is not None:
                opts["maxPacketLifeTime"] = args.max_packet_life_time
            self.dc = self.pc.createDataChannel("bench", **opts)
            self.channel_hooks(self.dc)

            @self.dc.on("open")
            def on_open() -> None:
                if not opened.done():
                    opened.set_result(now())

            self.phase = "offer"
            t0 = now()
            offer = await self.pc.createOffer()
            await self.pc.setLocalDescription(offer)  # gathers all candidates
            self.gather_ms = (now() - t0) * 1000.0
            emit({"type": "offer", "sdp": self.pc.localDescription.sdp})
            self.phase = "waiting for answer"
            sdp = accept_prflx(parse_signal(await stdin.readline(), "answer"))
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            self.phase = "connecting"
            t_open = await self.wait_or_fail(opened)
            self.setup_ms = (t_open - t0) * 1000.0
        else:

            @self.pc.on("datachannel")
            def on_datachannel(channel) -> None:
                if channel.label != "bench":
                    log.warning("ignoring data channel %r", channel.label)
                    return
                self.dc = channel
                if channel.readyState == "open":
                    if not opened.done():
                        opened.set_result(now())
                else:

                    @channel.on("open")
                    def on_open() -> None:
                        if not opened.done():
                            opened.set_result(now())

                # Handlers must be attached before control returns to the
                # event loop, or the first messages could be missed.
                self.channel_hooks(channel)

            self.phase = "waiting for offer"
            sdp = accept_prflx(parse_signal(await stdin.readline(), "offer"))
            t_offer = now()
            self.phase = "answer"
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if self.pc.sctp is None:
                raise RuntimeError("the offer has no data-channel (m=application) section")
            t_gather = now()
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            self.gather_ms = (now() - t_gather) * 1000.0
            emit({"type": "answer", "sdp": self.pc.localDescription.sdp})
            self.phase = "connecting"
            t_open = await self.wait_or_fail(opened)
            self.answer_setup_ms = (t_open - t_offer) * 1000.0

        sctp = self.pc.sctp
        if sctp is not None:
            self.remote_max_message_size = getattr(sctp, "_remote_max_message_size", None)
        log.info(
            "channel open (%s), setup %.1f ms, gathering %.1f ms",
            channel_mode(self.dc),
            self.setup_ms if self.setup_ms is not None else self.answer_setup_ms,
            self.gather_ms,
        )

    def channel_hooks(self, channel) -> None:
        """Attach the sender's or receiver's handlers to the bench channel."""
        raise NotImplementedError

    # -- result --------------------------------------------------------------

    def result(self, **fields) -> dict:
        import aiortc

        ru = resource.getrusage(resource.RUSAGE_SELF)
        seconds = fields.get("seconds") or 0.0
        nbytes = fields.get("bytes", 0)
        out = {
            "role": self.args.role,
            "direction": self.args.direction,
            "bytes": nbytes,
            "messages": fields.pop("messages", 0),
            "seconds": seconds,
            "mbps": (nbytes * 8 / seconds / 1e6) if seconds else 0.0,
            "setup_ms": self.setup_ms,
            "intact": fields.pop("intact", False),
            "peer": "aiortc",
            "version": aiortc.__version__,
            "rss_kib": ru.ru_maxrss,
            "cpu_seconds": ru.ru_utime + ru.ru_stime,
            "mode": channel_mode(self.dc) if self.dc is not None else None,
            "message_size": self.args.message_size,
            "gather_ms": self.gather_ms,
            "remote_max_message_size": self.remote_max_message_size,
        }
        if self.args.role == "answer":
            out["answer_setup_ms"] = self.answer_setup_ms
        out.update(fields)
        return out

    async def close(self) -> None:
        if self.pc is not None:
            try:
                await asyncio.wait_for(self.pc.close(), 5.0)
            except Exception as exc:  # closing is best effort
                log.warning("close: %r", exc)


class Sender(Peer):
    def __init__(self, args) -> None:
        super().__init__(args)
        self.ack = None  # future: bytes the receiver acknowledged

    def channel_hooks(self, channel) -> None:
        loop = asyncio.get_running_loop()
        self.low = asyncio.Event()
        self.ack = loop.create_future()

        @channel.on("bufferedamountlow")
        def on_low() -> None:
            self.low.set()

        @channel.on("message")
        def on_message(msg) -> None:
            if isinstance(msg, str) and msg.startswith("ack "):
                if not self.ack.done():
                    try:
                        self.ack.set_result((now(), int(msg[4:].strip())))
                    except ValueError:
                        self.fail(f"bad ack message {msg!r}")
                    self.low.set()  # an early ack (receiver gave up) ends sending
            else:
                log.warning("sender ignoring unexpected message of %d bytes", len(msg))

        @channel.on("close")
        def on_close() -> None:
            self.low.set()
            if not self.ack.done():
                self.fail(f"data channel closed during {self.phase}")

    async def run(self) -> dict:
        args = self.args
        await self.connect()
        dc = self.dc
        dc.bufferedAmountLowThreshold = LOW_WATER
        total, size = args.bytes, args.message_size
        self.phase = "sending"
        sent = messages = 0
        t_start = now()
        while sent < total:
            if self.ack.done():
                # Only a partially reliable receiver acks before "done": it gave
                # up after --silence-ms without a message.  Stop here.
                log.warning("receiver acked after %d of %d bytes; stopping", sent, total)
                break
            if dc.bufferedAmount > HIGH_WATER:
                self.low.clear()
                await self.wait_or_fail(self.low.wait())
                if dc.readyState != "open":
                    raise RuntimeError(f"data channel {dc.readyState} while sending")
                continue
            n = min(size, total - sent)
            dc.send(self.pattern.slice(sent, n))
            sent += n
            messages += 1
        stopped_early = sent < total
        if not stopped_early:
            dc.send("done")
        self.phase = "waiting for ack"
        if is_reliable(dc) or stopped_early:
            t_ack, acked = await self.wait_or_fail(self.ack)
        else:
            # "done" or the ack may be dropped on a partially reliable channel.
            while True:
                try:
                    t_ack, acked = await self.wait_or_fail(
                        asyncio.wait_for(asyncio.shield(self.ack), DONE_RESEND_S)
                    )
                    break
                except asyncio.TimeoutError:
                    log.info("no ack yet, resending done")
                    dc.send("done")
        seconds = t_ack - t_start
        # Reliable: the receiver got every byte.  Partially reliable: the
        # run completed (losses are expected and show in peer_bytes).
        if is_reliable(dc):
            intact = acked == total
        else:
            intact = not stopped_early and acked <= total
        log.info("sent %d bytes in %.3f s, peer acked %d", sent, seconds, acked)
        return self.result(
            bytes=sent, messages=messages, seconds=seconds, intact=intact, peer_bytes=acked,
            stopped_early=stopped_early,
        )


class Receiver(Peer):
    def channel_hooks(self, channel) -> None:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        self.closed = asyncio.Event()
        self.received = 0
        self.messages = 0
        self.bad = 0
        self.t_first = None
        self.t_last = None
        self.max_gap = 0.0
        self.done_at = None
        self.ordered_reliable = None

        @channel.on("message")
        def on_message(msg) -> None:
            if isinstance(msg, str):
                if msg == "done":
                    if self.done_at is None:
                        self.done_at = now()
                    if self.finished.done():
                        self.send_ack(channel)  # sender lost our ack: repeat it
                    else:
                        self.check_finished()
                else:
                    log.warning("receiver ignoring text message %r", msg[:80])
                return
            t = now()
            if self.t_first is None:
                self.t_first = t
                self.ordered_reliable = channel.ordered and is_reliable(channel)
            elif t - self.t_last > self.max_gap:
                self.max_gap = t - self.t_last
            self.t_last = t
            if self.ordered_reliable:
                ok = msg == self.pattern.slice(self.received, len(msg))
            else:
                ok = self.pattern.is_contiguous(msg)
            if not ok:
                self.bad += 1
                if self.bad == 1:
                    log.error("message %d at offset %d fails the pattern check",
                              self.messages, self.received)
            self.received += len(msg)
            self.messages += 1
            self.check_finished()

        @channel.on("close")
        def on_close() -> None:
            self.closed.set()
            if not self.finished.done():
                self.fail(f"data channel closed during {self.phase}")

    def check_finished(self) -> None:
        if self.finished.done():
            return
        dc = self.dc
        if dc is None:
            return
        if is_reliable(dc):
            if self.received >= self.args.bytes:
                self.finished.set_result("all bytes")
            elif self.done_at is not None and dc.ordered:
                # In-order reliable delivery: "done" after the data means short.
                self.finished.set_result("done before all bytes")
        elif self.done_at is not None and dc.ordered:
            self.finished.set_result("done")

    async def watchdog(self) -> None:
        """Finish on silence where "done" cannot be relied upon."""
        silence = self.args.silence_ms / 1000.0
        while not self.finished.done():
            await asyncio.sleep(0.05)
            t = now()
            dc = self.dc
            if dc is None or self.finished.done():
                continue
            last = self.t_last
            if self.done_at is not None:
                # unordered: data may still trail "done"; wait for a quiet spell
                ref = max(self.done_at, last or 0.0)
                limit = silence if is_reliable(dc) else DONE_GRACE_S
                if t - ref >= limit:
                    self.finished.set_result("done (after grace)")
            elif last is not None and not is_reliable(dc) and t - last >= silence:
                self.finished.set_result("silence")

    def send_ack(self, channel) -> None:
        if channel.readyState == "open":
            channel.send(f"ack {self.received}")

    async def run(self) -> dict:
        await self.connect()
        dc = self.dc
        self.phase = "receiving"
        dog = asyncio.ensure_future(self.watchdog())
        try:
            reason = await self.wait_or_fail(asyncio.shield(self.finished))
        finally:
            dog.cancel()
        self.send_ack(dc)
        seconds = (self.t_last - self.t_first) if self.t_first is not None else 0.0
        if is_reliable(dc):
            intact = self.bad == 0 and self.received == self.args.bytes
        else:
            intact = self.bad == 0 and self.received <= self.args.bytes
        log.info("finished (%s): %d bytes in %d messages, %.3f s, bad=%d",
                 reason, self.received, self.messages, seconds, self.bad)
        res = self.result(
            bytes=self.received, messages=self.messages, seconds=seconds, intact=intact,
            expected_bytes=self.args.bytes, bad_messages=self.bad, finished_on=reason,
            got_done=self.done_at is not None, max_gap_ms=self.max_gap * 1000.0,
        )
        return res

    async def linger(self) -> None:
        """Keep the association up until the sender hangs up (it closes once it
        has our ack), so closing here cannot abort the ack in flight."""
        self.phase = "lingering"
        try:
            await asyncio.wait_for(self.closed.wait(), LINGER_S)
        except asyncio.TimeoutError:
            log.info("sender did not hang up within %.1f s", LINGER_S)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("offer", "answer"), required=True)
    p.add_argument("--direction", choices=("send", "recv"), required=True)
    p.add_argument("--bytes", type=int, default=64 << 20)
    p.add_argument("--message-size", type=int, default=16384)
    p.add_argument("--unordered", action="store_true")
    rel = p.add_mutually_exclusive_group()
    rel.add_argument("--max-retransmits", type=int)
    rel.add_argument("--max-packet-life-time", type=int)
    p.add_argument("--host", default="127.0.0.1",
                   help='address to gather host candidates on ("all": every interface)')
    p.add_argument("--timeout", type=float, default=120.0,
                   help="hard limit for the whole run, in seconds (default 120)")
    p.add_argument("--silence-ms", type=int, default=10000,
                   help="partially reliable receiver: finish after this long without "
                        "a message when \"done\" never arrives (default 10000)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    if args.bytes < 0 or args.message_size <= 0:
        p.error("--bytes must be >= 0 and --message-size > 0")
    return args


async def amain(args) -> int:
    peer = Sender(args) if args.direction == "send" else Receiver(args)
    try:
        res = await asyncio.wait_for(peer.run(), args.timeout)
    except asyncio.TimeoutError:
        emit({"error": f"timeout after {args.timeout:g} s during {peer.phase}"})
        await peer.close()
        return 1
    except Exception as exc:
        log.debug("failure", exc_info=True)
        emit({"error": f"{type(exc).__name__}: {exc} (during {peer.phase})"})
        await peer.close()
        return 1
    emit({"result": res})
    if isinstance(peer, Receiver):
        await peer.linger()
    await peer.close()
    return 0


def main() -> None:
    args = parse_args()
    # -v: this peer's progress; -vv: aiortc/aioice INFO too; -vvv: DEBUG.
    logging.basicConfig(stream=sys.stderr,
                        level=max(logging.DEBUG, logging.WARNING - 10 * (args.verbose - 1)),
                        format="[aiortc_peer %(asctime)s %(name)s %(levelname)s] %(message)s")
    log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    restrict_host(args.host)
    try:
        code = asyncio.run(amain(args))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a stdin reader thread (regular-file stdin) or
    # leftover aiortc tasks must not keep the process alive.
    os._exit(code)


if __name__ == "__main__":
    main()
