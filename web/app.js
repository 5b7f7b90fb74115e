// smolrtc serve: the device's browser page.
//
// Signaling paths (all against the device that served this page, which refuses other
// origins and Host names, and JSON posted as anything but application/json):
//   http   POST /api/offer (application/json) {"type":"offer","sdp"} -> 200 {"type":"answer","sdp"}
//          (non-trickle)
//   whip   POST /whip (application/sdp) -> 201 + Location; trickle with PATCH, DELETE to end
//   ws     /ws (page offers; the session starts with that offer, so candidates wait for it)
//          or /ws?role=offer (server offers at once), rawrtc's JSON messages
//   manual copy/paste of one-line JSON descriptions (rawrtc's peer-connection flow)
//   broker through the fleet's MQTT broker over WebSocket (broker.js, mqtt.js): the page
//          need not come from the device
// Then rawrtc's channel flow (cat-noises, dinosaur-noises) and the echo/discard/chargen tests.
// Unattended runs: ?auto=1&mode=..&offering=..&echo=..&upload=..&download=..&report=/path,
// or window.smolrtcRun(options) -> Promise<report>.
'use strict';

(() => {
  const MiB = 1 << 20;
  const CHUNK = 16384; // bytes per message in the throughput tests
  const PATTERN = 251; // byte[i] = i % 251 over a whole transfer
  const MAX_BUFFERED = 4 * MiB;
  const GATHER_CAP_MS = 5000;
  const MODES = ['http', 'whip', 'ws', 'manual', 'broker'];
  // Modes where the page always offers.
  const OFFERS = ['http', 'whip', 'broker'];

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), mode: $('mode'), offering: $('offering'), iceUrl: $('ice-url'), token: $('token'),
    connect: $('connect'), disconnect: $('disconnect'),
    stConnection: $('st-connection'), stIce: $('st-ice'), stGathering: $('st-gathering'), stSignaling: $('st-signaling'),
    manual: $('manual'), localDesc: $('local-desc'), remoteDesc: $('remote-desc'),
    copyLocal: $('copy-local'), applyRemote: $('apply-remote'),
    rows: $('channel-rows'), sendForm: $('send-form'), sendChannel: $('send-channel'), sendText: $('send-text'),
    echoRun: $('echo-run'), echoResult: $('echo-result'),
    size: $('size'), uploadRun: $('upload-run'), downloadRun: $('download-run'),
    progress: $('progress'), transferResult: $('transfer-result'),
    log: $('log'), logClear: $('log-clear'),
  };

  // ---------------------------------------------------------------- log and small helpers

  const logLines = [];
  const MAX_DOM_LINES = 1500;

  function log(text, level = 'info') {
    const t = (performance.now() / 1000).toFixed(3).padStart(8, ' ');
    const line = `[${t}] ${level === 'info' ? '' : level + ': '}${text}`;
    logLines.push(line);
    if (logLines.length > 4000) logLines.splice(0, 2000);
    (level === 'error' ? console.error : level === 'warn' ? console.warn : console.log)('smolrtc ' + line);
    const el = ui.log;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    const div = document.createElement('div');
    if (level !== 'info') div.className = level;
    const ts = document.createElement('span');
    ts.className = 't';
    ts.textContent = `[${t}] `;
    div.append(ts, (level === 'info' ? '' : level + ': ') + text);
    el.append(div);
    while (el.childElementCount > MAX_DOM_LINES) el.firstElementChild.remove();
    if (atBottom) el.scrollTop = el.scrollHeight;
  }

  function setStatus(text, kind = '') {
    ui.status.textContent = text;
    ui.status.className = 'status' + (kind ? ' ' + kind : '');
  }

  const errMsg = (e) => (e instanceof Error ? e.message : String(e));
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const round = (x, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
  const secs = (ms) => `${round(ms / 1000, 1)} s`;

  function withTimeout(promise, ms, what) {
    let timer;
    const expiry = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${secs(ms)}`)), ms);
    });
    return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
  }

  const encoder = new TextEncoder();
  const sizeOf = (data) => (typeof data === 'string' ? encoder.encode(data).length : data.byteLength);

  // One buffer holding the pattern at every phase: a chunk starting at offset o of a
  // transfer is pattern.subarray(o % 251, o % 251 + len).
  let patternBuf = null;
  function pattern() {
    if (!patternBuf) {
      patternBuf = new Uint8Array(CHUNK + PATTERN);
      for (let i = 0; i < patternBuf.length; i++) patternBuf[i] = i % PATTERN;
    }
    return patternBuf;
  }

  async function httpError(res, what) {
    let msg = `${what}: HTTP ${res.status}`;
    try {
      const body = (await res.text()).trim();
      let detail = body.slice(0, 300);
      try {
        const j = JSON.parse(body);
        if (j && typeof j.error === 'string') detail = j.error;
      } catch (_) { /* not JSON: show the text */ }
      if (detail) msg += `: ${detail}`;
    } catch (_) { /* no body */ }
    return new Error(msg);
  }

  // The service's bearer token (smolrtc serve --token), from the Token field or #token=..
  // in the page's address; sent with every API request, and in the WebSocket URL.
  const token = () => ui.token.value.trim();
  function withAuth(init = {}) {
    if (!token()) return init;
    return { ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${token()}` } };
  }

  async function request(what, url, init) {
    let res;
    try {
      res = await fetch(url, withAuth(init));
    } catch (e) {
      throw new Error(`${what}: ${errMsg(e)}${location.protocol === 'file:' ? ' (open this page from the device, not from a file)' : ''}`);
    }
    if (!res.ok) throw await httpError(res, what);
    return res;
  }

  /** "candidate:1 1 udp 2122 127.0.0.1 5000 typ host ..." -> "host udp 127.0.0.1:5000" */
  function describeCandidate(c) {
    const f = c.replace(/^a=/, '').split(/\s+/);
    const typ = f.indexOf('typ');
    return f.length >= 8 ? `${typ > 0 ? f[typ + 1] : '?'} ${f[2].toLowerCase()} ${f[4]}:${f[5]}` : c;
  }

  const sdpAttr = (sdp, name) => {
    const m = sdp.match(new RegExp(`^a=${name}:(.*?)\\s*$`, 'm'));
    return m ? m[1] : null;
  };
  const countCandidates = (sdp) => (sdp.match(/^a=candidate:/gm) || []).length;

  function iceServers(url) {
    url = (url || '').trim();
    if (!url) return [];
    // turn:user:pass@host:port -> {urls: turn:host:port, username, credential}
    const m = url.match(/^(turns?):([^:@]+):([^@]+)@(.+)$/);
    if (m) return [{ urls: `${m[1]}:${m[4]}`, username: decodeURIComponent(m[2]), credential: decodeURIComponent(m[3]) }];
    return [{ urls: url }];
  }

  /** Parses a pasted description: one-line JSON {"type","sdp"}, or raw SDP. */
  function parseDescription(text, expected) {
    const s = text.trim();
    if (!s) throw new Error('remote description is empty: paste the other peer\'s description first');
    let d;
    if (s.startsWith('v=')) {
      d = { type: expected, sdp: s.replace(/\r?\n/g, '\r\n').replace(/(\r\n)?$/, '\r\n') };
    } else {
      try {
        d = JSON.parse(s);
      } catch (e) {
        throw new Error(`remote description is not valid JSON: ${errMsg(e)}`);
      }
    }
    if (!d || typeof d !== 'object') throw new Error('remote description: expected a JSON object {"type":..,"sdp":..}');
    if (d.type !== 'offer' && d.type !== 'answer') {
      throw new Error(`remote description: "type" must be "offer" or "answer", got ${JSON.stringify(d.type)}`);
    }
    if (typeof d.sdp !== 'string' || !d.sdp.startsWith('v=')) {
      throw new Error('remote description: "sdp" must be an SDP string starting with "v=0"');
    }
    if (d.type !== expected) {
      throw new Error(`remote description is an ${d.type} but an ${expected} is expected` +
        (d.type === 'offer' ? ' (untick "offering" to answer an offer)' : ''));
    }
    return { type: d.type, sdp: d.sdp };
  }

  // ---------------------------------------------------------------- session

  let session = null;
  let uid = 0;

  class Session {
    constructor(o) {
      this.mode = o.mode;
      this.offering = OFFERS.includes(o.mode) ? true : !!o.offering;
      this.iceUrl = o.iceUrl || '';
      this.exchange = o.exchange || null;
      this.media = o.media || null; // a getUserMedia stream to stop on close
      this.channels = [];
      this.serverLabels = [];
      this.pendingRemote = [];
      this.waiters = new Set();
      this.error = null;
      this.closing = null;
      this.closed = false;
      this.localEnded = false;
      this.localCount = 0;
      this.remoteCount = 0;
      this.startedAt = performance.now();
      this.firstOpenAt = null;
      this.pair = null;
      this.trickle = null; // mode-specific sender of local candidates (null = end)
      this.whip = null;
      this.ws = null;
      this.broker = o.mode === 'broker' ? new window.smolrtcBroker.Signaling(this, o, log) : null;
    }

    // --- waiting and failing

    notify() {
      for (const w of [...this.waiters]) w();
      dirty = true;
    }

    fail(err) {
      if (this.error || this.closing) return;
      this.error = err instanceof Error ? err : new Error(String(err));
      log(this.error.message, 'error');
      setStatus(this.error.message, 'error');
      this.notify();
    }

    /** Resolves when cond() is true; rejects on timeout, on a session error, or if cond throws. */
    waitUntil(cond, ms, what, ignoreError = false) {
      return new Promise((resolve, reject) => {
        let settled = false;
        const finish = (fn, v) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.waiters.delete(check);
          fn(v);
        };
        const check = () => {
          if (this.error && !ignoreError) return finish(reject, this.error);
          try {
            if (cond()) finish(resolve);
          } catch (e) {
            finish(reject, e);
          }
        };
        const timer = setTimeout(() => finish(reject, new Error(`${what}: timed out after ${secs(ms)}`)), Math.max(0, ms));
        this.waiters.add(check);
        check();
      });
    }

    /** Feeds every message of channel e to onData until it returns a value (!== undefined). */
    consume(e, ms, what, onData) {
      return new Promise((resolve, reject) => {
        let settled = false;
        const finish = (fn, v) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.waiters.delete(check);
          e.onMessage = null;
          fn(v);
        };
        const check = () => {
          if (this.error) finish(reject, this.error);
          else if (e.dc.readyState !== 'open') finish(reject, new Error(`${what}: channel "${e.label}" is ${e.dc.readyState}`));
        };
        const timer = setTimeout(() => finish(reject, new Error(`${what}: timed out after ${secs(ms)}`)), Math.max(0, ms));
        e.onMessage = (data) => {
          try {
            const r = onData(data);
            if (r !== undefined) finish(resolve, r);
          } catch (err) {
            finish(reject, err);
          }
        };
        this.waiters.add(check);
        check();
      });
    }

    gatherComplete(ms) {
      const pc = this.pc;
      return new Promise((resolve) => {
        const done = (v) => {
          clearTimeout(timer);
          pc.removeEventListener('icegatheringstatechange', onChange);
          resolve(v);
        };
        const onChange = () => { if (pc.iceGatheringState === 'complete') done(true); };
        const timer = setTimeout(() => done(false), ms);
        pc.addEventListener('icegatheringstatechange', onChange);
        onChange();
      });
    }

    // --- start

    async start() {
      let config = { iceServers: iceServers(this.iceUrl) };
      // Via a broker the device hands out the ICE servers (TURN credentials) first.
      if (this.broker) config = await this.broker.prepare(config);
      const pc = this.pc = new RTCPeerConnection(config);
      const st = (name) => () => { log(`${name}: ${this.stateOf(name)}`); dirty = true; };
      pc.addEventListener('iceconnectionstatechange', st('ICE state'));
      pc.addEventListener('icegatheringstatechange', st('ICE gathering state'));
      pc.addEventListener('signalingstatechange', st('signaling state'));
      pc.addEventListener('connectionstatechange', () => {
        st('connection state')();
        if (pc.connectionState === 'failed') this.fail(new Error('peer connection failed (ICE or DTLS)'));
      });
      pc.addEventListener('icecandidate', (ev) => this.onLocalCandidate(ev.candidate));
      pc.addEventListener('icecandidateerror', (ev) => {
        if (ev.url) log(`ICE server ${ev.url}: ${ev.errorCode} ${ev.errorText}`, 'warn');
      });
      pc.addEventListener('datachannel', (ev) => {
        const e = this.addChannel(ev.channel, 'server');
        this.serverLabels.push(e.label);
        log(`server opened channel "${e.label}" (id ${ev.channel.id})`);
      });

      // rawrtc's pre-negotiated channel, created before the offer so that it carries the
      // application m-line; dinosaur-noises follows once it is open.
      this.addChannel(pc.createDataChannel('cat-noises', { negotiated: true, id: 0 }), 'page');

      log(`connecting: mode ${this.mode}, ${this.offering ? 'offering' : 'answering'}` +
        (this.iceUrl ? `, ICE server ${this.iceUrl}` : ', no ICE servers'));
      if (this.mode === 'http') await this.startHttp();
      else if (this.mode === 'whip') await this.startWhip();
      else if (this.mode === 'ws') await this.startWs();
      else if (this.broker) await this.broker.start();
      else await this.startManual();
    }

    stateOf(name) {
      const pc = this.pc;
      return { 'ICE state': pc.iceConnectionState, 'ICE gathering state': pc.iceGatheringState,
        'signaling state': pc.signalingState, 'connection state': pc.connectionState }[name];
    }

    onLocalCandidate(c) {
      if (this.closing) return;
      if (c && c.candidate) {
        this.localCount++;
        log(`local candidate: ${describeCandidate(c.candidate)}`);
      } else {
        if (this.localEnded) return; // Firefox signals the end twice ('' then null)
        this.localEnded = true;
        log(`local candidates complete (${this.localCount})`);
        c = null;
      }
      if (this.trickle) this.trickle(c);
    }

    async applyRemote(desc) {
      log(`remote ${desc.type} (${countCandidates(desc.sdp)} candidates)`);
      try {
        await this.pc.setRemoteDescription(desc);
      } catch (e) {
        throw new Error(`setRemoteDescription(${desc.type}): ${errMsg(e)}`);
      }
      this.remoteCount += countCandidates(desc.sdp);
      for (const v of this.pendingRemote.splice(0)) await this.addRemoteCandidate(v);
    }

    async createAndSetLocal(type) {
      const d = type === 'offer' ? await this.pc.createOffer() : await this.pc.createAnswer();
      await this.pc.setLocalDescription(d);
      log(`local ${type} created`);
      return this.pc.localDescription;
    }

    async addRemoteCandidate(v) {
      if (!this.pc.remoteDescription) {
        this.pendingRemote.push(v);
        return;
      }
      if (v === null || !v.candidate) {
        log('remote end-of-candidates');
        try { await this.pc.addIceCandidate(); } catch (e) { log(`end-of-candidates: ${errMsg(e)}`, 'warn'); }
        return;
      }
      const cand = String(v.candidate).replace(/^a=/, '');
      try {
        await this.pc.addIceCandidate({ candidate: cand, sdpMid: v.sdpMid ?? null, sdpMLineIndex: v.sdpMLineIndex ?? 0 });
      } catch (e) {
        try { // the server's mid may not match: fall back to the m-line index alone
          await this.pc.addIceCandidate({ candidate: cand, sdpMLineIndex: 0 });
        } catch (_) {
          log(`remote candidate rejected (${cand}): ${errMsg(e)}`, 'warn');
          return;
        }
      }
      this.remoteCount++;
      log(`remote candidate: ${describeCandidate(cand)}`);
    }

    // --- path 1: POST /api/offer, complete SDP both ways

    async startHttp() {
      await this.createAndSetLocal('offer');
      if (!(await this.gatherComplete(GATHER_CAP_MS))) log('ICE gathering not complete after 5 s: sending what we have', 'warn');
      const sdp = this.pc.localDescription.sdp;
      log(`POST /api/offer (${countCandidates(sdp)} candidates)`);
      const res = await request('POST /api/offer', '/api/offer', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ type: 'offer', sdp }),
      });
      let answer;
      try {
        answer = await res.json();
      } catch (e) {
        throw new Error(`POST /api/offer: response is not JSON: ${errMsg(e)}`);
      }
      if (!answer || answer.type !== 'answer' || typeof answer.sdp !== 'string') {
        throw new Error('POST /api/offer: response is not {"type":"answer","sdp":..}');
      }
      await this.applyRemote({ type: 'answer', sdp: answer.sdp });
    }

    // --- path 2: WHIP (RFC 9725): offer right away, trickle with PATCH, DELETE to end

    async startWhip() {
      const w = this.whip = { url: null, path: null, queue: [], ended: false, endSent: false, busy: false, inOffer: new Set(), patchErrors: 0 };
      this.trickle = (c) => {
        if (c === null) w.ended = true;
        else if (!w.inOffer.has(c.candidate)) w.queue.push(c.candidate);
        this.whipFlush();
      };
      const sdp = (await this.createAndSetLocal('offer')).sdp;
      for (const line of sdp.split(/\r?\n/)) if (line.startsWith('a=candidate:')) w.inOffer.add(line.slice(2));
      w.ufrag = sdpAttr(sdp, 'ice-ufrag');
      w.pwd = sdpAttr(sdp, 'ice-pwd');
      w.mid = sdpAttr(sdp, 'mid') || '0';
      log(`POST /whip (${w.inOffer.size} candidates in the offer, the rest trickled)`);
      const res = await request('POST /whip', '/whip', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: sdp });
      if (res.status !== 201) log(`POST /whip: status ${res.status}, expected 201`, 'warn');
      const loc = res.headers.get('Location');
      if (!loc) throw new Error('POST /whip: the response has no Location header');
      const url = new URL(loc, res.url);
      w.url = url.href;
      w.path = url.pathname;
      log(`WHIP session ${w.path}`);
      const answer = await res.text();
      if (!answer.startsWith('v=')) throw new Error('POST /whip: the response body is not an SDP answer');
      await this.applyRemote({ type: 'answer', sdp: answer });
      this.whipFlush();
    }

    async whipFlush() {
      const w = this.whip;
      if (!w || !w.url || w.busy || this.closing) return;
      const cands = w.queue.splice(0);
      const end = w.ended && !w.endSent;
      if (!cands.length && !end) return;
      w.busy = true;
      let body = `a=ice-ufrag:${w.ufrag}\r\na=ice-pwd:${w.pwd}\r\n` +
        `m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:${w.mid}\r\n`;
      for (const c of cands) body += `a=${c}\r\n`;
      if (end) {
        body += 'a=end-of-candidates\r\n';
        w.endSent = true;
      }
      const what = `PATCH ${w.path}`;
      try {
        const res = await request(what, w.url, { method: 'PATCH', headers: { 'Content-Type': 'application/trickle-ice-sdpfrag' }, body });
        log(`${what}: ${cands.length} candidate(s)${end ? ' + end-of-candidates' : ''} -> ${res.status}`);
      } catch (e) {
        w.patchErrors++;
        log(errMsg(e), 'warn');
      }
      w.busy = false;
      this.whipFlush();
    }

    // --- path 3: WebSocket, rawrtc's messages, trickle both ways

    async startWs() {
      if (!location.host) throw new Error('WebSocket signaling needs the page to be served by the device');
      const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws${this.offering ? '' : '?role=offer'}`;
      // A browser WebSocket cannot carry headers: the token goes in the query.
      const ws = this.ws = new WebSocket(token() ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token())}` : url);
      let descSent = false;
      const pending = [];
      const flush = () => { descSent = true; for (const m of pending.splice(0)) this.wsSend(m); };
      this.trickle = (c) => {
        const msg = { type: 'candidate', value: c && { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } };
        if (descSent) this.wsSend(msg);
        else pending.push(msg);
      };
      let chain = Promise.resolve();
      ws.addEventListener('message', (ev) => {
        chain = chain.then(() => this.onWsMessage(ev.data, flush)).catch((e) => this.fail(e));
      });
      ws.addEventListener('close', (ev) => {
        const how = `WebSocket closed (code ${ev.code}${ev.reason ? ', ' + ev.reason : ''})`;
        if (this.closing) log(how);
        else if (this.firstOpenAt === null) this.fail(new Error(`${how} before the connection was up`));
        else log(how, 'warn');
      });
      log(`WebSocket ${url}`);
      await new Promise((resolve, reject) => {
        ws.addEventListener('open', resolve, { once: true });
        ws.addEventListener('error', () => reject(new Error(`WebSocket ${url}: could not connect`)), { once: true });
      });
      log('WebSocket open');
      if (this.offering) {
        const d = await this.createAndSetLocal('offer');
        this.wsSend({ type: 'description', value: { type: d.type, sdp: d.sdp } });
        flush();
      } else {
        log('waiting for the server\'s offer');
      }
    }

    wsSend(msg) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
    }

    async onWsMessage(text, flush) {
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (_) {
        throw new Error(`WebSocket: message is not JSON: ${String(text).slice(0, 120)}`);
      }
      if (msg.type === 'description') {
        const d = msg.value;
        if (!d || (d.type !== 'offer' && d.type !== 'answer') || typeof d.sdp !== 'string') {
          throw new Error('WebSocket: malformed description message');
        }
        if ((d.type === 'offer') === this.offering) throw new Error(`WebSocket: unexpected ${d.type} from the server`);
        await this.applyRemote({ type: d.type, sdp: d.sdp });
        if (d.type === 'offer') {
          const a = await this.createAndSetLocal('answer');
          this.wsSend({ type: 'description', value: { type: a.type, sdp: a.sdp } });
          flush();
        }
      } else if (msg.type === 'candidate') {
        await this.addRemoteCandidate(msg.value);
      } else if (msg.type === 'error') {
        const m = `server: ${typeof msg.value === 'string' ? msg.value : JSON.stringify(msg.value)}`;
        if (this.firstOpenAt === null) throw new Error(m);
        log(m, 'error');
        setStatus(m, 'error');
      } else {
        log(`WebSocket: unknown message type ${JSON.stringify(msg.type)}`, 'warn');
      }
    }

    // --- path 4: manual copy/paste (rawrtc's console flow)

    async startManual() {
      ui.localDesc.value = '';
      if (this.offering) {
        await this.createAndSetLocal('offer');
        await this.showLocalWhenGathered();
      } else {
        log('paste the server\'s offer (smolrtc peer --offer) as the remote description and apply it');
      }
      if (this.exchange) await this.manualExchange();
    }

    async showLocalWhenGathered() {
      const complete = await this.gatherComplete(GATHER_CAP_MS);
      if (!complete) {
        log('ICE gathering not complete after 5 s: showing what we have', 'warn');
        this.gatherComplete(60000).then((ok) => { if (ok && !this.closing) this.showLocal('updated'); });
      }
      this.showLocal('ready');
    }

    showLocal(what) {
      const d = this.pc.localDescription;
      ui.localDesc.value = JSON.stringify({ type: d.type, sdp: d.sdp });
      log(`local ${d.type} ${what} (${countCandidates(d.sdp)} candidates): copy it to the other peer`);
    }

    async applyManual(text) {
      const d = parseDescription(text, this.offering ? 'answer' : 'offer');
      const want = this.offering ? 'have-local-offer' : 'stable';
      if (this.pc.signalingState !== want || this.pc.remoteDescription) {
        throw new Error(`cannot apply a remote ${d.type} now (signaling state ${this.pc.signalingState})`);
      }
      await this.applyRemote(d);
      if (d.type === 'offer') {
        await this.createAndSetLocal('answer');
        await this.showLocalWhenGathered();
      }
    }

    /** Unattended manual mode: descriptions are exchanged through `exchange` (test hook). */
    async manualExchange() {
      const url = this.exchange;
      if (this.offering) {
        const res = await request(`POST ${url}`, url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: ui.localDesc.value });
        ui.remoteDesc.value = (await res.text()).trim();
        await this.applyManual(ui.remoteDesc.value);
      } else {
        const res = await request(`GET ${url}`, url, { cache: 'no-store' });
        ui.remoteDesc.value = (await res.text()).trim();
        await this.applyManual(ui.remoteDesc.value);
        await request(`POST ${url}`, url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: ui.localDesc.value });
      }
    }

    // --- channels

    addChannel(dc, origin) {
      dc.binaryType = 'arraybuffer';
      const e = { uid: ++uid, dc, label: dc.label, origin, msgsIn: 0, bytesIn: 0, msgsOut: 0, bytesOut: 0,
        quiet: false, onMessage: null, opened: false, row: null };
      this.channels.push(e);
      const onOpen = () => {
        if (e.opened) return;
        e.opened = true;
        log(`channel "${e.label}" open (id ${dc.id})`);
        if (this.firstOpenAt === null) this.onFirstOpen();
        this.rawrtcFlow(e);
        this.notify();
      };
      dc.addEventListener('open', onOpen);
      dc.addEventListener('close', () => {
        if (!this.closed) log(`channel "${e.label}" closed`);
        this.notify();
      });
      dc.addEventListener('error', (ev) => {
        if (!this.closing) log(`channel "${e.label}": ${ev.error ? ev.error.message : 'error'}`, 'warn');
      });
      dc.addEventListener('message', (ev) => {
        const data = ev.data;
        e.msgsIn++;
        e.bytesIn += sizeOf(data);
        dirty = true;
        if (!e.quiet) {
          if (typeof data === 'string') log(`${e.label} <- ${data.length > 200 ? data.slice(0, 200) + '…' : data}`);
          else log(`${e.label} <- ${data.byteLength} bytes`);
        }
        if (e.onMessage) e.onMessage(data);
        this.notify();
      });
      if (dc.readyState === 'open') queueMicrotask(onOpen);
      dirty = true;
      return e;
    }

    send(e, data) {
      e.dc.send(data);
      e.msgsOut++;
      e.bytesOut += sizeOf(data);
      dirty = true;
    }

    rawrtcFlow(e) {
      if (e.origin !== 'page') return;
      if (e.label === 'cat-noises' || e.label === 'dinosaur-noises') {
        this.send(e, new Uint8Array(16384).fill(0x4d)); // 'M', like rawrtc's noises
        log(`${e.label} -> 16384 bytes`);
      }
      if (e.label === 'cat-noises' && !this.channels.some((c) => c.label === 'dinosaur-noises' && c.origin === 'page')) {
        this.addChannel(this.pc.createDataChannel('dinosaur-noises', { ordered: true }), 'page');
      }
    }

    onFirstOpen() {
      this.firstOpenAt = performance.now();
      setStatus(`Connected (${this.mode}, ${Math.round(this.firstOpenAt - this.startedAt)} ms)`, 'ok');
      selectedPair(this.pc).then((p) => {
        this.pair = p;
        if (p) log(`selected pair: ${p.local ? p.local.text : '?'} <-> ${p.remote ? p.remote.text : '?'}`);
      });
    }

    channel(label, origin) {
      return this.channels.find((c) => c.label === label && (!origin || c.origin === origin));
    }

    // --- close

    close() {
      if (!this.closing) this.closing = this.doClose();
      return this.closing;
    }

    async doClose() {
      log('disconnecting');
      for (const e of this.channels) {
        if (e.dc.readyState === 'open' || e.dc.readyState === 'connecting') {
          try { e.dc.close(); } catch (_) { /* already closing */ }
        }
      }
      try {
        await this.waitUntil(() => this.channels.every((e) => !e.opened || e.dc.readyState === 'closed'), 2000, 'closing channels', true);
      } catch (e) {
        log(errMsg(e), 'warn');
      }
      if (this.whip && this.whip.url) {
        // DELETE first, so the server tears the session down itself (RFC 9725).
        try {
          const res = await withTimeout(fetch(this.whip.url, withAuth({ method: 'DELETE' })), 5000, `DELETE ${this.whip.path}`);
          if (res.ok) log(`DELETE ${this.whip.path} -> ${res.status}`);
          else log(errMsg(await httpError(res, `DELETE ${this.whip.path}`)), 'warn');
        } catch (e) {
          log(errMsg(e), 'warn');
        }
      }
      if (this.broker) await this.broker.close();
      if (this.pc) this.pc.close();
      log('peer connection closed');
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'bye');
      if (this.media) this.media.getTracks().forEach((t) => t.stop());
      this.closed = true;
      if (!this.error) setStatus('Disconnected.');
      this.notify();
    }
  }

  async function selectedPair(pc) {
    try {
      const stats = await withTimeout(pc.getStats(), 2000, 'getStats');
      let pair = null;
      stats.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
      if (!pair) stats.forEach((r) => { if (!pair && r.type === 'candidate-pair' && r.selected) pair = r; });
      if (!pair) stats.forEach((r) => { if (!pair && r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
      if (!pair) return null;
      const c = (id) => {
        const s = stats.get(id);
        if (!s) return null;
        const address = s.address || s.ip;
        return { type: s.candidateType, protocol: s.protocol, address, port: s.port, text: `${s.candidateType} ${s.protocol} ${address}:${s.port}` };
      };
      // Every pair whose checks succeeded: Chromium may stay on the first pair that worked
      // (a relay) for a while after a direct one succeeds too.
      const succeeded = [];
      stats.forEach((r) => {
        if (r.type === 'candidate-pair' && r.state === 'succeeded') {
          succeeded.push({ local: c(r.localCandidateId), remote: c(r.remoteCandidateId) });
        }
      });
      return { local: c(pair.localCandidateId), remote: c(pair.remoteCandidateId), succeeded };
    } catch (_) {
      return null;
    }
  }

  function connect(o) {
    const s = new Session(o);
    session = s;
    ui.localDesc.value = '';
    for (const r of [...ui.rows.querySelectorAll('tr:not(.empty)')]) r.remove();
    s.started = s.start().catch((e) => {
      s.fail(e);
      throw s.error || e;
    });
    dirty = true;
    return s;
  }

  const active = () => session && !session.closing;

  // ---------------------------------------------------------------- tests

  let transfer = null; // {total, done: () => bytes} for the progress bar

  async function openTestChannel(s, label, reuse, ms) {
    if (reuse) {
      const e = s.channels.find((c) => c.label === label && c.dc.readyState === 'open');
      if (e) return e;
    }
    const e = s.addChannel(s.pc.createDataChannel(label), 'page');
    e.quiet = true;
    await s.waitUntil(() => {
      if (e.dc.readyState === 'closed' || e.dc.readyState === 'closing') throw new Error(`channel "${label}" closed before it opened`);
      return e.dc.readyState === 'open';
    }, ms, `opening channel "${label}"`);
    return e;
  }

  async function echoTest(s, count, ms = 20000) {
    const e = await openTestChannel(s, 'echo', true, 10000);
    const quiet = e.quiet;
    e.quiet = true;
    log(`echo: ${count} round trips on "echo"`);
    const rtts = [];
    let matched = 0;
    try {
      const deadline = performance.now() + ms;
      for (let i = 0; i < count; i++) {
        const payload = `ping ${i} ${Math.random().toString(36).slice(2, 10)}`;
        const reply = s.consume(e, Math.min(5000, deadline - performance.now()), `echo reply ${i + 1}`, (d) => d);
        const t0 = performance.now();
        s.send(e, payload);
        const got = await reply;
        rtts.push(performance.now() - t0);
        if (got === payload) matched++;
        else log(`echo: reply ${i + 1} does not match: ${typeof got === 'string' ? got.slice(0, 80) : got.byteLength + ' bytes'}`, 'warn');
      }
    } finally {
      e.quiet = quiet;
    }
    const sorted = [...rtts].sort((a, b) => a - b);
    const n = sorted.length;
    const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    const r = { count: n, min_ms: round(sorted[0]), median_ms: round(median), max_ms: round(sorted[n - 1]), all_matched: matched === count };
    log(`echo: ${n} round trips, min ${r.min_ms.toFixed(2)} / median ${r.median_ms.toFixed(2)} / max ${r.max_ms.toFixed(2)} ms${r.all_matched ? '' : ', MISMATCH'}`);
    return r;
  }

  function rate(bytes, ms) {
    const s = ms / 1000;
    return { elapsed_ms: round(ms, 1), mbit_per_s: round((bytes * 8) / s / 1e6, 2), mib_per_s: round(bytes / MiB / s, 2) };
  }

  function bufferedLow(dc, deadline) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        dc.removeEventListener('bufferedamountlow', done);
        dc.removeEventListener('close', done);
        resolve();
      };
      dc.addEventListener('bufferedamountlow', done);
      dc.addEventListener('close', done);
      const timer = setTimeout(done, Math.max(0, Math.min(250, deadline - performance.now())));
    });
  }

  async function uploadTest(s, mib, ms = 60000) {
    const total = Math.round(mib * MiB);
    const e = await openTestChannel(s, 'discard', false, 10000);
    const dc = e.dc;
    dc.bufferedAmountLowThreshold = MiB;
    const pat = pattern();
    let off = 0;
    let msgs = 0;
    transfer = { total, done: () => Math.max(0, off - dc.bufferedAmount) };
    log(`upload: ${mib} MiB in ${CHUNK}-byte messages on "discard"`);
    const t0 = performance.now();
    const deadline = t0 + ms;
    try {
      while (off < total) {
        if (s.error) throw s.error;
        if (dc.readyState !== 'open') throw new Error(`upload: channel "discard" is ${dc.readyState}`);
        if (performance.now() > deadline) throw new Error(`upload: timed out after ${secs(ms)} (${off} of ${total} bytes sent)`);
        if (dc.bufferedAmount + CHUNK > MAX_BUFFERED) {
          await bufferedLow(dc, deadline);
          continue;
        }
        const n = Math.min(CHUNK, total - off);
        const p = off % PATTERN;
        s.send(e, pat.subarray(p, p + n));
        off += n;
        msgs++;
      }
      const reply = s.consume(e, deadline - performance.now(), 'upload: waiting for the server\'s stats', (d) => {
        if (typeof d !== 'string') return undefined;
        let j;
        try { j = JSON.parse(d); } catch (_) { log(`discard <- ${d.slice(0, 120)}`); return undefined; }
        if (j && typeof j.error === 'string') throw new Error(`upload: server: ${j.error}`);
        return j && typeof j.bytes === 'number' ? j : undefined;
      });
      s.send(e, 'stats');
      const stats = await reply;
      const r = { bytes: total, messages: msgs, ...rate(total, performance.now() - t0),
        server_bytes: stats.bytes, server_messages: typeof stats.messages === 'number' ? stats.messages : null };
      r.valid = stats.bytes === total;
      return r;
    } finally {
      transfer = null;
      if (dc.readyState === 'open') dc.close();
    }
  }

  async function downloadTest(s, mib, ms = 60000) {
    const total = Math.round(mib * MiB);
    const e = await openTestChannel(s, 'chargen', false, 10000);
    let got = 0;
    let msgs = 0;
    let next = 0; // expected value of the next byte: position % 251
    let badAt = -1;
    transfer = { total, done: () => got };
    log(`download: ${mib} MiB on "chargen"`);
    const t0 = performance.now();
    try {
      const finished = s.consume(e, ms, 'download', (d) => {
        if (typeof d === 'string') {
          if (d === 'end') return true;
          let j = null;
          try { j = JSON.parse(d); } catch (_) { /* plain text */ }
          if (j && typeof j.error === 'string') throw new Error(`download: server: ${j.error}`);
          log(`chargen <- ${d.slice(0, 120)}`);
          return undefined;
        }
        const u8 = new Uint8Array(d);
        msgs++;
        if (badAt < 0) {
          for (let i = 0; i < u8.length; i++) {
            if (u8[i] !== next) { badAt = got + i; break; }
            if (++next === PATTERN) next = 0;
          }
        }
        got += u8.length;
        return undefined;
      });
      s.send(e, String(total));
      await finished;
      const r = { bytes: got, expected_bytes: total, messages: msgs, ...rate(got, performance.now() - t0) };
      r.checked = badAt < 0 && got === total;
      if (badAt >= 0) log(`download: byte ${badAt} does not match the pattern`, 'warn');
      if (got !== total) log(`download: received ${got} bytes, expected ${total}`, 'warn');
      return r;
    } finally {
      transfer = null;
      if (e.dc.readyState === 'open') e.dc.close();
    }
  }

  function describeTransfer(kind, r) {
    return `${kind}: ${(r.bytes / MiB).toFixed(2)} MiB in ${(r.elapsed_ms / 1000).toFixed(2)} s = ` +
      `${r.mbit_per_s.toFixed(1)} Mbit/s (${r.mib_per_s.toFixed(2)} MiB/s)`;
  }

  // ---------------------------------------------------------------- unattended run

  async function grabMedia(camera) {
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) {
      log('getUserMedia is not available here (insecure origin?): skipped', 'warn');
      return null;
    }
    try {
      const stream = await withTimeout(md.getUserMedia({ audio: true, video: !!camera }), 5000, 'getUserMedia');
      log(`getUserMedia: ${camera ? 'camera and ' : ''}microphone permission granted (the tracks are stopped when the run ends)`);
      return stream;
    } catch (e) {
      log(`getUserMedia failed (ignored): ${errMsg(e)}`, 'warn');
      return null;
    }
  }

  function normalize(o = {}) {
    const num = (v, d) => {
      const n = Number(v);
      return v === undefined || v === null || v === '' || !Number.isFinite(n) || n < 0 ? d : n;
    };
    const bool = (v, d) => (v === undefined || v === null || v === '' ? d : v === true || v === 1 || v === '1' || v === 'true');
    const mode = MODES.includes(o.mode) ? o.mode : 'http';
    return {
      mode,
      offering: OFFERS.includes(mode) ? true : bool(o.offering, true),
      echo: Math.floor(num(o.echo, 0)),
      upload: num(o.upload, 0),
      download: num(o.download, 0),
      report: o.report || null,
      gum: bool(o.gum, true),
      camera: bool(o.camera, false),
      iceUrl: o.iceUrl || o.ice || '',
      exchange: o.exchange || null,
      connectTimeout: num(o.connect_timeout ?? o.connectTimeout, 20) * 1000,
      transferTimeout: num(o.transfer_timeout ?? o.transferTimeout, 60) * 1000,
      ...(mode === 'broker' ? window.smolrtcBroker.options(o) : {}),
    };
  }

  let running = false;

  async function run(options) {
    if (running) throw new Error('a run is already in progress');
    running = true;
    const o = normalize(options);
    const t0 = performance.now();
    const steps = {};
    let error = null;
    let s = null;
    syncControls(o);
    setStatus(`Running (${o.mode})…`);
    log(`run: ${JSON.stringify(o)}`);

    const body = async () => {
      const media = o.gum ? await grabMedia(o.camera) : null;
      steps.gum = !!media;
      if (o.camera) steps.camera = !!media && media.getVideoTracks().length > 0;
      if (session && !session.closed) await session.close();
      s = connect({ ...o, media });
      const deadline = performance.now() + o.connectTimeout;
      await withTimeout(s.started, o.connectTimeout, 'signaling');
      await s.waitUntil(() => {
        const cat = s.channel('cat-noises', 'page');
        const dino = s.channel('dinosaur-noises', 'page');
        return cat.opened && dino && dino.opened;
      }, deadline - performance.now(), 'connecting (cat-noises and dinosaur-noises open)');
      steps.connected_ms = round(s.firstOpenAt, 1);
      steps.connect_ms = round(s.firstOpenAt - s.startedAt, 1);
      steps.dinosaur_open = true;
      // Give the server's own channels and cat-noises' message a moment to arrive.
      try {
        await s.waitUntil(() => s.channel('cat-noises', 'page').bytesIn > 0 && s.serverLabels.length > 0, 2000, 'settle');
      } catch (e) {
        if (s.error) throw s.error;
      }
      collect();
      if (o.echo > 0) {
        steps.echo = await echoTest(s, o.echo);
        if (!steps.echo.all_matched) throw new Error('echo: a reply did not match what was sent');
      }
      if (o.upload > 0) {
        steps.upload = await uploadTest(s, o.upload, o.transferTimeout);
        log(describeTransfer('upload', steps.upload));
        if (!steps.upload.valid) throw new Error(`upload: the server counted ${steps.upload.server_bytes} bytes, expected ${steps.upload.bytes}`);
      }
      if (o.download > 0) {
        steps.download = await downloadTest(s, o.download, o.transferTimeout);
        log(describeTransfer('download', steps.download));
        if (!steps.download.checked) throw new Error('download: the received data did not match (size or byte pattern)');
      }
    };
    const collect = () => {
      if (!s) return;
      const cat = s.channel('cat-noises', 'page');
      const dino = s.channel('dinosaur-noises', 'page');
      steps.cat_noises_rx_bytes = cat ? cat.bytesIn : 0;
      steps.dinosaur_open = !!(dino && dino.opened);
      steps.server_channels = [...s.serverLabels];
      steps.local_candidates = s.localCount;
      steps.remote_candidates = s.remoteCount;
      if (s.pair) {
        steps.selected_pair = { local: s.pair.local, remote: s.pair.remote };
        steps.succeeded_pairs = s.pair.succeeded;
      }
      if (s.whip) steps.whip_patch_errors = s.whip.patchErrors;
      if (s.broker) steps.broker = s.broker.report();
    };

    const budget = o.connectTimeout + 30000 + (o.echo > 0 ? 25000 : 0) +
      (o.upload > 0 ? o.transferTimeout + 10000 : 0) + (o.download > 0 ? o.transferTimeout + 10000 : 0);
    try {
      await withTimeout(body(), budget, 'run');
    } catch (e) {
      error = errMsg(e);
      log(`run failed: ${error}`, 'error');
    }
    // The pair in use now: ICE may have moved to a better one since the first open.
    if (s && s.pc && s.firstOpenAt !== null && !s.closing) {
      const p = await selectedPair(s.pc);
      if (p && p.local && (!s.pair || !s.pair.local || p.local.text !== s.pair.local.text)) {
        log(`selected pair now: ${p.local.text} <-> ${p.remote ? p.remote.text : '?'}`);
      }
      if (p) s.pair = p;
    }
    collect();
    if (s) {
      try {
        await withTimeout(s.close(), 8000, 'disconnect');
        steps.closed = true;
      } catch (e) {
        steps.closed = false;
        error = error || errMsg(e);
      }
      if (s.broker) steps.broker = s.broker.report(); // with the bye
    }
    const report = {
      ok: error === null, mode: o.mode, offering: o.offering, error,
      elapsed_ms: round(performance.now() - t0, 1), user_agent: navigator.userAgent,
      steps, log: logLines.slice(-200),
    };
    setStatus(report.ok ? 'Run passed.' : `Run failed: ${error}`, report.ok ? 'ok' : 'error');
    log(`run ${report.ok ? 'passed' : 'failed'} in ${secs(report.elapsed_ms)}`);
    report.log = logLines.slice(-200);
    if (o.report) await postReport(o.report, report);
    // For a page with nowhere to post (file://, another web server): one console line.
    else console.log('SMOLRTC_REPORT ' + JSON.stringify({ ...report, log: undefined }));
    window.smolrtcLastReport = report;
    document.documentElement.dataset.smolrtc = report.ok ? 'ok' : 'failed';
    running = false;
    return report;
  }

  async function postReport(url, report) {
    let target;
    try {
      target = new URL(url, location.href);
    } catch (_) {
      log(`report URL ${url} is invalid`, 'error');
      return;
    }
    if (target.origin !== location.origin) {
      log(`report URL ${url} is not same-origin: not sent`, 'error');
      return;
    }
    try {
      const res = await withTimeout(fetch(target.href, withAuth({
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(report),
      })), 10000, 'report');
      log(`report posted to ${target.pathname} -> ${res.status}`);
    } catch (e) {
      log(`report not posted: ${errMsg(e)}`, 'error');
    }
  }

  // ---------------------------------------------------------------- rendering

  let dirty = true;
  const STATE_CLASS = {
    connected: 's-good', completed: 's-good', complete: 's-good', open: 's-good', stable: '',
    new: '', connecting: 's-busy', checking: 's-busy', gathering: 's-busy', 'have-local-offer': 's-busy',
    'have-remote-offer': 's-busy', closing: 's-busy', disconnected: 's-bad', failed: 's-bad', closed: 's-bad',
  };

  function showState(el, value) {
    if (el.textContent !== value) {
      el.textContent = value;
      el.className = STATE_CLASS[value] || '';
    }
  }

  const fmt = (n) => n.toLocaleString('en-US');

  function renderRow(e) {
    if (!e.row) {
      e.row = document.createElement('tr');
      e.cells = [];
      const classes = ['label', '', '', '', 'num', 'num', 'num', 'num'];
      for (const c of classes) {
        const td = document.createElement('td');
        if (c) td.className = c;
        e.row.append(td);
        e.cells.push(td);
      }
      ui.rows.append(e.row);
    }
    const state = session && session.closed ? 'closed' : e.dc.readyState;
    const values = [e.label, e.dc.id === null ? '–' : String(e.dc.id), state, e.origin,
      fmt(e.msgsIn), fmt(e.bytesIn), fmt(e.msgsOut), fmt(e.bytesOut)];
    values.forEach((v, i) => { if (e.cells[i].textContent !== v) e.cells[i].textContent = v; });
    e.cells[2].className = STATE_CLASS[state] || '';
  }

  let sendOptionsKey = '';

  function render() {
    const s = session;
    const pc = s && s.pc;
    if (pc) {
      showState(ui.stConnection, s.closed ? 'closed' : pc.connectionState || '–');
      showState(ui.stIce, s.closed ? 'closed' : pc.iceConnectionState);
      showState(ui.stGathering, pc.iceGatheringState);
      showState(ui.stSignaling, pc.signalingState);
    }
    const channels = s ? s.channels : [];
    ui.rows.querySelector('tr.empty').hidden = channels.length > 0;
    for (const e of channels) renderRow(e);

    const open = channels.filter((e) => e.dc.readyState === 'open' && !(s && s.closing));
    const key = open.map((e) => e.uid).join(',');
    if (key !== sendOptionsKey) {
      sendOptionsKey = key;
      const keep = ui.sendChannel.value;
      ui.sendChannel.replaceChildren(...open.map((e) => {
        const opt = document.createElement('option');
        opt.value = String(e.uid);
        opt.textContent = `${e.label} (${e.dc.id})`;
        return opt;
      }));
      if (open.some((e) => String(e.uid) === keep)) ui.sendChannel.value = keep;
    }

    const connected = !!(s && !s.closing && s.firstOpenAt !== null);
    ui.connect.disabled = !!active() || running;
    ui.disconnect.disabled = !active() || running;
    ui.mode.disabled = ui.connect.disabled;
    ui.offering.disabled = ui.connect.disabled || OFFERS.includes(ui.mode.value);
    ui.iceUrl.disabled = ui.connect.disabled;
    ui.send.disabled = open.length === 0;
    for (const b of [ui.echoRun, ui.uploadRun, ui.downloadRun]) b.disabled = !connected || busy || running;
    ui.applyRemote.disabled = running;
    ui.manual.hidden = ui.mode.value !== 'manual';
  }
  ui.send = $('send');

  setInterval(() => {
    if (transfer) ui.progress.value = Math.min(1, transfer.done() / transfer.total);
    if (dirty) {
      dirty = false;
      render();
    }
  }, 200);

  // ---------------------------------------------------------------- controls

  let busy = false;

  function syncControls(o) {
    ui.mode.value = o.mode;
    ui.offering.checked = o.offering;
    ui.iceUrl.value = o.iceUrl || '';
    if (o.mode === 'broker') window.smolrtcBroker.sync(o);
    window.smolrtcBroker.showSection();
    dirty = true;
  }

  function uiOptions() {
    const o = { mode: ui.mode.value, offering: ui.offering.checked, iceUrl: ui.iceUrl.value };
    return o.mode === 'broker' ? { ...o, ...window.smolrtcBroker.uiOptions() } : o;
  }

  ui.mode.addEventListener('change', () => {
    if (OFFERS.includes(ui.mode.value)) ui.offering.checked = true;
    dirty = true;
    render();
  });

  ui.connect.addEventListener('click', () => {
    if (active()) return;
    setStatus('Connecting…');
    connect(uiOptions()).started.catch(() => { /* logged by fail() */ });
  });

  ui.disconnect.addEventListener('click', () => {
    if (session) session.close();
  });

  ui.applyRemote.addEventListener('click', async () => {
    try {
      if (ui.mode.value !== 'manual') throw new Error('select "manual copy/paste" signaling first');
      if (!active()) {
        if (ui.offering.checked) throw new Error('click Connect first: it creates the offer to copy');
        connect(uiOptions());
      }
      const s = session;
      await s.started;
      await s.applyManual(ui.remoteDesc.value);
    } catch (e) {
      log(errMsg(e), 'error');
      setStatus(errMsg(e), 'error');
    }
  });

  ui.copyLocal.addEventListener('click', async () => {
    const text = ui.localDesc.value;
    if (!text) return;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) { // no clipboard API on plain-http LAN origins
      ui.localDesc.select();
      document.execCommand('copy');
    }
    log('local description copied');
  });

  ui.sendForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const s = session;
    const e = s && s.channels.find((c) => String(c.uid) === ui.sendChannel.value);
    const text = ui.sendText.value;
    if (!e || e.dc.readyState !== 'open') {
      log('no open channel selected', 'warn');
      return;
    }
    try {
      s.send(e, text);
      log(`${e.label} -> ${text}`);
      ui.sendText.value = '';
    } catch (err) {
      log(`send on "${e.label}": ${errMsg(err)}`, 'error');
    }
  });

  async function uiTest(fn) {
    if (busy || !session) return;
    busy = true;
    dirty = true;
    try {
      await fn(session);
    } catch (e) {
      log(errMsg(e), 'error');
      setStatus(errMsg(e), 'error');
    } finally {
      busy = false;
      dirty = true;
    }
  }

  function showResult(el, text, good) {
    el.textContent = text;
    el.className = 'result ' + (good ? 'good' : 'bad');
  }

  ui.echoRun.addEventListener('click', () => uiTest(async (s) => {
    ui.echoResult.textContent = 'running…';
    ui.echoResult.className = 'result';
    try {
      const r = await echoTest(s, 20);
      showResult(ui.echoResult, `${r.count} pings: min ${r.min_ms.toFixed(2)} · median ${r.median_ms.toFixed(2)} · max ${r.max_ms.toFixed(2)} ms` +
        (r.all_matched ? '' : ' (mismatch!)'), r.all_matched);
    } catch (e) {
      showResult(ui.echoResult, errMsg(e), false);
      throw e;
    }
  }));

  function transferButton(kind, fn) {
    return () => uiTest(async (s) => {
      const mib = Number(ui.size.value);
      if (!(mib > 0)) throw new Error('size must be a positive number of MiB');
      ui.progress.value = 0;
      ui.transferResult.textContent = `${kind}: running…`;
      ui.transferResult.className = 'result';
      try {
        const r = await fn(s, mib);
        const good = kind === 'upload' ? r.valid : r.checked;
        const check = kind === 'upload' ? `server counted ${fmt(r.server_bytes)} bytes` : (r.checked ? 'pattern checked' : 'DATA MISMATCH');
        const text = `${describeTransfer(kind, r)}; ${check}`;
        showResult(ui.transferResult, text, good);
        log(text, good ? 'info' : 'error');
        ui.progress.value = 1;
      } catch (e) {
        showResult(ui.transferResult, errMsg(e), false);
        throw e;
      }
    });
  }
  ui.uploadRun.addEventListener('click', transferButton('upload', uploadTest));
  ui.downloadRun.addEventListener('click', transferButton('download', downloadTest));

  ui.logClear.addEventListener('click', () => ui.log.replaceChildren());

  window.addEventListener('error', (ev) => log(`page error: ${ev.message}`, 'error'));
  window.addEventListener('unhandledrejection', (ev) => log(`unhandled: ${errMsg(ev.reason)}`, 'error'));

  // ---------------------------------------------------------------- start-up

  window.smolrtcRun = (options) => run(options);
  window.smolrtcLog = log;

  const q = new URLSearchParams(location.search);
  const params = Object.fromEntries(q.entries());
  // #token=.. (not sent to the server with the page; '+' stays '+', unlike a query).
  const hashToken = location.hash.match(/[#&]token=([^&]*)/);
  if (hashToken) {
    try {
      ui.token.value = decodeURIComponent(hashToken[1]);
    } catch (_) {
      ui.token.value = hashToken[1];
    }
  }
  if (!('gum' in params)) params.gum = q.get('auto') === '1' ? '1' : '0';
  if (MODES.includes(params.mode)) syncControls(normalize(params));
  if (typeof RTCPeerConnection === 'undefined') {
    log('this browser has no WebRTC (RTCPeerConnection)', 'error');
    setStatus('This browser does not support WebRTC.', 'error');
  } else {
    log(`smolrtc page loaded from ${location.host || location.protocol}`);
  }
  // Browsers give camera and microphone only to secure pages (https://, or localhost).
  if (!navigator.mediaDevices) {
    const note = document.createElement('p');
    note.id = 'needs-https';
    note.className = 'status error';
    note.textContent = 'Camera and microphone need HTTPS: open this page as https:// (smolrtc serve --tls-self-signed or --tls-cert), or on localhost. Data channels work as they are.';
    ui.status.after(note);
    log(note.textContent, 'warn');
  }
  render();
  // ?watch=NAME: the streams part below plays it (and reports, with auto=1) instead;
  // ?publish=NAME / ?talk=NAME: sinks.js does.
  if (q.get('auto') === '1' && !q.get('watch') && !q.get('publish') && !q.get('talk')) {
    run(params).catch((e) => log(`run: ${errMsg(e)}`, 'error'));
  }
  window.smolrtcLog = log;
  window.smolrtcAuth = withAuth;
})();


