/*
 * Timbre browser SDK: records the user's voice, runs the challenge flow and
 * hands the page a voice token for its backend to check (/verify-token).
 * Plain modern JavaScript, no build step:
 *
 *   <script src="https://voice.example.com/sdk/timbre.js"></script>
 *   const token = await myBackend.clientToken("verify");   // POST /v1/client-tokens
 *   const result = await Timbre.verify({
 *     token,
 *     onChallenge: (digits) => show(digits),               // may return a promise
 *     onLevel: (level) => meter.value = level,             // 0..1
 *   });
 *   if (result.voiceToken) await myBackend.login(result.voiceToken);
 *
 * A page holds a client token (one user, one scope, minutes), never an API
 * key. Failures reject with a TimbreError whose `code` is stable:
 * microphone_denied, microphone_unavailable, no_audio, network_error,
 * token_required, token_expired, unauthorized, rate_limited (retryAfterMs),
 * cooldown (retryAfterMs), profile_locked, not_enrolled, already_enrolled,
 * timeout (requestId), audio_blocked (not called from a user's click),
 * audio_unavailable, or the API's own error code. A page with a Content
 * Security Policy needs `script-src blob:` (the recorder's worklet) and
 * `connect-src` for the API's origin.
 */
(function (global) {
  "use strict";

  const TARGET_RATE = 16000;
  const DEFAULT_SECONDS = 5;
  const script = typeof document !== "undefined" ? document.currentScript : null;
  // The SDK talks to the server it was loaded from unless told otherwise.
  const DEFAULT_BASE =
    script && script.src ? new URL(script.src).origin : global.location ? global.location.origin : "";

  class TimbreError extends Error {
    constructor(code, message, details) {
      super(message);
      this.name = "TimbreError";
      this.code = code;
      if (details) Object.assign(this, details);
    }
  }

  // Runs on the audio rendering thread and hands blocks of samples to the
  // page; "flush" sends what is left, then null.
  const WORKLET = `
class TimbreCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(4096);
    this.filled = 0;
    this.port.onmessage = () => {
      if (this.filled > 0) this.port.postMessage(this.block.slice(0, this.filled));
      this.filled = 0;
      this.port.postMessage(null);
    };
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      let i = 0;
      while (i < channel.length) {
        const n = Math.min(channel.length - i, this.block.length - this.filled);
        this.block.set(channel.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block);
          this.block = new Float32Array(4096);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("timbre-capture", TimbreCapture);
`;

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function level(block) {
    let sum = 0;
    for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
    // RMS on a rough dB scale: -60 dBFS reads 0, full scale reads 1.
    const db = 10 * Math.log10(sum / Math.max(1, block.length) + 1e-12);
    return Math.min(1, Math.max(0, (db + 60) / 60));
  }

  async function openMicrophone() {
    if (!global.navigator || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new TimbreError(
        "microphone_unavailable",
        "this page cannot record audio (it needs https and a browser with a microphone)"
      );
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      if (e && (e.name === "NotAllowedError" || e.name === "SecurityError")) {
        throw new TimbreError("microphone_denied", "the microphone permission was denied");
      }
      throw new TimbreError("microphone_unavailable", "no microphone could be opened: " + (e && e.message));
    }
  }

  // Low-pass below the target's Nyquist frequency (a Blackman-windowed
  // sinc), then read at the target's instants by linear interpolation:
  // the filtered signal is smooth enough between its samples that the
  // interpolation adds no audible error, and nothing above 7.6 kHz folds
  // back into the speech band. (An offline render would interpolate
  // without filtering.)
  function resample(samples, from, to) {
    if (from === to || samples.length === 0) return samples;
    const taps = 127;
    const half = (taps - 1) / 2;
    const cutoff = (0.475 * Math.min(from, to)) / from; // cycles per input sample
    const kernel = new Float32Array(taps);
    let sum = 0;
    for (let i = 0; i < taps; i++) {
      const x = i - half;
      const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
      const window =
        0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
      kernel[i] = sinc * window;
      sum += kernel[i];
    }
    const filtered = new Float32Array(samples.length);
    for (let n = 0; n < samples.length; n++) {
      let acc = 0;
      const lo = Math.max(0, n - half);
      const hi = Math.min(samples.length - 1, n + half);
      for (let m = lo; m <= hi; m++) acc += samples[m] * kernel[m - n + half];
      filtered[n] = acc / sum;
    }
    const length = Math.floor((samples.length * to) / from);
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) {
      const at = (i * from) / to;
      const k = Math.floor(at);
      const frac = at - k;
      const next = k + 1 < filtered.length ? filtered[k + 1] : filtered[k];
      out[i] = filtered[k] * (1 - frac) + next * frac;
    }
    return out;
  }

  /** 16-bit PCM mono WAV of `samples` (floats in [-1, 1]). */
  function encodeWav(samples, rate) {
    const bytes = new ArrayBuffer(44 + samples.length * 2);
    const view = new DataView(bytes);
    const text = (offset, s) => {
      for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i));
    };
    text(0, "RIFF");
    view.setUint32(4, 36 + samples.length * 2, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, rate, true);
    view.setUint32(28, rate * 2, true);
    view.setUint16(32, 2, true);
    view.setUint16(34, 16, true);
    text(36, "data");
    view.setUint32(40, samples.length * 2, true);
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
    return new Blob([bytes], { type: "audio/wav" });
  }

  /**
   * Records `seconds` (default 5) of the microphone, or until `stop` (a
   * promise) settles, and resolves with a 16 kHz mono 16-bit WAV Blob.
   * `onLevel(0..1)` follows the input level.
   */
  async function record(options) {
    const opts = options || {};
    const seconds = opts.seconds || DEFAULT_SECONDS;
    // The audio graph is ready before the microphone opens, so the first
    // syllable is not lost while it is built.
    let context;
    try {
      context = new AudioContext();
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
      try {
        await context.audioWorklet.addModule(url);
      } finally {
        URL.revokeObjectURL(url);
      }
      if (context.state === "suspended") {
        // A browser lets audio start only after a user gesture: call the SDK
        // from a click, or this would wait for ever.
        const resumed = await Promise.race([context.resume().then(() => true), sleep(3000).then(() => false)]);
        if (!resumed || context.state !== "running") {
          throw new TimbreError("audio_blocked", "the browser did not start audio: call the SDK from a user's click");
        }
      }
    } catch (e) {
      if (context) context.close().catch(() => {});
      if (e instanceof TimbreError) throw e;
      throw new TimbreError("audio_unavailable", "audio recording is not available here: " + (e && e.message));
    }
    const rate = context.sampleRate;
    const chunks = [];
    let total = 0;
    const maxSamples = Math.ceil(seconds * rate);
    let stream;
    try {
      stream = await openMicrophone();
      const source = context.createMediaStreamSource(stream);
      const capture = new AudioWorkletNode(context, "timbre-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        channelCount: 1,
        channelCountMode: "explicit",
      });
      // A silent path to the output keeps the graph rendering.
      const mute = context.createGain();
      mute.gain.value = 0;
      source.connect(capture);
      capture.connect(mute);
      mute.connect(context.destination);
      await new Promise((resolve) => {
        let asked = false;
        const done = () => {
          capture.port.onmessage = null;
          resolve();
        };
        const finish = () => {
          if (asked) return;
          asked = true;
          capture.port.postMessage("flush");
          // Should the rendering thread be stalled, stop anyway.
          setTimeout(done, 1000);
        };
        capture.port.onmessage = (event) => {
          const block = event.data;
          if (block === null) return done();
          chunks.push(block);
          total += block.length;
          if (opts.onLevel) opts.onLevel(level(block));
          if (total >= maxSamples) finish();
        };
        if (opts.stop) Promise.resolve(opts.stop).then(finish, finish);
        setTimeout(finish, seconds * 1000 + 2000);
      });
      source.disconnect();
      capture.disconnect();
      mute.disconnect();
    } finally {
      if (stream) stream.getTracks().forEach((track) => track.stop());
      await context.close().catch(() => {});
    }
    const samples = new Float32Array(Math.min(total, maxSamples));
    let at = 0;
    for (const chunk of chunks) {
      const n = Math.min(chunk.length, samples.length - at);
      samples.set(chunk.subarray(0, n), at);
      at += n;
    }
    if (samples.length === 0) throw new TimbreError("no_audio", "the microphone delivered no audio");
    return encodeWav(resample(samples, rate, TARGET_RATE), TARGET_RATE);
  }

  function requireToken(options) {
    if (!options || !options.token) {
      throw new TimbreError("token_required", "a client token from your backend is required");
    }
  }

  async function call(options, path, init) {
    const base = (options.baseUrl || DEFAULT_BASE).replace(/\/+$/, "");
    const headers = Object.assign({ authorization: "Bearer " + options.token }, init.headers || {});
    let response;
    try {
      response = await fetch(base + path, {
        method: init.method || "POST",
        headers,
        body: init.body,
        credentials: "omit",
        mode: "cors",
      });
    } catch (e) {
      throw new TimbreError(
        "network_error",
        "the voice service could not be reached (network down, or this page's origin is not allowed)"
      );
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (response.ok) return { status: response.status, body: body || {} };
    const code = (body && body.error) || "http_" + response.status;
    const details = { status: response.status };
    if (body && body.retryAfterMs != null) details.retryAfterMs = body.retryAfterMs;
    const message = (body && body.message) || response.statusText || code;
    if (response.status === 401 && code !== "token_expired") {
      throw new TimbreError("unauthorized", message, details);
    }
    throw new TimbreError(code, message, details);
  }

  // A job answered 202 (still running) is polled until it is decided,
  // less often as it takes longer, and never faster than the rate limit
  // asks.
  async function settle(options, reply) {
    if (reply.status !== 202) return reply.body;
    const id = reply.body.request_id;
    const deadline = Date.now() + (options.pollTimeoutMs || 60000);
    let wait = 1000;
    while (Date.now() < deadline) {
      await sleep(wait);
      wait = Math.min(wait * 2, 4000);
      try {
        return (await call(options, "/v1/decisions/" + encodeURIComponent(id), { method: "GET" })).body;
      } catch (e) {
        if (e.code === "rate_limited") wait = Math.max(wait, e.retryAfterMs || 0);
        else if (e.code !== "decision_not_found") throw e;
      }
    }
    throw new TimbreError("timeout", "no decision arrived in time", { requestId: id });
  }

  function form(fields, wav, name) {
    const data = new FormData();
    for (const [k, v] of Object.entries(fields)) data.append(k, v);
    data.append("audio", wav, name);
    return data;
  }

  /**
   * Verifies the token's user: a challenge (digits to say), shown through
   * `onChallenge(digits)` (recording starts when its promise, if any,
   * settles), then a recording answered by the engine. Resolves with
   * `{decision, voiceToken?, signals, reason, requestId}`: `voiceToken` only
   * on accept; `reason` names why not (voice_mismatch, phrase_mismatch, ...).
   */
  async function verify(options) {
    requireToken(options);
    const started = await call(options, "/start-auth", {
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    const challenge = started.body.challenge;
    if (options.onChallenge) await options.onChallenge(challenge, { expiresAt: started.body.expiresAt });
    const wav = await record(options);
    const answered = await call(options, "/verify-voice", {
      body: form({ session_id: started.body.session_id }, wav, "answer.wav"),
    });
    const reply = answered.body;
    if (answered.status === 202) {
      // Decided too late for this answer to carry a voice token: the
      // challenge is spent, so the page starts a new one.
      throw new TimbreError("timeout", "the answer was not decided in time; try again", {
        requestId: reply.request_id,
      });
    }
    if (reply.decision === "cooldown" || reply.code === "cooldown") {
      throw new TimbreError("cooldown", reply.reason || "too many failed attempts", {
        retryAfterMs: reply.retryAfterMs,
      });
    }
    return {
      decision: reply.decision,
      voiceToken: reply.voiceToken || null,
      signals: reply.signals || null,
      reason: reply.success ? null : reply.code || null,
      message: reply.success ? null : reply.reason || null,
      requestId: reply.request_id,
      retryAfterMs: reply.retryAfterMs,
    };
  }

  /**
   * Enrolls the token's user (consent must already be granted by the
   * backend): records up to `maxSamples` (default 3) samples until the
   * profile is enrolled. `onSample(n)` runs before each recording (may
   * return a promise); `onProgress({sample, status, decision, reason,
   * enrollmentProgress, speechMillis})` after each answer. Resolves with
   * the last progress.
   */
  async function enroll(options) {
    requireToken(options);
    const maxSamples = options.maxSamples || 3;
    let progress = null;
    for (let sample = 1; sample <= maxSamples; sample++) {
      if (options.onSample) await options.onSample(sample);
      const wav = await record(options);
      const answer = await settle(options, await call(options, "/enroll", { body: form({}, wav, "sample.wav") }));
      progress = {
        sample,
        status: answer.status,
        decision: answer.decision,
        reason: answer.reason || null,
        enrollmentProgress: answer.enrollment_progress,
        speechMillis: answer.speech_millis,
      };
      if (options.onProgress) options.onProgress(progress);
      if (answer.status === "ENROLLED") return progress;
      if (answer.decision === "error" || answer.decision === "reject" || answer.decision === "cooldown") {
        throw new TimbreError(answer.reason || "enroll_failed", answer.message || "the sample was refused", {
          retryAfterMs: answer.retryAfterMs,
        });
      }
    }
    return progress;
  }

  global.Timbre = Object.freeze({ verify, enroll, record, encodeWav, TimbreError, version: "1" });
})(typeof window !== "undefined" ? window : globalThis);
