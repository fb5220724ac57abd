// The live page: stream speech (a wav file or the microphone) to /ws and draw the skeleton
// frames that come back, each at its time in the sound. Protocol: gesture_apps/serve/app.py.
"use strict";

const RATE = 16000; // what files are resampled to before sending
const CHUNK_S = 0.1; // audio per websocket message
const MARGIN_S = 0.15; // extra head start a file's audio gets over its playback

const stage = document.getElementById("stage");
const pen = stage.getContext("2d");
const statusEl = document.getElementById("status");
const fileEl = document.getElementById("file");
const micBtn = document.getElementById("mic");
const stopBtn = document.getElementById("stop");

// SMPL-X sides, for colouring the bones by their child joint
const LEFT = new Set([1, 4, 7, 10, 13, 16, 18, 20, 23]);
const RIGHT = new Set([2, 5, 8, 11, 14, 17, 19, 21, 24]);
for (let j = 25; j < 40; j++) LEFT.add(j);
for (let j = 40; j < 55; j++) RIGHT.add(j);
const COLOURS = { left: "#1f6feb", right: "#e8590c", centre: "#2f3b4c" };
const HEAD = 15;
const FACE = new Set([22, 23, 24]); // jaw and eyes: inside the head circle, clutter at this size

let run = null; // the current session (one at a time)

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", isError);
}

function packet(offset, samples) {
  // int64 little-endian offset, then float32 little-endian samples
  const buf = new ArrayBuffer(8 + 4 * samples.length);
  const view = new DataView(buf);
  view.setBigInt64(0, BigInt(offset), true);
  for (let i = 0; i < samples.length; i++) view.setFloat32(8 + 4 * i, samples[i], true);
  return buf;
}

class Session {
  // One websocket stream: frames in, counts and latency shown in #status.
  constructor(sampleRate, onReady) {
    this.frames = [];
    this.latencies = [];
    this.parents = null;
    this.fps = 30;
    this.clock = () => Infinity; // seconds of sound played; Infinity: show the newest frame
    this.view = null;
    this.done = false;
    this.closed = false;
    this.ended = false; // 'end' sent: no more audio
    this.cleanups = [];
    this.onFirstFrames = () => {};
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.ws.send(JSON.stringify({ type: "start", sample_rate: sampleRate }));
    this.ws.onmessage = (event) => this.receive(JSON.parse(event.data), onReady);
    this.ws.onclose = () => {
      this.closed = true;
      if (run === this) stopBtn.disabled = true;
      this.cleanup();
      if (!this.done && !this.failed && run === this) setStatus("Connection closed.", true);
    };
    this.ws.onerror = () => {};
  }

  receive(msg, onReady) {
    if (msg.type === "ready") {
      this.parents = msg.parents;
      this.fps = msg.fps;
      this.lead = msg.chunk_s + msg.lookahead_s; // audio the model hears before it moves
      setStatus("Streaming...");
      onReady(this);
    } else if (msg.type === "frames") {
      const first = this.frames.length === 0;
      msg.joints.forEach((joints, k) => (this.frames[msg.start + k] = joints));
      if (first) this.onFirstFrames();
      if (!this.view) this.view = fitView(this.frames[0] || msg.joints[0]);
      this.latencies.push(msg.latency_ms);
      this.show();
    } else if (msg.type === "done") {
      this.done = true;
      this.show();
    } else if (msg.type === "error") {
      this.failed = true;
      setStatus(`Server: ${msg.message}`, true);
    }
  }

  send(offset, samples) {
    if (!this.ended && this.ws.readyState === WebSocket.OPEN) this.ws.send(packet(offset, samples));
  }

  end() {
    if (!this.ended && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "end" }));
    }
    this.ended = true;
  }

  onEnd(fn) {
    this.cleanups.push(fn);
  }

  cleanup() {
    // release the audio once, whichever comes first: the server's close or the user's stop
    const fns = this.cleanups;
    this.cleanups = [];
    fns.forEach((fn) => fn());
  }

  close() {
    this.cleanup();
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close();
  }

  show() {
    const n = this.frames.length;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const p50 = sorted.length ? sorted[Math.floor(sorted.length / 2)] : NaN;
    const last = this.latencies.length ? this.latencies[this.latencies.length - 1] : NaN;
    statusEl.dataset.frames = String(n);
    statusEl.dataset.latencyMs = Number.isNaN(last) ? "" : String(last);
    statusEl.dataset.done = this.done ? "1" : "0";
    const secs = (n / this.fps).toFixed(2);
    const lat = Number.isNaN(last)
      ? ""
      : ` · model latency ${last.toFixed(1)} ms (median ${p50.toFixed(1)} ms)`;
    setStatus(`${n} frames (${secs} s)${lat}${this.done ? " · done" : ""}`);
  }
}

function fitView(joints) {
  // a square box around the first frame with room to move: kept for the whole stream, so the
  // figure does not jump when it gestures
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of joints) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x);
    y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  const size = 1.35 * Math.max(x1 - x0, y1 - y0, 0.5);
  return { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, scale: stage.width / size };
}

function draw() {
  pen.fillStyle = "#ffffff";
  pen.fillRect(0, 0, stage.width, stage.height);
  const s = run;
  if (s && s.view && s.frames.length) {
    const want = Math.floor(s.clock() * s.fps);
    // frame i at sound time i/fps; a frame that comes late is shown when it comes
    const i = Math.min(want, s.frames.length - 1);
    if (i >= 0 && s.frames[i]) drawSkeleton(s.frames[i], s.parents, s.view);
    if (Number.isFinite(want) && want >= 0 && !(s.done && want >= s.frames.length)) {
      // how often the sound was ahead of the frames (shown in the data set for the tests)
      const key = i === want ? "onTime" : "late";
      stage.dataset[key] = String(Number(stage.dataset[key] || 0) + 1);
    }
  }
  requestAnimationFrame(draw);
}

