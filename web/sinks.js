// smolrtc serve: the page's sinks part (browser -> device media).
//
// GET /api/sinks fills the sinks table (every 2 s). Per sink:
//   "Publish camera": a sendonly WHIP session (POST /whip/NAME, non-trickle, DELETE on
//       stop) with the camera and microphone; the sink records / forwards them.
//   "Talk" (held): one session (POST /api/offer?sink=NAME[&stream=STREAM]) that plays the
//       chosen stream (recvonly video, sendrecv audio) and sends the microphone to the sink
//       while the button is held (the track is enabled only then).
// Both need navigator.mediaDevices, which browsers give to secure origins only (https://,
// or http://localhost): elsewhere the page says so instead of failing later.
// Unattended: ?publish=NAME&auto=1[&seconds=S][&video=0][&audio=0]&report=/path, or
// ?talk=NAME[&stream=STREAM]&auto=1[&seconds=S]&report=/path: runs, then posts
// {ok, mode: "publish"|"talk", sink, figures, error}.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const log = (t, level) => (window.smolrtcLog ? window.smolrtcLog(t, level) : console.log(t));
  const q = new URLSearchParams(location.search);
  const rows = $('sink-rows');
  const note = $('sink-note');
  const cards = $('publishers');
  if (!rows || !cards) return;
  const active = new Map(); // "publish:NAME" | "talk:NAME" -> session

  const { auth, text, waitGathered, postOffer: post, postReport } = window.smolrtcMedia;
  const button = (label, cls = 'small') => {
    const b = text('button', label, cls);
    b.type = 'button';
    return b;
  };
  const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);

  // getUserMedia exists on secure origins only.
  const mediaMissing = () => !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  const HTTPS_NOTE = 'Publishing and talk-back need the camera and microphone, which browsers '
    + 'give to secure pages only: open this page as https:// (smolrtc serve --tls-self-signed '
    + 'or --tls-cert) or on localhost.';
  if (note && mediaMissing()) {
    note.textContent = HTTPS_NOTE;
    note.hidden = false;
  }

  let streams = [];
  async function refresh() {
    let list;
    try {
      const [res, st] = await Promise.all([fetch('/api/sinks', auth({})), fetch('/api/streams', auth({}))]);
      if (!res.ok) return;
      list = (await res.json()).sinks || [];
      if (st.ok) streams = ((await st.json()).streams || []).map((s) => s.name);
    } catch (_) {
      return;
    }
    rows.replaceChildren();
    if (!list.length) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = text('td', 'No sinks (smolrtc serve --sink NAME=DEST).');
      td.colSpan = 7;
      tr.append(td);
      rows.append(tr);
      return;
    }
    for (const s of list) {
      const tr = document.createElement('tr');
      const dests = [s.video, s.audio].filter(Boolean).map((d) => `${d.kind}: ${d.dest}`).join(', ');
      tr.append(text('td', s.name), text('td', dests), text('td', String(s.active_sessions), 'num'),
        text('td', String(s.frames), 'num'), text('td', bytes(s.bytes), 'num'),
        text('td', s.error ? `error: ${s.error}` : (s.active_sessions ? 'receiving' : 'idle')));
      const td = document.createElement('td');
      const pub = button(active.has(`publish:${s.name}`) ? 'Stop' : 'Publish camera');
      pub.disabled = mediaMissing();
      pub.title = mediaMissing() ? HTTPS_NOTE : 'WHIP: camera and microphone to this sink';
      pub.addEventListener('click', () => (active.has(`publish:${s.name}`)
        ? stop(`publish:${s.name}`) : publish(s.name).catch(() => {})));
      td.append(pub);
      if (s.audio) {
        const talk = button('Talk (hold)');
        talk.disabled = mediaMissing();
        talk.title = mediaMissing() ? HTTPS_NOTE : 'Microphone to this sink while held';
        holdToTalk(talk, s.name);
        td.append(' ', talk);
      }
      tr.append(td);
      rows.append(tr);
    }
  }

  function card(key, title) {
    const el = document.createElement('div');
    el.className = 'viewer';
    const h = document.createElement('h3');
    h.append(text('span', title));
    const close = button('Stop');
    close.addEventListener('click', () => stop(key));
    h.append(close);
    const video = document.createElement('video');
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    const state = text('p', 'starting', 'small');
    el.append(h, video, state);
    cards.append(el);
    return { el, video, state };
  }

  // What the page sends and receives, from getStats().
  async function figures(s) {
    const out = { video: null, audio: null, inboundAudio: null, inboundVideo: null };
    (await s.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') out.video = r;
      if (r.type === 'outbound-rtp' && r.kind === 'audio') out.audio = r;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') out.inboundAudio = r;
      if (r.type === 'inbound-rtp' && r.kind === 'video') out.inboundVideo = r;
    });
    return {
      connectionState: s.pc.connectionState,
      framesSent: out.video ? out.video.framesEncoded || 0 : null,
      videoPacketsSent: out.video ? out.video.packetsSent || 0 : null,
      frameWidth: out.video ? out.video.frameWidth || 0 : null,
      frameHeight: out.video ? out.video.frameHeight || 0 : null,
      nacksReceived: out.video ? out.video.nackCount || 0 : null,
      plisReceived: out.video ? out.video.pliCount || 0 : null,
      audioPacketsSent: out.audio ? out.audio.packetsSent || 0 : null,
      audioSamplesReceived: out.inboundAudio ? out.inboundAudio.totalSamplesReceived || 0 : null,
      framesDecoded: out.inboundVideo ? out.inboundVideo.framesDecoded || 0 : null,
    };
  }

  // WHIP: the camera (and microphone) to sink `name`.
  async function publish(name, want = { video: true, audio: true }) {
    const key = `publish:${name}`;
    if (mediaMissing()) throw new Error(HTTPS_NOTE);
    const media = await navigator.mediaDevices.getUserMedia(want);
    const pc = new RTCPeerConnection();
    const s = { pc, media, card: card(key, `${name}: publishing`), location: null, timer: null };
    active.set(key, s);
    refresh();
    try {
      s.card.video.srcObject = media;
      for (const t of media.getTracks()) pc.addTransceiver(t, { direction: 'sendonly', streams: [media] });
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathered(pc, 5000);
      const answer = await post(`/whip/${encodeURIComponent(name)}`, pc.localDescription.sdp, false);
      s.location = answer.location;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      log(`publishing to sink ${name} (${s.location})`);
      s.timer = setInterval(async () => {
        try {
          const f = await figures(s);
          s.card.state.textContent = `${f.connectionState}: ${f.framesSent ?? 0} frames, `
            + `${f.audioPacketsSent ?? 0} audio packets sent`;
        } catch (_) { /* closed */ }
      }, 1000);
    } catch (e) {
      log(`publish ${name}: ${e.message || e}`, 'error');
      s.card.state.textContent = `error: ${e.message || e}`;
      s.error = String(e.message || e);
    }
    return s;
  }

  // Talk-back: one session plays `stream` (if any) and sends the microphone to sink
  // `name`; the microphone track is enabled only while talking.
  async function talkSession(name, stream) {
    const key = `talk:${name}`;
    if (active.has(key)) return active.get(key);
    if (mediaMissing()) throw new Error(HTTPS_NOTE);
    const media = await navigator.mediaDevices.getUserMedia({ audio: true });
    const mic = media.getAudioTracks()[0];
    mic.enabled = false;
    const pc = new RTCPeerConnection();
    const s = { pc, media, mic, card: card(key, `${name}: talk-back${stream ? ` with ${stream}` : ''}`), timer: null };
    active.set(key, s);
    try {
      if (stream) pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver(mic, { direction: stream ? 'sendrecv' : 'sendonly', streams: [media] });
      const playing = new MediaStream();
      pc.ontrack = (e) => {
        playing.addTrack(e.track);
        s.card.video.srcObject = playing;
        // The device's audio is heard (the page's own video element stays muted otherwise).
        s.card.video.muted = false;
      };
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathered(pc, 5000);
      const qs = `sink=${encodeURIComponent(name)}${stream ? `&stream=${encodeURIComponent(stream)}` : ''}`;
      const answer = await post(`/api/offer?${qs}`, pc.localDescription.sdp, true);
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      log(`talk-back to sink ${name}${stream ? `, playing ${stream}` : ''}`);
      s.timer = setInterval(async () => {
        try {
          const f = await figures(s);
          s.card.state.textContent = `${f.connectionState}: ${s.mic.enabled ? 'talking' : 'hold Talk to speak'}; `
            + `${f.audioPacketsSent ?? 0} audio packets sent, ${f.audioSamplesReceived ?? 0} samples heard`;
        } catch (_) { /* closed */ }
      }, 1000);
    } catch (e) {
      log(`talk ${name}: ${e.message || e}`, 'error');
      s.card.state.textContent = `error: ${e.message || e}`;
      s.error = String(e.message || e);
    }
    return s;
  }

  // The microphone is on while the button is held (mouse, touch or the space key).
  function holdToTalk(b, name) {
    const stream = () => (streams.length === 1 ? streams[0] : q.get('stream') || null);
    const on = async (e) => {
      e.preventDefault();
      try {
        const s = await talkSession(name, stream());
        if (s.mic) s.mic.enabled = true;
        b.classList.add('on');
      } catch (err) {
        log(`talk ${name}: ${err.message || err}`, 'error');
      }
    };
    const off = () => {
      const s = active.get(`talk:${name}`);
      if (s && s.mic) s.mic.enabled = false;
      b.classList.remove('on');
    };
    b.addEventListener('pointerdown', on);
    b.addEventListener('pointerup', off);
    b.addEventListener('pointerleave', off);
    b.addEventListener('keydown', (e) => { if (e.key === ' ' && !e.repeat) on(e); });
    b.addEventListener('keyup', (e) => { if (e.key === ' ') off(); });
  }

  async function stop(key) {
    const s = active.get(key);
    if (!s) return;
    active.delete(key);
    clearInterval(s.timer);
    // WHIP: the DELETE ends the session first (else the close would race it).
    if (s.location) {
      try { await fetch(s.location, auth({ method: 'DELETE' })); } catch (_) { /* gone */ }
    }
    s.pc.close();
    s.media.getTracks().forEach((t) => t.stop());
    s.card.el.remove();
    refresh();
  }

  // Unattended: publish (or talk) for ?seconds=S, then report what was sent and heard.
  async function autoRun() {
    const seconds = Number(q.get('seconds') || 5);
    const name = q.get('publish') || q.get('talk');
    const mode = q.get('publish') ? 'publish' : 'talk';
    const report = { ok: false, mode, sink: name, figures: null, error: null, userAgent: navigator.userAgent };
    try {
      const s = mode === 'publish'
        ? await publish(name, { video: q.get('video') !== '0', audio: q.get('audio') !== '0' })
        : await talkSession(name, q.get('stream'));
      if (s.error) throw new Error(s.error);
      if (s.mic) s.mic.enabled = true;
      const until = performance.now() + seconds * 1000;
      let connected = null;
      while (performance.now() < until) {
        if (connected == null && s.pc.connectionState === 'connected') connected = performance.now();
        if (s.pc.connectionState === 'failed') throw new Error('connection failed');
        await new Promise((r) => setTimeout(r, 200));
      }
      const f = await figures(s);
      report.figures = f;
      const sent = mode === 'publish'
        ? (f.framesSent || 0) > 0 || (f.audioPacketsSent || 0) > 0
        : (f.audioPacketsSent || 0) > 0;
      const heard = mode === 'publish' || !q.get('stream') || (f.audioSamplesReceived || 0) > 0;
      report.ok = f.connectionState === 'connected' && sent && heard;
      if (!report.ok) report.error = `not connected or nothing sent/heard: ${JSON.stringify(f)}`;
      if (q.get('keep') !== '1') await stop(`${mode}:${name}`);
    } catch (e) {
      report.error = String(e.message || e);
    }
    await postReport(report);
  }

  refresh();
  setInterval(refresh, 2000);
  if (q.get('auto') === '1' && (q.get('publish') || q.get('talk'))) {
    autoRun().catch((e) => log(`sinks: ${e.message || e}`, 'error'));
  }
  window.smolrtcPublish = publish;
})();