// ---------------------------------------------------------------- media page kit
//
// What the streams viewers (below) and the sinks (sinks.js) share: element helper,
// waiting for ICE gathering, and POSTing an offer (WHEP/WHIP SDP or /api/offer JSON).
window.smolrtcMedia = (() => {
  const auth = (init) => (window.smolrtcAuth ? window.smolrtcAuth(init) : init);

  const text = (tag, value, cls) => {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  };

  function waitGathered(pc, ms) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') {
          clearTimeout(t);
          resolve();
        }
      });
    });
  }

  // POSTs an offer: as SDP (WHEP, WHIP) or, with `json`, as {type, sdp} (/api/offer).
  // Resolves to the answer's SDP and Location; any other status than 2xx throws with the
  // service's {"error"} text.
  async function postOffer(url, sdp, json) {
    const res = await fetch(url, auth(json
      ? { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ type: 'offer', sdp }) }
      : { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: sdp }));
    const body = await res.text();
    if (!res.ok) {
      let why = body;
      try { why = JSON.parse(body).error || body; } catch (_) { /* text */ }
      throw new Error(`POST ${url}: HTTP ${res.status}: ${why}`);
    }
    return { sdp: json ? JSON.parse(body).sdp : body, location: res.headers.get('Location') };
  }

  // An unattended run's report to ?report=PATH (same origin only).
  async function postReport(report) {
    const url = new URLSearchParams(location.search).get('report');
    if (url && new URL(url, location.href).origin === location.origin) {
      await fetch(url, auth({ method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(report) }));
    }
  }

  return { auth, text, waitGathered, postOffer, postReport };
})();

