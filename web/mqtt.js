// A small MQTT 3.1.1 client over WebSocket (subprotocol "mqtt") for the page's "via broker"
// mode (broker.js). What it does: CONNECT with a user name and password (clean session),
// SUBSCRIBE, PUBLISH at QoS 0 or 1 both ways (QoS 1 acknowledged), PINGREQ keep-alive,
// DISCONNECT. What it does not: QoS 2, a will, reconnecting (a page whose broker goes away
// ends its signaling; an open peer connection goes on without it).
//
//   const c = await SmolrtcMqtt.connect('wss://broker:8083', { clientId, username, password });
//   c.onMessage = (topic, text, retained) => ...;
//   await c.subscribe('smolrtc/+/status');
//   await c.publish('smolrtc/dev1/in/' + c.clientId, JSON.stringify({ type: 'hello' }));
//   c.close();
'use strict';

window.SmolrtcMqtt = (() => {
  const CONNECT = 1, CONNACK = 2, PUBLISH = 3, PUBACK = 4, SUBSCRIBE = 8, SUBACK = 9;
  const PINGREQ = 12, PINGRESP = 13, DISCONNECT = 14;
  const REFUSED = { 1: 'unacceptable protocol version', 2: 'client id rejected', 3: 'server unavailable',
    4: 'bad user name or password', 5: 'not authorized (wrong user name or password?)' };
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  function concat(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  const u16 = (n) => Uint8Array.of(n >> 8, n & 0xff);

  /** A length-prefixed UTF-8 string (MQTT 3.1.1 §1.5.3). */
  function utf8(s) {
    const b = encoder.encode(s);
    if (b.length > 0xffff) throw new Error('MQTT: string longer than 65535 bytes');
    return concat([u16(b.length), b]);
  }

  /** Fixed header (type, flags, remaining length as a varint) followed by `body`. */
  function packet(type, flags, body) {
    const len = [];
    let n = body.length;
    if (n > 268435455) throw new Error('MQTT: packet too large');
    do {
      let digit = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) digit |= 0x80;
      len.push(digit);
    } while (n > 0);
    return concat([Uint8Array.of((type << 4) | flags, ...len), body]);
  }

  class Client {
    constructor(ws, clientId, keepAlive, timeoutMs) {
      this.ws = ws;
      this.clientId = clientId;
      this.timeoutMs = timeoutMs;
      this.keepAlive = keepAlive;
      this.buf = new Uint8Array(0);
      this.nextId = 1;
      this.acks = new Map(); // packet id -> {resolve, reject, timer}
      this.onMessage = null; // (topic, text, retained)
      this.onClose = null; // (reason)
      this.closed = false;
      this.connack = null; // {resolve, reject} while CONNECT waits
      this.pingOutstanding = false;
      this.sent = { packets: 0, bytes: 0 };
      this.received = { packets: 0, bytes: 0 };
    }

    send(bytes) {
      if (this.closed || this.ws.readyState !== WebSocket.OPEN) throw new Error('MQTT: not connected');
      this.ws.send(bytes);
      this.sent.packets++;
      this.sent.bytes += bytes.length;
    }

    /** Packet id for SUBSCRIBE / PUBLISH QoS 1, resolved by its SUBACK / PUBACK. */
    expectAck(what) {
      const id = this.nextId;
      this.nextId = this.nextId === 0xffff ? 1 : this.nextId + 1;
      const done = new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.acks.delete(id);
          reject(new Error(`MQTT: no acknowledgement of ${what} within ${this.timeoutMs / 1000} s`));
        }, this.timeoutMs);
        this.acks.set(id, { resolve, reject, timer });
      });
      return { id, done };
    }

    settle(id, value) {
      const a = this.acks.get(id);
      if (!a) return; // a late or duplicate acknowledgement
      this.acks.delete(id);
      clearTimeout(a.timer);
      a.resolve(value);
    }

    /** Subscribes at QoS 1; resolves with the granted QoS, rejects if the broker refuses. */
    async subscribe(topic) {
      const { id, done } = this.expectAck(`SUBSCRIBE ${topic}`);
      this.send(packet(SUBSCRIBE, 0x2, concat([u16(id), utf8(topic), Uint8Array.of(1)])));
      const granted = await done;
      if (granted === 0x80) throw new Error(`MQTT: the broker refused the subscription to ${topic}`);
      return granted;
    }

    /** Publishes `text`; with QoS 1 resolves once the broker acknowledged it. */
    async publish(topic, text, { qos = 1, retain = false } = {}) {
      const payload = encoder.encode(text);
      const flags = (qos << 1) | (retain ? 1 : 0);
      if (qos === 0) {
        this.send(packet(PUBLISH, flags, concat([utf8(topic), payload])));
        return;
      }
      const { id, done } = this.expectAck(`PUBLISH ${topic}`);
      this.send(packet(PUBLISH, flags, concat([utf8(topic), u16(id), payload])));
      await done;
    }

    /** DISCONNECT (the broker then drops the session without a will) and close. */
    close() {
      if (this.closed) return;
      try { this.send(packet(DISCONNECT, 0, new Uint8Array(0))); } catch (_) { /* already gone */ }
      this.end('closed by the page');
      this.ws.close(1000);
    }

    end(reason) {
      if (this.closed) return;
      this.closed = true;
      clearInterval(this.pinger);
      const err = new Error(`MQTT: ${reason}`);
      for (const a of this.acks.values()) {
        clearTimeout(a.timer);
        a.reject(err);
      }
      this.acks.clear();
      if (this.connack) this.connack.reject(err);
      if (this.onClose) this.onClose(reason);
    }

    startPings() {
      if (!this.keepAlive) return;
      // A PINGREQ at 3/4 of the keep-alive; no PINGRESP by the next one: the broker is gone.
      this.pinger = setInterval(() => {
        if (this.pingOutstanding) {
          this.end('the broker stopped answering (no PINGRESP)');
          this.ws.close();
          return;
        }
        this.pingOutstanding = true;
        try { this.send(packet(PINGREQ, 0, new Uint8Array(0))); } catch (_) { /* closing */ }
      }, this.keepAlive * 750);
    }

    /** Appends WebSocket data and handles every complete packet in it. */
    feed(data) {
      this.received.bytes += data.byteLength;
      this.buf = concat([this.buf, new Uint8Array(data)]);
      for (;;) {
        if (this.buf.length < 2) return;
        let len = 0, mult = 1, at = 1;
        for (;;) {
          if (at >= this.buf.length) return; // the length itself is incomplete
          if (at > 4) throw new Error('MQTT: malformed remaining length');
          const d = this.buf[at++];
          len += (d & 0x7f) * mult;
          mult *= 128;
          if (!(d & 0x80)) break;
        }
        if (this.buf.length < at + len) return;
        const header = this.buf[0];
        const body = this.buf.subarray(at, at + len);
        this.buf = this.buf.slice(at + len);
        this.received.packets++;
        this.handle(header >> 4, header & 0xf, body);
      }
    }

    handle(type, flags, body) {
      const id = () => (body[0] << 8) | body[1];
      switch (type) {
        case CONNACK: {
          const code = body[1];
          const c = this.connack;
          this.connack = null;
          if (!c) return;
          if (code === 0) c.resolve();
          else c.reject(new Error(`MQTT: connection refused: ${REFUSED[code] || 'code ' + code}`));
          return;
        }
        case PUBLISH: {
          const qos = (flags >> 1) & 3;
          const tlen = (body[0] << 8) | body[1];
          const topic = decoder.decode(body.subarray(2, 2 + tlen));
          let at = 2 + tlen;
          if (qos > 0) {
            const pid = (body[at] << 8) | body[at + 1];
            at += 2;
            // QoS 1 is acknowledged; QoS 2 is never asked for (SUBSCRIBE grants at most 1).
            this.send(packet(PUBACK, 0, u16(pid)));
          }
          try {
            if (this.onMessage) this.onMessage(topic, decoder.decode(body.subarray(at)), (flags & 1) === 1);
          } catch (e) { // the handler's fault, not the connection's
            console.error('smolrtc MQTT message handler:', e);
          }
          return;
        }
        case PUBACK: return this.settle(id(), 0);
        case SUBACK: return this.settle(id(), body[2]);
        case PINGRESP:
          this.pingOutstanding = false;
          return;
        default:
          throw new Error(`MQTT: unexpected packet type ${type}`);
      }
    }
  }

  /** A client id of letters and digits (any MQTT 3.1.1 broker takes up to 23 of them). */
  function randomClientId(prefix = 'web') {
    const abc = 'abcdefghijklmnopqrstuvwxyz0123456789';
    const r = crypto.getRandomValues(new Uint8Array(12));
    return prefix + Array.from(r, (b) => abc[b % abc.length]).join('');
  }

  /** Opens the WebSocket, sends CONNECT and resolves with a Client once CONNACK accepts it. */
  function connect(url, { clientId = randomClientId(), username = '', password = '', keepAlive = 30, timeoutMs = 10000 } = {}) {
    if (!/^wss?:\/\//i.test(url)) throw new Error(`broker URL ${JSON.stringify(url)}: expected ws://HOST:PORT[/PATH] or wss://…`);
    let ws;
    try {
      ws = new WebSocket(url, 'mqtt');
    } catch (e) {
      throw new Error(`broker URL ${url}: ${e.message || e}`);
    }
    ws.binaryType = 'arraybuffer';
    const c = new Client(ws, clientId, keepAlive, timeoutMs);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        c.end(`no answer from ${url} within ${timeoutMs / 1000} s`);
        ws.close();
      }, timeoutMs);
      c.connack = {
        resolve: () => { clearTimeout(timer); c.startPings(); resolve(c); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      ws.addEventListener('open', () => {
        // Flags: user name, password, clean session.
        const flags = (username ? 0x80 : 0) | (password ? 0x40 : 0) | 0x02;
        const parts = [utf8('MQTT'), Uint8Array.of(4, flags), u16(keepAlive), utf8(clientId)];
        if (username) parts.push(utf8(username));
        if (password) parts.push(utf8(password));
        c.send(packet(CONNECT, 0, concat(parts)));
      });
      ws.addEventListener('message', (ev) => {
        try {
          c.feed(ev.data);
        } catch (e) {
          c.end(e.message);
          ws.close();
        }
      });
      ws.addEventListener('error', () => c.end(`WebSocket error on ${url}`));
      ws.addEventListener('close', (ev) => c.end(`connection to the broker closed (code ${ev.code})`));
    });
  }

  return { connect, randomClientId };
})();
