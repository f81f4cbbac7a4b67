// The listening page: uploads with progress, a sample-aligned A/B/removed player, live strength and hum
// re-renders (the server re-applies the mask it kept; the network does not run again), spectrograms, noise floor.
"use strict";

const api = {
  config: null,
  async json(url, options) {
    const response = await fetch(url, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(detail(body, response));
    return body;
  },
  async audio(url, context) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(detail(await response.json().catch(() => ({})), response));
    return context.decodeAudioData(await response.arrayBuffer());
  },
};

function detail(body, response) {
  const text = body && body.detail;
  if (typeof text === "string") return text;
  if (Array.isArray(text)) return text.map((item) => item.msg).join("; ");
  return `${response.status} ${response.statusText}`;
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

// Before and after play together from the same start time through their own gains, so switching what is
// heard never moves the position; "removed" is before minus after.
class Player {
  constructor(sampleRate) {
    this.context = new AudioContext({ sampleRate });
    this.gains = { before: this.context.createGain(), after: this.context.createGain() };
    for (const gain of Object.values(this.gains)) gain.connect(this.context.destination);
    this.buffers = { before: null, after: null };
    this.sources = [];
    this.offset = 0;
    this.startedAt = 0;
    this.playing = false;
    this.setMode("after");
  }
  get duration() { return this.buffers.before ? this.buffers.before.duration : 0; }
  position() {
    if (!this.playing) return this.offset;
    return Math.min(this.duration, this.offset + Math.max(0, this.context.currentTime - this.startedAt));
  }
  setMode(mode) {
    const levels = { before: [1, 0], after: [0, 1], removed: [1, -1] }[mode];
    if (!levels) throw new Error(`unknown mode ${mode}`);
    this.mode = mode;
    this.gains.before.gain.value = levels[0];
    this.gains.after.gain.value = levels[1];
  }
  async play() {
    if (this.playing || !this.buffers.after) return;
    await this.context.resume();
    if (this.offset >= this.duration) this.offset = 0;
    this.start(this.offset);
  }
  pause() {
    if (!this.playing) return;
    this.offset = this.position();
    this.stopSources();
    this.playing = false;
  }
  seek(seconds) {
    const target = Math.max(0, Math.min(this.duration, seconds));
    if (this.playing) this.start(target); else this.offset = target;
  }
  setBuffer(which, buffer) {
    this.buffers[which] = buffer;
    if (this.playing) this.start(this.position());
  }
  start(at) {
    this.stopSources();
    // Both sources start at the same context time, a little ahead so neither misses it.
    const when = this.context.currentTime + 0.03;
    this.sources = ["before", "after"].map((which) => {
      const source = this.context.createBufferSource();
      source.buffer = this.buffers[which];
      source.connect(this.gains[which]);
      source.start(when, at);
      return source;
    });
    this.sources[1].onended = (event) => {
      if (this.sources[1] === event.target && this.position() >= this.duration - 0.05) {
        this.playing = false;
        this.offset = this.duration;
        this.onended && this.onended();
      }
    };
    this.offset = at;
    this.startedAt = when;
    this.playing = true;
  }
  stopSources() {
    for (const source of this.sources) { source.onended = null; try { source.stop(); } catch (error) { /* never started */ } }
    this.sources = [];
  }
}

// One uploaded file: its card, its player and its settings.
class FileCard {
  constructor(file) {
    this.file = file;
    this.element = document.getElementById("file-template").content.firstElementChild.cloneNode(true);
    this.$ = (selector) => this.element.querySelector(selector);
    this.$(".name").textContent = file.name;
    this.settings = { strength_db: api.config.default_strength_db, hum: true, format: "original" };
    this.generation = 0;
    this.renders = 0;
    this.element.addEventListener("pointerdown", () => { cards.active = this; });
    // Buttons give focus back, so Space keeps meaning play/pause after a click.
    this.element.addEventListener("click", (event) => { if (event.target.closest("button")) event.target.closest("button").blur(); });
    this.$(".forget").addEventListener("click", () => this.forget());
    document.getElementById("files").prepend(this.element);
  }
  setState(state, text) {
    this.element.dataset.state = state;
    if (text !== undefined) this.$(".status-text").textContent = text;
  }
  fail(message) {
    this.$(".error").textContent = message;
    this.setState("error");
  }
  upload() {
    const limit = api.config.max_upload_mb * 1048576;
    if (this.file.size > limit) {
      this.fail(`${this.file.name}: ${(this.file.size / 1048576).toFixed(1)} MB is over the upload limit of ${api.config.max_upload_mb} MB (--max-upload-mb)`);
      return;
    }
    // XMLHttpRequest, not fetch: only it reports upload progress. The file goes as the raw body, streamed.
    const request = new XMLHttpRequest();
    request.open("POST", `/api/files?name=${encodeURIComponent(this.file.name)}`);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) this.progress(event.loaded / event.total, "uploading");
    };
    request.onload = () => {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (error) { /* not JSON */ }
      if (request.status !== 200) return this.fail(detail(body, { status: request.status, statusText: request.statusText }));
      this.id = body.id;
      this.element.dataset.id = body.id;
      this.poll();
    };
    request.onerror = () => this.fail(`${this.file.name}: upload failed (is the server still running?)`);
    request.send(this.file);
  }
  progress(fraction, label) {
    this.$(".progress").value = fraction;
    this.setState(label === "uploading" ? "uploading" : this.element.dataset.state, `${label} ${Math.round(fraction * 100)} %`);
  }
  async poll() {
    let status;
    try { status = await api.json(`/api/files/${this.id}`); } catch (error) { return this.fail(error.message); }
    if (status.state === "error") return this.fail(status.error);
    if (status.state === "done") return this.ready(status);
    this.setState(status.state);
    this.progress(status.progress, status.state === "queued" ? "queued" : "denoising");
    setTimeout(() => this.poll(), 250);
  }
  url(path, extra = {}) {
    const query = new URLSearchParams({ strength_db: this.settings.strength_db, hum: this.settings.hum, ...extra });
    return `/api/files/${this.id}/${path}?${query}`;
  }
  async ready(status) {
    this.status = status;
    this.$(".meta").textContent = `${clock(status.duration_s)} · ${status.sample_rate} Hz · ${status.channels} ch · ${status.format} ${status.subtype}`;
    this.view = { start_s: 0, end_s: status.duration_s };
    this.player = new Player(status.sample_rate);
    this.player.onended = () => this.showPlaying();
    try {
      const [before, after] = await Promise.all([
        api.audio(`/api/files/${this.id}/before.wav`, this.player.context),
        api.audio(this.url("after.wav"), this.player.context),
      ]);
      this.player.setBuffer("before", before);
      this.player.setBuffer("after", after);
    } catch (error) { return this.fail(error.message); }
    this.renders += 1;
    this.wireControls();
    this.element.dataset.renders = this.renders;
    this.setState("done");
    if (!cards.active) cards.active = this;
    this.refreshPictures();
    requestAnimationFrame(() => this.tick());
  }
  wireControls() {
    const strength = this.$(".strength");
    strength.max = api.config.max_strength_db;
    strength.value = this.settings.strength_db;
    this.$(".strength-value").textContent = `${strength.value} dB`;
    strength.addEventListener("input", () => { this.$(".strength-value").textContent = `${strength.value} dB`; });
    strength.addEventListener("change", () => {
      // Held arrow keys fire a change per step: render only the value the slider settles on.
      clearTimeout(this.strengthTimer);
      this.strengthTimer = setTimeout(() => this.change({ strength_db: Number(strength.value) }), 120);
    });
    this.$(".hum").addEventListener("change", (event) => this.change({ hum: event.target.checked }));
    this.$(".format").addEventListener("change", (event) => { this.settings.format = event.target.value; this.updateDownload(); });
    this.$(".play").addEventListener("click", () => this.togglePlay());
    this.$(".toggle").addEventListener("click", () => this.setMode(this.player.mode === "before" ? "after" : "before"));
    for (const button of this.element.querySelectorAll(".modes button")) {
      button.addEventListener("click", () => this.setMode(button.dataset.mode));
    }
    this.$(".whole").addEventListener("click", () => this.zoom(0, this.status.duration_s));
    for (const canvas of this.element.querySelectorAll(".canvas")) { this.wireZoom(canvas); addFrequencyTicks(canvas); }
    this.updateDownload();
  }
  setMode(mode) {
    this.player.setMode(mode);
    for (const button of this.element.querySelectorAll(".modes button")) button.classList.toggle("on", button.dataset.mode === mode);
  }
  async togglePlay() {
    for (const other of cards.all) if (other !== this && other.player) { other.player.pause(); other.showPlaying(); }
    if (this.player.playing) this.player.pause(); else await this.player.play();
    this.showPlaying();
  }
  showPlaying() { this.$(".play").textContent = this.player.playing ? "❚❚ Pause" : "▶ Play"; }
  // A new setting: the few seconds from the playhead first, so the change is heard at once, then the whole file.
  async change(update) {
    Object.assign(this.settings, update);
    this.updateDownload();
    const generation = ++this.generation;
    this.$(".render-state").textContent = "rendering …";
    try {
      const from = Math.max(0, this.player.position() - 0.5);
      const head = await api.audio(this.url("after.wav", { start_s: from, end_s: from + 15 }), this.player.context);
      if (generation !== this.generation) return;
      this.player.setBuffer("after", splice(this.player.context, this.player.buffers.after, head, from));
      this.previews = (this.previews || 0) + 1;
      this.element.dataset.previews = this.previews;
      this.refreshPictures();
      const whole = await api.audio(this.url("after.wav"), this.player.context);
      if (generation !== this.generation) return;
      this.player.setBuffer("after", whole);
      this.renders += 1;
      this.element.dataset.renders = this.renders;
      this.$(".render-state").textContent = "";
    } catch (error) {
      if (generation === this.generation) this.$(".render-state").textContent = error.message;
    }
  }
  updateDownload() {
    this.$(".download").href = this.url("download", { format: this.settings.format });
  }
  refreshPictures() {
    const range = { start_s: this.view.start_s.toFixed(3), end_s: this.view.end_s.toFixed(3) };
    this.$(".before-image").src = this.url("spectrogram.png", { which: "before", ...range });
    this.$(".after-image").src = this.url("spectrogram.png", { which: "after", ...range });
    this.$(".view-range").textContent = `${clock(this.view.start_s)} – ${clock(this.view.end_s)}`;
    clearTimeout(this.floorTimer);
    this.floorTimer = setTimeout(async () => {
      try { drawFloor(this.$(".floor-plot"), this.$(".floor-text"), await api.json(this.url("floor"))); }
      catch (error) { this.$(".floor-text").textContent = error.message; }
    }, 150);
  }
  zoom(start, end) {
    const length = this.status.duration_s;
    start = Math.max(0, Math.min(start, length));
    end = Math.max(start + Math.min(0.05, length), Math.min(end, length));
    this.view = { start_s: start, end_s: end };
    this.refreshPictures();
  }
  timeAt(canvas, clientX) {
    const box = canvas.getBoundingClientRect();
    const share = Math.max(0, Math.min(1, (clientX - box.left) / box.width));
    return this.view.start_s + share * (this.view.end_s - this.view.start_s);
  }
  wireZoom(canvas) {
    const selection = canvas.querySelector(".selection");
    let anchor = null;
    canvas.addEventListener("pointerdown", (event) => { anchor = event.clientX; canvas.setPointerCapture(event.pointerId); });
    canvas.addEventListener("pointermove", (event) => {
      if (anchor === null) return;
      const box = canvas.getBoundingClientRect();
      selection.style.display = "block";
      selection.style.left = `${Math.min(anchor, event.clientX) - box.left}px`;
      selection.style.width = `${Math.abs(event.clientX - anchor)}px`;
    });
    canvas.addEventListener("pointerup", (event) => {
      if (anchor === null) return;
      selection.style.display = "none";
      const [a, b] = [this.timeAt(canvas, anchor), this.timeAt(canvas, event.clientX)];
      if (Math.abs(event.clientX - anchor) > 4) this.zoom(Math.min(a, b), Math.max(a, b)); else this.player.seek(a);
      anchor = null;
    });
  }
  tick() {
    if (!this.element.isConnected) return;
    const position = this.player.position();
    this.$(".time").textContent = `${clock(position)} / ${clock(this.player.duration)}`;
    const share = (position - this.view.start_s) / (this.view.end_s - this.view.start_s);
    for (const head of this.element.querySelectorAll(".playhead")) {
      head.style.display = share >= 0 && share <= 1 ? "block" : "none";
      head.style.left = `${share * 100}%`;
    }
    requestAnimationFrame(() => this.tick());
  }
  async forget() {
    if (this.player) { this.player.pause(); this.player.context.close(); }
    this.element.remove();
    cards.all = cards.all.filter((card) => card !== this);
    if (cards.active === this) cards.active = cards.all.find((card) => card.player) || null;
    if (this.id) await fetch(`/api/files/${this.id}`, { method: "DELETE" }).catch(() => {});
  }
}