function drawSkeleton(joints, parents, view) {
  // front view, orthographic: x right, y up
  const px = (p) => [
    stage.width / 2 + (p[0] - view.cx) * view.scale,
    stage.height / 2 - (p[1] - view.cy) * view.scale,
  ];
  const pts = joints.map(px);
  pen.lineCap = "round";
  for (let j = 1; j < pts.length; j++) {
    const parent = parents[j];
    if (parent < 0 || FACE.has(j)) continue;
    pen.strokeStyle = LEFT.has(j) ? COLOURS.left : RIGHT.has(j) ? COLOURS.right : COLOURS.centre;
    pen.lineWidth = j >= 25 ? 2 : 5; // fingers thin
    pen.beginPath();
    pen.moveTo(...pts[parent]);
    pen.lineTo(...pts[j]);
    pen.stroke();
  }
  pen.fillStyle = COLOURS.centre;
  pen.beginPath();
  pen.arc(...pts[HEAD], 0.09 * view.scale, 0, 2 * Math.PI);
  pen.lineWidth = 3;
  pen.strokeStyle = COLOURS.centre;
  pen.stroke();
}

function stopAll() {
  // synchronously on the click, so #status never shows the previous session's counts
  if (run) run.close();
  run = null;
  stopBtn.disabled = true;
  Object.assign(statusEl.dataset, { frames: "0", done: "0", latencyMs: "" });
  Object.assign(stage.dataset, { onTime: "0", late: "0" });
}

async function playFile(file) {
  stopAll();
  setStatus(`Decoding ${file.name}...`);
  const audio = new AudioContext();
  let decoded;
  try {
    decoded = await audio.decodeAudioData(await file.arrayBuffer());
  } catch (e) {
    setStatus(`Cannot decode ${file.name}: ${e.message || e}`, true);
    audio.close();
    return;
  }
  // the model takes 16 kHz mono: let the browser resample and mix down
  const n = Math.ceil(decoded.duration * RATE);
  const offline = new OfflineAudioContext(1, n, RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const samples = (await offline.startRendering()).getChannelData(0);

  const session = new Session(RATE, async (s) => {
    await audio.resume();
    // the audio is sent in real time from now and played once the first frames are back
    // (a chunk, the look-ahead and the model's time after the start), so that the frames
    // after them, which lag the audio sent by as much, are back before their sound
    const sendStart = audio.currentTime;
    const player = audio.createBufferSource();
    player.buffer = decoded;
    player.connect(audio.destination);
    let playAt = Infinity;
    s.clock = () => audio.currentTime - playAt;
    s.onFirstFrames = () => {
      playAt = Math.max(sendStart + s.lead, audio.currentTime) + MARGIN_S;
      player.start(playAt);
    };
    const step = Math.round(CHUNK_S * RATE);
    let sent = 0;
    const pace = setInterval(() => {
      const due = Math.min(n, Math.floor((audio.currentTime - sendStart + CHUNK_S) * RATE));
      while (sent < due && (due - sent >= step || due === n)) {
        const end = Math.min(sent + step, n);
        s.send(sent, samples.subarray(sent, end));
        sent = end;
      }
      if (sent >= n || s.ended) {
        clearInterval(pace);
        s.end();
      }
    }, 25);
    s.onEnd(() => {
      clearInterval(pace);
      try { player.stop(); } catch (e) { /* not started yet */ }
      audio.close();
    });
  });
  run = session;
  stopBtn.disabled = false;
}

async function useMic() {
  stopAll();
  let media, audio;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    try {
      audio = new AudioContext({ sampleRate: RATE });
    } catch (e) {
      audio = new AudioContext(); // a browser that cannot open 16 kHz: the server resamples
    }
    await audio.audioWorklet.addModule("/static/capture.js");
  } catch (e) {
    setStatus(`Microphone unavailable: ${e.message || e}`, true);
    if (media) media.getTracks().forEach((t) => t.stop());
    if (audio) audio.close();
    return;
  }
  const session = new Session(audio.sampleRate, (s) => {
    const input = audio.createMediaStreamSource(media);
    const capture = new AudioWorkletNode(audio, "capture", {
      processorOptions: { chunk: Math.round(CHUNK_S * audio.sampleRate) },
    });
    const mute = audio.createGain(); // keeps the worklet pulled without playing the mic back
    mute.gain.value = 0;
    input.connect(capture).connect(mute).connect(audio.destination);
    let offset = 0;
    capture.port.onmessage = (event) => {
      s.send(offset, event.data);
      offset += event.data.length;
    };
    s.onEnd(() => {
      media.getTracks().forEach((t) => t.stop());
      audio.close();
    });
  });
  // live speech cannot be delayed: each frame is drawn as it arrives
  run = session;
  stopBtn.disabled = false;
}

fileEl.addEventListener("change", () => {
  if (fileEl.files.length) playFile(fileEl.files[0]);
});
micBtn.addEventListener("click", useMic);
stopBtn.addEventListener("click", () => {
  if (run && !run.closed) run.end(); // the server sends the last frames, then closes
  stopBtn.disabled = true;
});
requestAnimationFrame(draw);