// ---------------------------------------------------------------- streams (WHEP viewers)
//
// GET /api/streams fills the streams table (every 2 s); "Watch" (or ?watch=NAME[,NAME..])
// opens a viewer card: a recvonly WHEP session (POST /whep/NAME, non-trickle, DELETE on
// stop) with a <video> and live figures from getStats(). ?via=http instead sends the offer
// with an "echo" data channel beside the media to POST /api/offer?stream=NAME (one BUNDLE
// transport), and checks the echo. ?codec=VP8|H264 restricts the offer to that codec
// (setCodecPreferences). Unattended: ?watch=NAME&auto=1&report=/path posts
// {ok, mode, streams: {NAME: figures}} once frames decode (or why not, after ?wait=S).
(() => {
  const $ = (id) => document.getElementById(id);
  const log = (t, level) => (window.smolrtcLog ? window.smolrtcLog(t, level) : console.log(t));
  const q = new URLSearchParams(location.search);
  const viewers = new Map();
  const rows = $('stream-rows');
  const cards = $('viewers');
  if (!rows || !cards) return;

  const { auth, text, waitGathered, postOffer, postReport } = window.smolrtcMedia;
  const kbps = (bps) => (bps == null ? '–' : `${(bps / 1000).toFixed(0)} kbit/s`);

  async function refresh() {
    let list;
    try {
      const res = await fetch('/api/streams', auth({}));
      if (!res.ok) return;
      list = (await res.json()).streams || [];
    } catch (_) {
      return;
    }
    rows.replaceChildren();
    if (!list.length) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = text('td', 'No streams (smolrtc serve --video NAME=SOURCE).');
      td.colSpan = 7;
      tr.append(td);
      rows.append(tr);
      return;
    }
    for (const s of list) {
      const tr = document.createElement('tr');
      tr.append(text('td', s.name), text('td', s.codec || '–'), text('td', s.resolution || '–'),
        text('td', kbps(s.bitrate), 'num'), text('td', String(s.viewers), 'num'), text('td', s.state));
      const td = document.createElement('td');
      const b = text('button', viewers.has(s.name) ? 'Stop' : 'Watch', 'small');
      b.type = 'button';
      b.addEventListener('click', () => (viewers.has(s.name) ? stop(s.name) : watch(s.name)));
      td.append(b);
      tr.append(td);
      rows.append(tr);
    }
  }

  function preferCodec(transceiver, codec) {
    if (!codec || !transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const caps = RTCRtpReceiver.getCapabilities('video');
    if (!caps) return;
    const want = `video/${codec}`.toLowerCase();
    const keep = caps.codecs.filter((c) => c.mimeType.toLowerCase() === want
      || c.mimeType.toLowerCase() === 'video/rtx');
    if (keep.some((c) => c.mimeType.toLowerCase() === want)) transceiver.setCodecPreferences(keep);
  }

  // Host addresses show in candidates only after a media permission (else mDNS names).
  async function permission() {
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) return;
    try {
      const s = await md.getUserMedia({ audio: true });
      s.getTracks().forEach((t) => t.stop());
    } catch (_) { /* peer-reflexive candidates still work */ }
  }

  function card(name) {
    const el = document.createElement('div');
    el.className = 'viewer';
    const h = document.createElement('h3');
    h.append(text('span', name));
    const close = text('button', 'Stop', 'small');
    close.type = 'button';
    const c = { el: null, video: null, fields: null, stop: () => stop(name) };
    close.addEventListener('click', () => c.stop());
    h.append(close);
    const video = document.createElement('video');
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    video.controls = true;
    const dl = document.createElement('dl');
    const fields = {};
    for (const [k, label] of [['state', 'State'], ['codec', 'Codec'], ['resolution', 'Resolution'],
      ['fps', 'Frame rate'], ['bitrate', 'Bitrate'], ['decoded', 'Frames decoded'],
      ['dropped', 'Frames dropped'], ['rtt', 'RTT'], ['nacks', 'NACKs sent'], ['plis', 'PLIs sent'],
      ['lost', 'Packets lost'], ['audio', 'Audio samples']]) {
      dl.append(text('dt', label));
      fields[k] = text('dd', '–');
      dl.append(fields[k]);
    }
    el.append(h, video, dl);
    cards.append(el);
    return Object.assign(c, { el, video, fields });
  }

  // The figures of one viewer from getStats(): inbound video and audio, codec, RTT.
  async function figures(v) {
    const report = await v.pc.getStats();
    const out = { codec: null, rtt: null, video: null, audio: null };
    const codecs = new Map();
    report.forEach((r) => {
      if (r.type === 'codec') codecs.set(r.id, r.mimeType);
      if (r.type === 'inbound-rtp' && r.kind === 'video') out.video = r;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') out.audio = r;
      if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime != null) {
        out.rtt = r.currentRoundTripTime;
      }
    });
    if (out.video && out.video.codecId) out.codec = codecs.get(out.video.codecId) || null;
    const s = out.video || {};
    const now = performance.now();
    const bytes = s.bytesReceived || 0;
    const bps = v.last ? ((bytes - v.last.bytes) * 8 * 1000) / Math.max(1, now - v.last.t) : null;
    v.last = { bytes, t: now };
    return {
      codec: out.codec,
      frameWidth: s.frameWidth || 0,
      frameHeight: s.frameHeight || 0,
      framesPerSecond: s.framesPerSecond || 0,
      framesDecoded: s.framesDecoded || 0,
      keyFramesDecoded: s.keyFramesDecoded || 0,
      framesDropped: s.framesDropped || 0,
      packetsLost: s.packetsLost || 0,
      nackCount: s.nackCount || 0,
      retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0,
      pliCount: s.pliCount || 0,
      // Mean time a frame waited in the jitter buffer (ms): a late joiner's catch-up shows here.
      jitterBufferMs: s.jitterBufferEmittedCount ? (s.jitterBufferDelay * 1000) / s.jitterBufferEmittedCount : null,
      bitrate: bps,
      rtt: out.rtt,
      totalSamplesReceived: out.audio ? out.audio.totalSamplesReceived || 0 : null,
      connectionState: v.pc.connectionState,
    };
  }

  function show(v, f) {
    const set = (k, value) => { v.card.fields[k].textContent = value; };
    set('state', f.connectionState);
    set('codec', f.codec || '–');
    set('resolution', f.frameWidth ? `${f.frameWidth}x${f.frameHeight}` : '–');
    set('fps', f.framesPerSecond ? f.framesPerSecond.toFixed(0) : '–');
    set('bitrate', kbps(f.bitrate));
    set('decoded', `${f.framesDecoded} (${f.keyFramesDecoded} key)`);
    set('dropped', String(f.framesDropped));
    set('rtt', f.rtt == null ? '–' : `${(f.rtt * 1000).toFixed(1)} ms`);
    set('nacks', String(f.nackCount));
    set('plis', String(f.pliCount));
    set('lost', String(f.packetsLost));
    set('audio', f.totalSamplesReceived == null ? '–' : String(f.totalSamplesReceived));
  }

  // `key` names the viewer (several of one stream: NAME#2, ..; ?count=N).
  async function watch(name, key = name) {
    if (viewers.has(key)) return viewers.get(key);
    const pc = new RTCPeerConnection();
    const v = { name, pc, card: card(key), location: null, last: null, timer: null };
    v.card.stop = () => stop(key);
    viewers.set(key, v);
    try {
      const video = pc.addTransceiver('video', { direction: 'recvonly' });
      preferCodec(video, q.get('codec'));
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const via = q.get('via') || 'whep';
      const viaHttp = via === 'http' || via === 'ws';
      if (viaHttp) {
        const dc = pc.createDataChannel('echo');
        v.echo = null;
        dc.onopen = () => dc.send(`echo from ${name}`);
        dc.onmessage = (e) => { v.echo = e.data === `echo from ${name}`; };
      }
      const media = new MediaStream();
      pc.ontrack = (e) => {
        media.addTrack(e.track);
        v.card.video.srcObject = media;
      };
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathered(pc, 5000);
      if (via === 'ws') {
        await watchOverWs(v, name);
        log(`watching ${name} (WebSocket)`);
        v.timer = setInterval(async () => {
          try { show(v, await figures(v)); } catch (_) { /* closed */ }
        }, 1000);
        refresh();
        return v;
      }
      const url = viaHttp ? `/api/offer?stream=${encodeURIComponent(name)}` : `/whep/${encodeURIComponent(name)}`;
      const answer = await postOffer(url, pc.localDescription.sdp, viaHttp);
      v.location = answer.location;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      log(`watching ${name} (${v.location})`);
      v.timer = setInterval(async () => {
        try { show(v, await figures(v)); } catch (_) { /* closed */ }
      }, 1000);
    } catch (e) {
      log(`watch ${name}: ${e.message || e}`, 'error');
      v.card.fields.state.textContent = `error: ${e.message || e}`;
      v.error = String(e.message || e);
    }
    refresh();
    return v;
  }

  // /ws?stream=NAME: the complete offer as rawrtc's description message; the answer comes
  // back as one, the service's candidates trickle after it.
  function watchOverWs(v, name) {
    const tok = auth({}).headers ? auth({}).headers.Authorization.slice(7) : '';
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${proto}://${location.host}/ws?stream=${encodeURIComponent(name)}${tok ? `&token=${encodeURIComponent(tok)}` : ''}`;
    const ws = v.ws = new WebSocket(url);
    return new Promise((resolve, reject) => {
      ws.onopen = () => ws.send(JSON.stringify({ type: 'description', value: { type: 'offer', sdp: v.pc.localDescription.sdp } }));
      ws.onclose = (e) => reject(new Error(`WebSocket closed (${e.code})`));
      ws.onmessage = async (e) => {
        const msg = JSON.parse(e.data);
        if (msg.type === 'description') {
          await v.pc.setRemoteDescription(msg.value);
          resolve();
        } else if (msg.type === 'candidate' && msg.value) {
          try { await v.pc.addIceCandidate(msg.value); } catch (_) { /* before the answer, or end */ }
        } else if (msg.type === 'error') {
          reject(new Error(`WebSocket: ${msg.value}`));
        }
      };
    });
  }

  async function stop(key) {
    const v = viewers.get(key);
    if (!v) return;
    viewers.delete(key);
    clearInterval(v.timer);
    // WHEP: the DELETE ends the session first (else the close would race it).
    if (v.location) {
      try { await fetch(v.location, auth({ method: 'DELETE' })); } catch (_) { /* gone */ }
    }
    v.pc.close();
    if (v.ws) v.ws.close();
    v.card.el.remove();
    refresh();
  }

  // Unattended: watch, wait for decoded frames (keyframes too), report the figures.
  async function autoRun(names) {
    const want = Number(q.get('frames') || 30);
    const waitMs = Number(q.get('wait') || 30) * 1000;
    const started = performance.now();
    await permission();
    const results = {};
    let ok = true;
    const count = Math.max(1, Math.floor(Number(q.get('count') || 1)));
    const keys = names.flatMap((n) => Array.from({ length: count }, (_, i) => (i ? `${n}#${i + 1}` : n)));
    // All at once (?count=N: N viewers of each stream), then each checked in turn.
    const watched = await Promise.all(keys.map((k) => watch(k.split('#')[0], k)));
    for (const [i, name] of keys.entries()) {
      const v = watched[i];
      let f = null;
      let firstFrameMs = null;
      while (!v.error && performance.now() - started < waitMs) {
        f = await figures(v);
        if (firstFrameMs == null && f.framesDecoded > 0) firstFrameMs = performance.now() - started;
        const audioOk = f.totalSamplesReceived === null || f.totalSamplesReceived > 0;
        if (f.framesDecoded >= want && f.keyFramesDecoded > 0 && v.echo !== null && audioOk) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const good = !v.error && f && f.framesDecoded >= want && f.keyFramesDecoded > 0;
      ok = ok && good;
      results[name] = { ...(f || {}), firstFrameMs, echo: v.echo, error: v.error || (good ? null : 'frames did not decode in time') };
    }
    const report = { ok, mode: q.get('via') || 'whep', streams: results, userAgent: navigator.userAgent };
    await postReport(report);
    if (q.get('keep') !== '1') for (const k of keys) await stop(k);
  }

  refresh();
  setInterval(refresh, 2000);
  const names = (q.get('watch') || '').split(',').map((s) => s.trim()).filter(Boolean);
  if (q.get('auto') === '1' && names.length) {
    autoRun(names).catch((e) => log(`streams: ${e.message || e}`, 'error'));
  } else {
    names.forEach((n) => watch(n));
  }
})();