// Labels at the heights where the server's mel-spaced rows (40 Hz to 22.05 kHz) put these frequencies.
function addFrequencyTicks(canvas) {
  const mel = (hz) => 2595 * Math.log10(1 + hz / 700);
  for (const [hz, label] of [[250, "250 Hz"], [1000, "1 kHz"], [5000, "5 kHz"], [10000, "10 kHz"]]) {
    const tick = document.createElement("span");
    tick.className = "tick";
    tick.textContent = label;
    tick.style.bottom = `${100 * (mel(hz) - mel(40)) / (mel(22050) - mel(40))}%`;
    canvas.append(tick);
  }
}

// A copy of `buffer` with `part` written over it from `at_s` on.
function splice(context, buffer, part, atS) {
  const out = context.createBuffer(buffer.numberOfChannels, buffer.length, buffer.sampleRate);
  const first = Math.round(atS * buffer.sampleRate);
  for (let channel = 0; channel < buffer.numberOfChannels; channel++) {
    out.copyToChannel(buffer.getChannelData(channel), channel);
    out.copyToChannel(part.getChannelData(channel).subarray(0, Math.max(0, buffer.length - first)), channel, first);
  }
  return out;
}

function drawFloor(canvas, text, floor) {
  const g = canvas.getContext("2d");
  const [width, height] = [canvas.width, canvas.height];
  const [low, high, top, bottom] = [40, 22050, -20, -130];
  const x = (hz) => 40 + (width - 50) * Math.log(hz / low) / Math.log(high / low);
  const y = (db) => 10 + (height - 30) * (top - db) / (top - bottom);
  g.clearRect(0, 0, width, height);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#9aa3ad";
  g.strokeStyle = "#2c3139";
  for (const hz of [100, 1000, 10000]) {
    g.beginPath(); g.moveTo(x(hz), 10); g.lineTo(x(hz), height - 20); g.stroke();
    g.fillText(hz >= 1000 ? `${hz / 1000} kHz` : `${hz} Hz`, x(hz) - 14, height - 6);
  }
  for (const db of [-40, -70, -100, -130]) {
    g.beginPath(); g.moveTo(40, y(db)); g.lineTo(width - 10, y(db)); g.stroke();
    g.fillText(`${db}`, 8, y(db) + 4);
  }
  const band = floor.hiss_band_hz;
  g.fillStyle = "#ffffff0c";
  g.fillRect(x(band[0]), 10, x(band[1]) - x(band[0]), height - 30);
  for (const [key, colour] of [["before_db", "#f0a35e"], ["after_db", "#5ec4f0"]]) {
    g.strokeStyle = colour;
    g.lineWidth = 1.5;
    g.beginPath();
    floor.frequency_hz.forEach((hz, index) => {
      if (hz < low) return;
      const point = [x(hz), y(Math.max(bottom, floor[key][index]))];
      if (index && floor.frequency_hz[index - 1] >= low) g.lineTo(...point); else g.moveTo(...point);
    });
    g.stroke();
  }
  g.lineWidth = 1;
  text.innerHTML = "";
  const title = document.createElement("div");
  title.innerHTML = `<b>Noise floor</b> (the level each frequency stays above 90 % of the time). In the hiss band
    ${band[0] / 1000}–${band[1] / 1000} kHz:`;
  text.append(title);
  for (const [label, colour, value] of [["before", "#f0a35e", floor.hiss_before_db], ["after", "#5ec4f0", floor.hiss_after_db]]) {
    const row = document.createElement("div");
    row.innerHTML = `<span style="color:${colour}">■</span> ${label} <b></b>`;
    row.querySelector("b").textContent = `${value.toFixed(1)} dB`;
    text.append(row);
  }
  text.dataset.hissBefore = floor.hiss_before_db;
  text.dataset.hissAfter = floor.hiss_after_db;
}

