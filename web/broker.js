// The page's "via broker" mode (docs/fleet.md): the page reaches a device through the MQTT
// broker the fleet uses, over MQTT-over-WebSocket (mqtt.js), so neither needs to reach the
// other's HTTP port. With prefix P, device D and this page's client id C (the session):
//   P/+/status   retained {"online":..,"streams":[..],"version":..}: the devices to pick from
//   P/D/in/C     page -> device: {"type":"hello"}, the offer, candidates (null = end), bye
//   P/D/out/C    device -> page: {"type":"ice-servers","value":[..]} (answering hello), the
//                answer, candidates, {"type":"error","value":".."}, bye
// Bodies are those of /ws. Nothing here assumes the page came from the device: it works from
// any static web server or file://. app.js calls prepare() before it makes its
// RTCPeerConnection (the ICE servers come from the device), start() after, close() last.
'use strict';

window.smolrtcBroker = (() => {
  const $ = (id) => document.getElementById(id);
  const STATUS_WAIT_MS = 1500; // retained statuses come right after the SUBACK
  const REPLY_WAIT_MS = 10000;
  const size = (text) => new TextEncoder().encode(text).length;
  const ui = {
    section: $('broker'), url: $('broker-url'), user: $('broker-user'), password: $('broker-password'),
    prefix: $('broker-prefix'), device: $('broker-device'), find: $('broker-find'), relay: $('broker-relay'),
  };

  /** Broker settings from a run's options (query parameters) or the form. */
  function options(o) {
    const bool = (v) => v === true || v === 1 || v === '1' || v === 'true';
    return {
      broker: String(o.broker || '').trim(),
      user: String(o.user || ''),
      password: String(o.password || ''),
      prefix: String(o.prefix || 'smolrtc').trim() || 'smolrtc',
      device: String(o.device || '').trim(),
      relay: bool(o.relay),
    };
  }

  function uiOptions() {
    return options({ broker: ui.url.value, user: ui.user.value, password: ui.password.value,
      prefix: ui.prefix.value, device: ui.device.value, relay: ui.relay.checked });
  }

  function sync(o) {
    const b = options(o);
    if (b.broker) ui.url.value = b.broker;
    if (b.user) ui.user.value = b.user;
    if (b.password) ui.password.value = b.password;
    ui.prefix.value = b.prefix;
    ui.relay.checked = b.relay;
    if (b.device) showDevices([{ id: b.device, online: true }], b.device);
  }

  /** Topic names must not hold MQTT wildcards or separators where a name is expected. */
  function checkName(what, v) {
    if (!v || /[+#/]/.test(v)) throw new Error(`${what} ${JSON.stringify(v)}: must be non-empty, without / + #`);
  }

  /** `P/D/status` -> D (null for anything else). */
  function statusDevice(prefix, topic) {
    const p = topic.split('/');
    return p.length === 3 && p[0] === prefix && p[2] === 'status' ? p[1] : null;
  }

  /** Connects and collects the retained statuses for a moment: [{id, online, streams, version}]. */
  async function collectStatuses(client, prefix, until) {
    const seen = new Map();
    const prev = client.onMessage;
    client.onMessage = (topic, text, retained) => {
      const id = statusDevice(prefix, topic);
      if (id === null) return prev && prev(topic, text, retained);
      let v = null;
      try { v = JSON.parse(text); } catch (_) { /* not ours */ }
      if (v && typeof v === 'object') {
        seen.set(id, { id, online: v.online === true, streams: Array.isArray(v.streams) ? v.streams : [], version: v.version || '' });
      }
    };
    await client.subscribe(`${prefix}/+/status`);
    const t0 = performance.now();
    while (performance.now() - t0 < STATUS_WAIT_MS && !until(seen)) await new Promise((r) => setTimeout(r, 50));
    return seen;
  }

  function showDevices(list, keep) {
    ui.device.replaceChildren(...list.map((d) => {
      const opt = document.createElement('option');
      opt.value = d.id;
      opt.textContent = d.online ? `${d.id}${d.streams && d.streams.length ? ' (streams: ' + d.streams.join(', ') + ')' : ''}` : `${d.id} (offline)`;
      opt.disabled = !d.online;
      return opt;
    }));
    const firstOnline = list.find((d) => d.online);
    if (keep && list.some((d) => d.id === keep && d.online)) ui.device.value = keep;
    else if (firstOnline) ui.device.value = firstOnline.id;
  }

  /** The "Find devices" button: a short connection of its own, then the list in the form. */
  async function findDevices(log) {
    const b = uiOptions();
    checkName('prefix', b.prefix);
    const c = await SmolrtcMqtt.connect(b.broker, { username: b.user, password: b.password });
    try {
      const seen = await collectStatuses(c, b.prefix, () => false);
      const list = [...seen.values()].sort((x, y) => x.id.localeCompare(y.id));
      showDevices(list, b.device);
      log(`broker: ${list.filter((d) => d.online).length} device(s) online of ${list.length} seen`);
      return list;
    } finally {
      c.close();
    }
  }

  class Signaling {
    /** `s`: app.js's Session (applyRemote, createAndSetLocal, addRemoteCandidate, fail, trickle). */
    constructor(s, o, log) {
      this.s = s;
      this.o = options(o);
      this.log = log;
      this.client = null;
      this.device = null;
      this.devices = [];
      this.replies = []; // messages from the device before start() wants them
      this.waiting = null;
      this.chain = Promise.resolve();
      this.counts = { sent: 0, sent_bytes: 0, received: 0, received_bytes: 0 };
      this.iceServers = [];
    }

    topic(dir) {
      return `${this.o.prefix}/${this.device}/${dir}/${this.client.clientId}`;
    }

    async send(msg) {
      const text = JSON.stringify(msg);
      this.counts.sent++;
      this.counts.sent_bytes += size(text);
      await this.client.publish(this.topic('in'), text);
    }

    /** Connects, picks the device, says hello; returns the RTCConfiguration to use. */
    async prepare(config) {
      const o = this.o;
      if (!o.broker) throw new Error('broker mode: enter the broker\'s WebSocket URL (ws://HOST:PORT or wss://…)');
      checkName('prefix', o.prefix);
      if (o.device) checkName('device', o.device);
      this.log(`broker: connecting to ${o.broker}${o.user ? ' as ' + o.user : ''}`);
      const c = this.client = await SmolrtcMqtt.connect(o.broker, { username: o.user, password: o.password });
      this.log(`broker: connected, client id ${c.clientId}`);
      c.onClose = (reason) => {
        if (!this.s.closing) this.log(`broker: ${reason}`, this.s.firstOpenAt === null ? 'error' : 'warn');
        if (!this.s.closing && this.s.firstOpenAt === null) this.s.fail(new Error(`broker: ${reason}`));
      };
      c.onMessage = (topic, text) => this.onMessage(topic, text);
      const seen = await collectStatuses(c, o.prefix, (m) => !!o.device && m.has(o.device));
      this.devices = [...seen.values()].sort((x, y) => x.id.localeCompare(y.id));
      this.log(`broker: ${this.devices.map((d) => `${d.id} ${d.online ? 'online' : 'offline'}`).join(', ') || 'no device status seen'}`);
      if (o.device) {
        const d = seen.get(o.device);
        if (!d) throw new Error(`broker: no status from device "${o.device}" (not on this broker, or the ACL hides it)`);
        if (!d.online) throw new Error(`broker: device "${o.device}" is offline`);
        this.device = o.device;
      } else {
        const d = this.devices.find((x) => x.online);
        if (!d) throw new Error('broker: no device is online');
        this.device = d.id;
      }
      // Subscribed before hello, so no reply can be missed.
      await c.subscribe(`${o.prefix}/${this.device}/out/${c.clientId}`);
      await this.send({ type: 'hello' });
      const reply = await this.next('ice-servers', REPLY_WAIT_MS);
      this.iceServers = Array.isArray(reply.value) ? reply.value : [];
      this.log(`broker: device ${this.device} gave ${this.iceServers.length} ICE server(s)` +
        (this.iceServers.length ? `: ${this.iceServers.map((s) => [].concat(s.urls).join(' ')).join(', ')}` : ''));
      const out = { ...config, iceServers: [...(config.iceServers || []), ...this.iceServers] };
      if (o.relay) out.iceTransportPolicy = 'relay';
      return out;
    }

    /** Offers, then trickles the page's candidates; the device's replies are handled as they come. */
    async start() {
      const s = this.s;
      const pending = [];
      let offerSent = false;
      s.trickle = (c) => {
        const msg = { type: 'candidate', value: c && { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } };
        if (offerSent) this.send(msg).catch((e) => this.log(`broker: candidate not sent: ${e.message}`, 'warn'));
        else pending.push(msg);
      };
      const d = await s.createAndSetLocal('offer');
      await this.send({ type: 'description', value: { type: d.type, sdp: d.sdp } });
      offerSent = true;
      for (const m of pending.splice(0)) await this.send(m);
      // From here on the device's messages go to handle(), in order.
      const queued = this.replies.splice(0);
      this.started = true;
      for (const m of queued) this.queue(m);
    }

    onMessage(topic, text) {
      if (topic !== this.topic('out')) return; // statuses after the first ones
      this.counts.received++;
      this.counts.received_bytes += size(text);
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (_) {
        this.log(`broker: a reply that is not JSON: ${text.slice(0, 120)}`, 'warn');
        return;
      }
      if (this.waiting && msg.type === this.waiting.type) {
        const w = this.waiting;
        this.waiting = null;
        w.resolve(msg);
      } else if (this.waiting && msg.type === 'error') {
        const w = this.waiting;
        this.waiting = null;
        w.reject(new Error(`device: ${msg.value}`));
      } else if (this.started) {
        this.queue(msg);
      } else {
        this.replies.push(msg);
      }
    }

    queue(msg) {
      this.chain = this.chain.then(() => this.handle(msg)).catch((e) => this.s.fail(e));
    }

    /** The next reply of `type` (before start()). */
    next(type, ms) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiting = null;
          reject(new Error(`broker: no ${type} from device ${this.device} within ${ms / 1000} s (is it connected to this broker?)`));
        }, ms);
        this.waiting = {
          type,
          resolve: (v) => { clearTimeout(timer); resolve(v); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        };
      });
    }

    async handle(msg) {
      const s = this.s;
      if (msg.type === 'description') {
        const d = msg.value;
        if (!d || d.type !== 'answer' || typeof d.sdp !== 'string') throw new Error('broker: the device sent something other than an answer');
        await s.applyRemote({ type: 'answer', sdp: d.sdp });
      } else if (msg.type === 'candidate') {
        await s.addRemoteCandidate(msg.value);
      } else if (msg.type === 'error') {
        const m = `device: ${typeof msg.value === 'string' ? msg.value : JSON.stringify(msg.value)}`;
        if (s.firstOpenAt === null) throw new Error(m);
        this.log(m, 'error');
      } else if (msg.type === 'bye') {
        this.log('broker: the device ended the session', s.closing ? 'info' : 'warn');
      } else if (msg.type !== 'ice-servers') {
        this.log(`broker: unknown message type ${JSON.stringify(msg.type)}`, 'warn');
      }
    }

    /** Says bye (so the device frees the session at once) and leaves the broker. */
    async close() {
      const c = this.client;
      if (!c || c.closed) return;
      if (this.device) {
        try {
          await this.send({ type: 'bye' });
        } catch (e) {
          this.log(`broker: bye not sent: ${e.message}`, 'warn');
        }
      }
      c.close();
      this.log('broker: disconnected');
    }

    /** For the run's report: the device, what was seen, and the session's traffic. */
    report() {
      const c = this.client;
      return {
        device: this.device, client_id: c && c.clientId, devices: this.devices,
        ice_servers: this.iceServers.length, relay: this.o.relay, messages: { ...this.counts },
        wire: c ? { sent: { ...c.sent }, received: { ...c.received } } : null,
      };
    }
  }

  // The form: shown in broker mode only; "Find devices" fills the device list. The device's
  // bearer token is not asked for then (the broker's account is the credential).
  const mode = $('mode');
  const showSection = () => {
    ui.section.hidden = mode.value !== 'broker';
    $('token-field').hidden = mode.value === 'broker';
  };
  mode.addEventListener('change', showSection);
  showSection();
  ui.find.addEventListener('click', async () => {
    ui.find.disabled = true;
    try {
      await findDevices((t, level) => window.smolrtcLog(t, level));
    } catch (e) {
      window.smolrtcLog(`broker: ${e.message || e}`, 'error');
    } finally {
      ui.find.disabled = false;
    }
  });
  // A page served over https may only open wss://.
  ui.url.placeholder = `${location.protocol === 'https:' ? 'wss' : 'ws'}://broker.example:8083`;

  return { Signaling, options, uiOptions, sync, showSection };
})();