const cards = { all: [], active: null };

function addFiles(files) {
  for (const file of files) {
    const card = new FileCard(file);
    cards.all.push(card);
    card.upload();
  }
}

function onKey(event) {
  if (event.target.matches("input[type=text], select") || event.ctrlKey || event.metaKey || event.altKey) return;
  const card = cards.active;
  if (!card || !card.player || card.element.dataset.state !== "done") return;
  const key = event.key.toLowerCase();
  const actions = {
    " ": () => card.togglePlay(),
    x: () => card.setMode(card.player.mode === "before" ? "after" : "before"),
    a: () => card.setMode("before"),
    b: () => card.setMode("after"),
    r: () => card.setMode("removed"),
    arrowleft: () => card.player.seek(card.player.position() - 5),
    arrowright: () => card.player.seek(card.player.position() + 5),
  };
  if (event.target.matches("input[type=range]") && key.startsWith("arrow")) return;
  // A focused button or box answers Space itself.
  if (event.target.matches("button, input[type=checkbox]") && key === " ") return;
  if (!actions[key]) return;
  event.preventDefault();
  actions[key]();
}

async function main() {
  api.config = await api.json("/api/config");
  document.getElementById("limit").textContent = `up to ${api.config.max_upload_mb} MB per file; ${api.config.workers} at a time`;
  const drop = document.getElementById("drop");
  const picker = document.getElementById("picker");
  picker.addEventListener("change", () => { addFiles([...picker.files]); picker.value = ""; });
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); addFiles([...event.dataTransfer.files]); });
  document.addEventListener("keydown", onKey);
  window.cassette = { cards };
}

main();
