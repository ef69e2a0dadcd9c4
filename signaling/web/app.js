// A browser client of our signaling protocol (docs/protocol.md): one RTCPeerConnection per
// other member of the room (full mesh), video tiles, and chat on a data channel named "chat".
//
// The rules it follows, the same as `python -m peer`:
// - join with {room, name}; the acknowledgement lists who is there, and the newcomer offers
//   to each of them (messages carry `to`); members already there wait for offers. The
//   exception: a classic client offers as soon as it joins, and when that offer reached nobody
//   the server hands it to the newcomer in the acknowledgement (`offers`). The newcomer
//   answers it instead of offering: were it to offer, Chromium's implicit rollback of the
//   classic client's offer makes its answer refuse our data channel.
// - ICE candidates are trickled as `candidate` messages; received ones wait until the
//   remote description is set; a null or empty candidate means end of candidates.
// - `bye` (or `peer-left`) ends that member's call at once. So does an open chat channel
//   closing (classic clients have no bye); one that closes without ever opening, or that the
//   answer refuses (`m=application 0`), is a negotiation problem: the call goes on, video only.
// - Data channels: "chat" carries plain text lines. Our Python peer also opens "control"
//   and "files" when it offers. This page does not speak them, and it never opens or writes
//   to "control" on its own, so the peer treats it as a classic client (no heartbeat, whichever
//   side offers). It still answers {"type":"ping"} with {"type":"pong"}, honours
//   {"type":"bye"}, and refuses file transfers so a sender fails at once instead of waiting.
//
// ICE servers: those of the page URL, ?stun=stun:host:3478 and
// ?turn=turn:host:3478&turn-user=U&turn-password=P; without any, those the server's join
// acknowledgement hands out (`iceServers`, a server started with --turn-server), checked and
// bounded as the Python peer reads them (signaling/turn.py); else none (host candidates are
// enough on one network).
//
// As the Python peer's window: each remote tile shows the call's verification code (computed
// as docs/protocol.md states, from the certificates DTLS used), a statistics overlay toggled
// with s, and the keys m (mute), v (camera off and on), f (fullscreen), s, q or Esc (leave),
// none of which fires while typing in a text box. A link /?room=demo&name=ann joins at once.
"use strict";

(() => {
  const CONNECT_TIMEOUT_MS = 10000;  // a negotiation not connected by then is tried again
  const MAX_TRIES = 3;
  const ACK_TIMEOUT_MS = 10000;
  const MAX_PENDING_CANDIDATES = 100;  // kept for a remote description yet to come, as in peer/connection.py
  const MAX_EARLY = 64;  // messages from before we joined kept: the ack's offers, or ones before it
  const REFUSED_DATA = /^m=application 0 /m;  // an answer's data section with port 0: refused
  // What the server accepts in a join (signaling/protocol.py: ROOM_PATTERN, MAX_NAME_CHARS and
  // text.py's unprintable characters), so that a bad link is explained here, not refused there.
  const ROOM_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$/;
  const MAX_NAME_CHARS = 64;
  const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]/u;
  const CODE_LABEL = "pypeer verification code v1\n";  // docs/protocol.md, "Verification code"
  const CODE_TRIES = 5;  // DTLS is done when the connection is; its stats may lag a moment
  const STATS_EVERY_MS = 1000;
  const MAX_LOG_LINES = 1000;  // the log (and peerState.chat) keeps the newest: a flood of chat froze the page
  const OFF_FPS = 5;  // the "camera off" picture does not change: a few frames a second do
  const OFF_GREY = 24;  // its background, as the Python peer's (peer/media/sources.py)

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const iceServers = params.getAll("stun").map((urls) => ({ urls }))
    .concat(params.getAll("turn").map((urls) => ({
      urls, username: params.get("turn-user") || undefined, credential: params.get("turn-password") || undefined,
    })));
  let rtcConfig = { iceServers };
  // What the page takes of a join acknowledgement's iceServers (signaling/turn.py's bounds).
  const MAX_ICE_SERVERS = 8, MAX_ICE_URLS = 4, MAX_ICE_CHARS = 256;
  const ICE_URL = /^(stun|turns?):[A-Za-z0-9.\-]+(:\d{1,5})?(\?transport=(udp|tcp))?$/i;

  let socket = null;
  let me = null;              // {id, name, room} while in a room
  let localStream = null;
  const members = new Map();  // id -> name: everyone else in the room
  const remotes = new Map();  // id -> Remote: one call per member
  const chatLines = [];
  let early = null;           // messages that came before our join acknowledgement
  const errors = [];
  let micMuted = false;
  let cameraOff = false;
  let offPicture = null;      // the "camera off" track sent instead of the camera while it is off
  let statsTimer = null;      // set while the statistics overlay is shown
  let logFollows = null;      // this frame: whether the log scrolls to its newest line (null: not read yet)
  let soundWaiting = false;   // the others' sound is muted until the user clicks or presses a key

  // State for people who script the page (and for the tests).
  window.peerState = {
    get joined() { return me !== null; },
    get id() { return me && me.id; },
    get name() { return me && me.name; },
    get room() { return me && me.room; },
    get members() { return Array.from(members.values()); },
    get connected() { return Array.from(remotes.values()).filter((r) => r.connected).map((r) => r.name); },
    get chat() { return chatLines.slice(); },
    get errors() { return errors.slice(); },
    // The ICE servers calls use: their URLs and whether they carry credentials, never those.
    get iceServers() {
      return rtcConfig.iceServers.map((s) => ({ urls: [].concat(s.urls), credentials: s.credential !== undefined }));
    },
    get localTracks() { return localStream ? localStream.getTracks().map((t) => t.kind) : []; },
    get muted() { return micMuted; },
    get audioEnabled() { return localStream ? localStream.getAudioTracks().map((t) => t.enabled) : []; },
    get cameraOff() { return cameraOff; },
    get statsShown() { return statsTimer !== null; },
    get fullscreen() { return document.fullscreenElement !== null; },
    get soundMuted() { return Array.from(remotes.values()).filter((r) => r.video.muted).map((r) => r.name); },
    // {name: "DDDDD DDDDD DDDDD DDDDD DDDDD"}, or null where there is no code (yet).
    get codes() { return Object.fromEntries(Array.from(remotes.values(), (r) => [r.name, r.code])); },
    // {name: the overlay's text}, filled while the overlay is shown.
    get stats() { return Object.fromEntries(Array.from(remotes.values(), (r) => [r.name, r.statsBox.textContent])); },
    get video() {
      const out = {};
      for (const r of remotes.values()) {
        const v = r.video;
        const quality = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
        out[r.name] = {
          id: r.id, connected: r.connected, width: v.videoWidth, height: v.videoHeight,
          decoded: quality ? quality.totalVideoFrames : 0, presented: r.presented,
        };
      }
      return out;
    },
    // The addresses each call's media flows between: {name: {local: "ip:port", remote: "ip:port"}}.
    async paths() {
      const out = {};
      for (const r of remotes.values()) {
        const stats = await r.pc.getStats();
        for (const report of stats.values()) {
          if (report.type !== "transport" || !report.selectedCandidatePairId) continue;
          const pair = stats.get(report.selectedCandidatePairId);
          const local = pair && stats.get(pair.localCandidateId);
          const remote = pair && stats.get(pair.remoteCandidateId);
          if (local && remote) out[r.name] = { local: `${local.address}:${local.port}`, remote: `${remote.address}:${remote.port}` };
        }
      }
      return out;
    },
  };

  // Page

  function log(text, kind) {
    const line = document.createElement("div");
    if (kind) line.className = kind;
    line.textContent = text;
    const box = $("log");
    if (logFollows === null) {
      // Whether the reader is at the bottom, read once a frame and scrolled there once a frame:
      // measured for each line, a flood of chat laid the log out thousands of times a second.
      logFollows = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      requestAnimationFrame(() => {
        if (logFollows) box.scrollTop = box.scrollHeight;
        logFollows = null;
      });
    }
    box.appendChild(line);
    while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  }

  function status(text) { $("status").textContent = text; }

  function showError(text) {
    errors.push(text);
    $("error").textContent = text;
  }

  function clearError() { $("error").textContent = ""; }

  function describe(payload) {
    if (payload && typeof payload === "object") return payload.error || payload.code || JSON.stringify(payload);
    return String(payload);
  }

  function setJoined(joined) {
    $("join").disabled = joined;
    $("leave").disabled = !joined;
    $("room").disabled = joined;
    $("name").disabled = joined;
    $("chat-input").disabled = !joined;
    $("send").disabled = !joined;
    $("hint").hidden = !joined;
  }

  // The server's rules for a join, checked before asking it: null when fine, else what is wrong.
  function joinProblem(room, name) {
    if (!ROOM_PATTERN.test(room)) return "room name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit";
    if (Array.from(name).length > MAX_NAME_CHARS) return `name must be at most ${MAX_NAME_CHARS} characters`;
    if (UNPRINTABLE.test(name)) return "name must not contain control characters, bidi controls or line separators";
    return null;
  }

  // ICE servers the browser refuses (?stun= that is no URL, ?turn= without user and password)
  // would make every call of the room fail as it starts: null when fine, else what is wrong.
  function iceProblem() {
    try {
      new RTCPeerConnection(rtcConfig).close();
      return null;
    } catch (error) {
      return `the ICE servers of the link are refused: ${error.message.replace(/^Failed to construct '\w+': /, "")}`;
    }
  }

  // Join from the form or a link (`where`, " from this link", says so in the message); bad values
  // leave the form shown.
  function requestJoin(room, name, where) {
    const problem = joinProblem(room, name) || iceProblem();
    if (problem) {
      showError(`cannot join${where}: ${problem}`);
      return;
    }
    join(room, name);
  }

  function updateStatus() {
    if (!me) return;
    const names = Array.from(remotes.values()).map((r) => r.name + (r.connected ? "" : " (connecting)"));
    status(`In room ${me.room} as ${me.name}. ` + (names.length ? `In a call with ${names.join(", ")}.` : "Waiting for others to join."));
  }

  // Local media: camera and microphone, else camera only, else microphone only, else nothing
  // (still useful: watch and chat).

  async function openLocalMedia() {
    if (localStream) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      log("camera unavailable: browsers allow it only on https:// or http://localhost pages; joining to watch and chat", "info");
      localStream = new MediaStream();
      return;
    }
    let lastError = null;
    for (const constraints of [{ video: true, audio: true }, { video: true }, { audio: true }]) {
      try {
        localStream = await navigator.mediaDevices.getUserMedia(constraints);
        break;
      } catch (error) {
        lastError = error;
      }
    }
    if (!localStream) {
      log(`no camera or microphone (${lastError && lastError.name}); joining to watch and chat`, "info");
      localStream = new MediaStream();
    }
    // A video of a stream without tracks never has a picture, and delays the page's load event for good.
    if (localStream.getVideoTracks().length) $("local-video").srcObject = localStream;
  }

  function closeLocalMedia() {
    if (!localStream) return;
    if (offPicture) offPicture.stop();
    offPicture = null;
    micMuted = cameraOff = false;
    localStream.getTracks().forEach((t) => t.stop());
    localStream = null;
    $("local-video").srcObject = null;
    showSwitches();
  }

  // The video we send: the camera, or the "camera off" picture while it is off.
  function sentVideo() {
    return cameraOff ? offPicture.track : (localStream && localStream.getVideoTracks()[0]) || null;
  }

  // m: the microphone's track is disabled, which sends silence; the calls stay as they are.
  function toggleMute() {
    const tracks = localStream ? localStream.getAudioTracks() : [];
    if (!tracks.length) {
      log("no microphone to mute", "info");
      return;
    }
    micMuted = !micMuted;
    tracks.forEach((t) => { t.enabled = !micMuted; });
    log(micMuted ? "microphone muted: the others hear silence" : "microphone on", "info");
    showSwitches();
  }

  // v: every call is sent the "camera off" picture instead of the camera (replaceTrack needs no
  // new negotiation), and back. The camera's track is disabled meanwhile.
  function toggleCamera() {
    const camera = localStream && localStream.getVideoTracks()[0];
    if (!camera) {
      log("no camera to turn off", "info");
      return;
    }
    cameraOff = !cameraOff;
    camera.enabled = !cameraOff;
    if (cameraOff) {
      offPicture = cameraOffPicture(camera.getSettings());
    } else {
      offPicture.stop();
      offPicture = null;
    }
    for (const remote of remotes.values()) remote.sendVideo(sentVideo());
    $("local-video").srcObject = cameraOff ? new MediaStream([offPicture.track]) : localStream;
    log(cameraOff ? "camera off: the others see a 'camera off' picture" : "camera on", "info");
    showSwitches();
  }

  // A dark picture saying "camera off", at the camera's size, as the Python peer sends.
  function cameraOffPicture({ width = 640, height = 480 }) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const draw = () => {
      context.fillStyle = `rgb(${OFF_GREY}, ${OFF_GREY}, ${OFF_GREY})`;
      context.fillRect(0, 0, width, height);
      context.fillStyle = "rgb(200, 200, 200)";
      context.font = `${Math.max(10, Math.round(width / 16))}px sans-serif`;
      context.textAlign = "center";
      context.textBaseline = "middle";
      context.fillText("camera off", width / 2, height / 2);
    };
    draw();
    const track = canvas.captureStream(OFF_FPS).getVideoTracks()[0];
    track.contentHint = "text";  // keep its size when bandwidth or CPU is short: lower the rate instead
    const timer = setInterval(draw, 1000 / OFF_FPS);  // a canvas track has a frame only when painted
    return { track, stop() { clearInterval(timer); track.stop(); } };
  }

  function showSwitches() {
    const off = [micMuted && "muted", cameraOff && "camera off"].filter(Boolean);
    $("local-label").textContent = off.length ? `you (${off.join(", ")})` : "you";
    $("local").classList.toggle("camera-off", cameraOff);
  }

  // The browser started the others' sound muted: say so once, unmute at the first click or key.
  function soundWaitsForTheUser() {
    if (soundWaiting) return;
    soundWaiting = true;
    log("click or press a key in the page to hear the others (the browser starts the sound muted)", "info");
    const unmute = () => {
      soundWaiting = false;
      for (const event of ["pointerdown", "keydown"]) document.removeEventListener(event, unmute, true);
      for (const remote of remotes.values()) {
        remote.video.muted = false;
        remote.video.play().catch(() => {});
      }
    };
    for (const event of ["pointerdown", "keydown"]) document.addEventListener(event, unmute, true);
  }

  // f: the tiles and the hint fill the screen, and back (Esc also leaves fullscreen).
  function toggleFullscreen() {
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
      return;
    }
    $("call").requestFullscreen().catch((error) => log(`fullscreen refused: ${error.message}`, "info"));
  }

  // s: each remote tile's statistics overlay, refreshed once a second while shown.
  function toggleStats() {
    const show = statsTimer === null;
    clearInterval(statsTimer);
    statsTimer = show ? setInterval(refreshStats, STATS_EVERY_MS) : null;
    document.body.classList.toggle("stats-on", show);
    if (show) refreshStats();
  }

  function refreshStats() {
    for (const remote of remotes.values()) remote.refreshStats();
  }

  // Signaling

  function connectSocket() {
    if (socket) return;
    socket = io({ transports: ["websocket", "polling"], tryAllTransports: true });
    socket.on("connect_error", (error) => {
      if (!socket.active) showError(`cannot reach the signaling server: ${error.message}`);
      else status(`cannot reach the signaling server (${error.message}); retrying`);
    });
    socket.on("disconnect", (reason) => {
      if (!me) return;
      status("lost the signaling server; reconnecting");
      log("lost the signaling server; reconnecting", "info");
    });
    socket.io.on("reconnect", () => {
      // The server forgot us: join again. Calls are renegotiated from scratch, since our
      // new id is unknown to the others.
      if (me) rejoin();
    });
    socket.on("error", (payload) => {
      if (payload && payload.event === "message" && payload.code === "unknown-target") {
        // A late candidate or bye for someone who just left: expected, nothing to show.
        console.debug("server:", describe(payload));
        return;
      }
      showError(`server: ${describe(payload)}`);
    });
    socket.on("peer-joined", (member) => {
      if (!me || !member || member.id === me.id) return;
      members.set(member.id, member.name);
      log(`${member.name} joined`, "info");  // it offers to us; we wait
    });
    socket.on("peer-left", (member) => {
      if (!me || !member || member.id === me.id) return;
      members.delete(member.id);
      const remote = remotes.get(member.id);
      if (remote) remote.close("left");
      log(`${member.name} left`, "info");
    });
    socket.on("message", onMessage);
  }

  function signal(message) {
    if (socket && socket.connected) socket.emit("message", message);
  }

  async function join(room, name) {
    clearError();
    $("join").disabled = true;
    await openLocalMedia();
    connectSocket();
    const ack = await askToJoin(room, name);
    if (ack === null) {
      showError("the signaling server did not answer the join");
      $("join").disabled = false;
      return;
    }
    if (!ack || !ack.ok) {
      showError(`could not join: ${describe(ack)}`);
      $("join").disabled = false;
      return;
    }
    enterRoom(ack);
  }

  // The join acknowledgement, or null without one in time. Messages that come before it (the
  // candidates of an offer the acknowledgement carries can) wait in `early` for enterRoom.
  async function askToJoin(room, name) {
    early = [];
    let ack = null;
    try {
      ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("join", { room, name });
    } catch (error) {
      // no answer in time
    }
    if (!ack || !ack.ok) early = null;
    return ack;
  }

  function enterRoom(ack) {
    const before = early || [];
    early = null;
    me = { id: ack.id, name: ack.name, room: ack.room };
    if (!iceServers.length) rtcConfig = { iceServers: offeredIceServers(ack.iceServers) };
    members.clear();
    setJoined(true);
    log(`joined room ${me.room} as ${me.name}`, "info");
    for (const member of ack.members || []) members.set(member.id, member.name);
    // Members whose offer we have are answered; the newcomer offers to the others.
    for (const message of storedOffers(ack.offers).concat(before)) onMessage(message);
    for (const [id, name] of members) {
      if (!remotes.has(id)) callFor(id, name).start();
    }
    updateStatus();
  }

  // The offers (each followed by its candidates) that members sent before we joined, as the
  // server kept them: only those of listed members, a candidate only after its member's offer.
  function storedOffers(offers) {
    if (offers === undefined) return [];  // a server without the feature
    if (!Array.isArray(offers)) {
      console.warn("ignored the join acknowledgement's offers: not a list");
      return [];
    }
    const offered = new Set();
    const kept = offers.slice(0, MAX_EARLY).filter((message) => {
      if (!message || typeof message !== "object" || !members.has(message.from)) return false;
      if (message.type === "offer" && typeof message.sdp === "string" && !offered.has(message.from)) {
        offered.add(message.from);
        return true;
      }
      return message.type === "candidate" && offered.has(message.from);
    });
    if (kept.length < offers.length) console.warn(`ignored ${offers.length - kept.length} of the join acknowledgement's offers`);
    return kept;
  }

  // The STUN and TURN servers a join acknowledgement hands out (fresh credentials each join),
  // as the page may use them: at most MAX_ICE_SERVERS, each with at most MAX_ICE_URLS URLs of
  // the shapes the Python peer takes, strings bounded; a server that breaks a rule is dropped,
  // and a list the browser refuses is not used at all (it would fail every call).
  function offeredIceServers(offered) {
    if (offered === undefined) return [];
    const text = (value) => value === undefined || (typeof value === "string" && value.length <= MAX_ICE_CHARS);
    const list = Array.isArray(offered) ? offered.slice(0, MAX_ICE_SERVERS) : [];
    const kept = list.filter((server) => {
      if (!server || typeof server !== "object") return false;
      const urls = typeof server.urls === "string" ? [server.urls] : server.urls;
      return Array.isArray(urls) && urls.length > 0 && urls.length <= MAX_ICE_URLS &&
        urls.every((url) => typeof url === "string" && url.length <= MAX_ICE_CHARS && ICE_URL.test(url)) &&
        text(server.username) && text(server.credential);
    }).map((server) => ({ urls: server.urls, username: server.username, credential: server.credential }));
    if (!Array.isArray(offered) || kept.length < offered.length) {
      console.warn("ignored some of the server's ICE servers");
    }
    try {
      new RTCPeerConnection({ iceServers: kept }).close();
    } catch (error) {
      console.warn(`ignored the server's ICE servers: ${error.message}`);
      return [];
    }
    return kept;
  }

  async function rejoin() {
    const room = me.room, name = me.name;
    for (const remote of Array.from(remotes.values())) remote.close("reconnecting");
    const ack = await askToJoin(room, name);
    if (!ack || !ack.ok) {
      showError(`could not join room ${room} again: ${ack ? describe(ack) : "no answer"}`);
      leaveRoom();
      return;
    }
    enterRoom(ack);
  }

  function leave() {
    if (!me) return;
    for (const remote of Array.from(remotes.values())) {
      signal({ type: "bye", to: remote.id });
      remote.close("hung up");
    }
    if (socket && socket.connected) socket.emit("leave", {}, () => {});
    log(`left room ${me.room}`, "info");
    leaveRoom();
  }

  function leaveRoom() {
    for (const remote of Array.from(remotes.values())) remote.close("left the room");
    me = null;
    members.clear();
    closeLocalMedia();
    if (statsTimer !== null) toggleStats();  // its polling ends with the calls; no key works outside a room
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    setJoined(false);
    status("Not in a room.");
  }

  function onMessage(message) {
    if (early) {
      if (early.length < MAX_EARLY) early.push(message);
      return;
    }
    if (!me || !message || typeof message !== "object" || typeof message.from !== "string") return;
    let remote = remotes.get(message.from);
    if (!remote) {
      if (message.type !== "offer") return;  // a late candidate or bye of a call already over
      remote = callFor(message.from, message.name || members.get(message.from) || "guest");
    }
    remote.handle(message);
  }

  function callFor(id, name) {
    let remote = remotes.get(id);
    if (!remote) {
      remote = new Remote(id, name);
      remotes.set(id, remote);
    }
    return remote;
  }

  // One call

  class Remote {
    constructor(id, name) {
      this.id = id;
      this.name = name;
      this.closed = false;
      this.tries = 0;
      this.presented = 0;
      this.backlog = [];
      this.queue = Promise.resolve();  // messages are handled one at a time, in order
      this.stream = new MediaStream();
      this.tile = document.createElement("div");
      this.tile.className = "tile remote connecting";
      this.tile.dataset.id = id;
      this.tile.dataset.name = name;
      this.video = document.createElement("video");
      this.video.autoplay = true;
      this.video.playsInline = true;
      this.video.srcObject = this.stream;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = name;
      this.codeBox = document.createElement("span");
      this.codeBox.className = "code";
      this.codeBox.title = "verification code: the same on both sides means nobody is in the middle";
      this.statsBox = document.createElement("pre");
      this.statsBox.className = "stats";
      this.tile.append(this.video, label, this.codeBox, this.statsBox);
      $("videos").appendChild(this.tile);
      this.countFrames();
      this.newConnection();
    }

    start() { this.enqueue(() => this.offer()); }

    handle(message) { this.enqueue(() => this.dispatch(message)); }

    enqueue(task) {
      this.queue = this.queue.then(() => (this.closed ? null : task())).catch((error) => {
        console.warn(`call with ${this.name}:`, error);
        log(`problem in the call with ${this.name}: ${error.message || error}`, "info");
      });
    }

    async dispatch(message) {
      switch (message.type) {
        case "offer":
          return this.answer(message.sdp);
        case "answer":
          if (this.pc.signalingState !== "have-local-offer") return;
          await this.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
          if (REFUSED_DATA.test(message.sdp)) this.refuseChat();
          return this.flushCandidates();
        case "candidate":
          if (this.pending.length >= MAX_PENDING_CANDIDATES) return this.dropCandidates();
          this.pending.push(message.candidate);
          if (this.pc.remoteDescription) await this.flushCandidates();
          return;
        case "bye":
          return this.close("left");
      }
    }

    newConnection() {
      if (this.pc) this.pc.close();
      const pc = this.pc = new RTCPeerConnection(rtcConfig);
      this.connected = false;
      this.code = null;
      this.codeBox.textContent = "";
      this.sample = null;  // the last statistics read, for rates
      this.statsBox.textContent = "";
      this.chat = null;
      this.chatRefused = false;
      this.channels = [];  // keep every channel referenced while the call lasts
      this.pending = [];   // candidates for this connection's remote description
      this.dropping = false;
      for (const track of this.stream.getTracks()) this.stream.removeTrack(track);
      pc.onicecandidate = (event) => {
        if (pc === this.pc) signal({ type: "candidate", candidate: event.candidate ? event.candidate.toJSON() : null, to: this.id });
      };
      pc.ontrack = (event) => {
        if (pc !== this.pc) return;
        for (const old of this.stream.getTracks()) {
          if (old.kind === event.track.kind) this.stream.removeTrack(old);
        }
        this.stream.addTrack(event.track);
        this.play();
      };
      pc.ondatachannel = (event) => { if (pc === this.pc) this.adopt(event.channel); };
      pc.onconnectionstatechange = () => {
        if (pc !== this.pc || this.closed) return;
        if (pc.connectionState === "connected" && !this.connected) {
          this.connected = true;
          this.tries = 0;
          this.tile.classList.remove("connecting");
          log(`connected to ${this.name}`, "info");
          updateStatus();
          this.showCode(pc);
          if (statsTimer !== null) this.refreshStats();
        } else if (pc.connectionState === "failed") {
          this.lost("connection failed");
        }
      };
      return pc;
    }

    addLocalTracks(pc, answering) {
      for (const kind of ["audio", "video"]) {
        const track = kind === "video" ? sentVideo() : (localStream && localStream.getAudioTracks()[0]);
        if (answering) {
          // addTrack reuses the transceiver the offer created for this kind; add nothing
          // the offer did not ask for (that would need another round of negotiation).
          const offered = pc.getTransceivers().some((t) => t.mid !== null && t.receiver.track.kind === kind && !t.sender.track);
          if (track && offered) pc.addTrack(track, localStream);
        } else if (track) {
          pc.addTrack(track, localStream);
        } else {
          pc.addTransceiver(kind, { direction: "recvonly" });
        }
      }
    }

    async offer() {
      if (this.pc.signalingState !== "stable" || this.pc.remoteDescription) this.newConnection();
      const pc = this.pc;
      this.adopt(pc.createDataChannel("chat"));
      this.addLocalTracks(pc, false);
      await pc.setLocalDescription();
      signal({ type: "offer", sdp: pc.localDescription.sdp, to: this.id });
      this.watch(pc);
    }

    async answer(sdp) {
      if (this.pc.signalingState !== "stable" || this.pc.remoteDescription) {
        // A new offer from someone we already had a call with (it restarted, or retries
        // after a failure): answer on a fresh connection, as our Python peer does.
        this.newConnection();
      }
      const pc = this.pc;
      await pc.setRemoteDescription({ type: "offer", sdp });
      this.addLocalTracks(pc, true);
      await this.flushCandidates();
      await pc.setLocalDescription();
      signal({ type: "answer", sdp: pc.localDescription.sdp, to: this.id });
      this.watch(pc);
    }

    // A member that sends candidates instead of its description: the page keeps a few, not all.
    dropCandidates() {
      if (this.dropping) return;
      this.dropping = true;
      log(`${this.name} sent more than ${MAX_PENDING_CANDIDATES} candidates before its description; the others are dropped`, "info");
    }

    async flushCandidates() {
      const pending = this.pending;
      this.pending = [];
      for (const candidate of pending) {
        try {
          if (candidate && candidate.candidate) await this.pc.addIceCandidate(candidate);
          else await this.pc.addIceCandidate();  // end of candidates
        } catch (error) {
          console.warn(`ignored a candidate from ${this.name}:`, error);
        }
      }
    }

    watch(pc) {
      setTimeout(() => {
        if (pc === this.pc && !this.connected && !this.closed) this.lost(`not connected after ${CONNECT_TIMEOUT_MS / 1000} s`);
      }, CONNECT_TIMEOUT_MS);
    }

    // The path died while the member may still be in the room: as in our Python peer, the
    // member with the smaller id offers on a fresh connection, the other waits for it.
    lost(reason) {
      if (this.closed) return;
      if (!me || !members.has(this.id) || this.tries >= MAX_TRIES) {
        this.close(reason);
        return;
      }
      this.tries += 1;
      this.connected = false;
      this.tile.classList.add("connecting");
      log(`connection to ${this.name} lost (${reason}); trying again (${this.tries} of ${MAX_TRIES})`, "info");
      if (me.id < this.id) this.enqueue(() => this.offer());
      else this.watch(this.pc);
    }

    adopt(channel) {
      this.channels.push(channel);
      if (channel.label === "chat") {
        this.chat = channel;
        const pc = this.pc;
        let opened = channel.readyState === "open";
        channel.onopen = () => {
          opened = true;
          this.flushChat();
        };
        channel.onmessage = (event) => this.onChat(event.data);
        channel.onclose = () => {
          if (channel !== this.chat || this.closed) return;
          // Classic clients have no bye: their chat channel closing is how they hang up. One
          // that never opened was refused or lost in negotiation: the video may well flow. It
          // closes while the answer is being applied: say why once that is done.
          if (opened) this.close("left");
          else this.enqueue(() => { if (pc === this.pc) this.refuseChat(); });
        };
        if (channel.readyState === "open") this.flushChat();
      } else if (channel.label === "control") {
        // Only well-formed messages of ours count; a classic peer's greeting here is ignored.
        channel.onmessage = (event) => {
          if (typeof event.data !== "string") return;
          let value;
          try { value = JSON.parse(event.data); } catch (error) { return; }
          if (value && value.type === "ping" && channel.readyState === "open") channel.send(JSON.stringify({ type: "pong" }));
          else if (value && value.type === "bye") this.close("left");
        };
      } else if (channel.label === "files") {
        channel.onmessage = (event) => {
          if (typeof event.data !== "string") return;
          let value;
          try { value = JSON.parse(event.data); } catch (error) { return; }
          if (value && value.type === "start" && channel.readyState === "open") {
            channel.send(JSON.stringify({ type: "failed", reason: "this browser page does not accept files" }));
          }
        };
      }
    }

    onChat(data) {
      const text = typeof data === "string" ? data : new TextDecoder().decode(data);
      chatLines.push({ from: this.name, text });
      if (chatLines.length > MAX_LOG_LINES) chatLines.shift();
      log(`[${this.name}] ${text}`);
    }

    // Our chat channel will not open: the answer refused it (Chromium does so after rolling
    // back an offer of its own), or it closed unopened. Say it once; the call goes on.
    refuseChat() {
      if (this.chatRefused) return;
      this.chatRefused = true;
      const sdp = this.pc.remoteDescription ? this.pc.remoteDescription.sdp : "";
      const what = REFUSED_DATA.test(sdp) ? "'s browser refused the chat channel" : "'s chat channel closed before it opened";
      const lost = this.backlog.length ? ` (${this.backlog.length} message(s) not sent)` : "";
      this.backlog = [];
      log(`${this.name}${what}; video only${lost}`, "info");
    }

    sendChat(text) {
      if (this.closed || this.chatRefused) return false;
      if (this.chat && this.chat.readyState === "open") this.chat.send(text);
      else this.backlog.push(text);
      return true;
    }

    flushChat() {
      const backlog = this.backlog;
      this.backlog = [];
      for (const text of backlog) this.chat.send(text);
    }

    // The camera or the "camera off" picture, on this call's video sender if it has one.
    sendVideo(track) {
      const sender = this.pc.getSenders().find((s) => s.track && s.track.kind === "video");
      if (sender) sender.replaceTrack(track).catch((error) => console.warn(`video to ${this.name}:`, error));
    }

    // The code of this connection on the tile and in the log, once DTLS has given it; nothing
    // where it cannot be computed (never a code from anything but the certificates used).
    async showCode(pc) {
      let code = null, problem = "the browser did not give both certificates";
      for (let tries = 0; code === null && tries < CODE_TRIES && pc === this.pc && !this.closed; tries++) {
        if (tries) await new Promise((resolve) => setTimeout(resolve, 200 * tries));
        try {
          code = await verificationCode(pc);
        } catch (error) {
          problem = error.message;
          break;
        }
      }
      if (pc !== this.pc || this.closed) return;
      if (code === null) {
        log(`no verification code for the call with ${this.name}: ${problem}`, "info");
        return;
      }
      this.code = code;
      this.codeBox.textContent = code;
      log(`verification code with ${this.name}: ${code} (the same on both sides means nobody is in the middle)`, "info");
    }

    async refreshStats() {
      if (this.readingStats) return;
      this.readingStats = true;
      const pc = this.pc;
      try {
        const sample = readStats(await pc.getStats(), performance.now());
        if (pc !== this.pc || this.closed || statsTimer === null) return;
        this.statsBox.textContent = describeStats(sample, this.sample);
        this.sample = sample;
      } catch (error) {
        console.debug(`statistics of the call with ${this.name}:`, error);
      } finally {
        this.readingStats = false;
      }
    }

    play() {
      this.video.play().catch(() => {
        // Autoplay with sound needs a click or key on the page first (a link joins without
        // one): start muted rather than not at all, and give the sound at the first.
        this.video.muted = true;
        this.video.play().catch(() => {});
        soundWaitsForTheUser();
      });
    }

    countFrames() {
      if (!this.video.requestVideoFrameCallback) return;
      const tick = () => {
        if (this.closed) return;
        this.presented += 1;
        this.video.requestVideoFrameCallback(tick);
      };
      this.video.requestVideoFrameCallback(tick);
    }

    close(reason) {
      if (this.closed) return;
      this.closed = true;
      this.pc.close();
      this.video.srcObject = null;
      this.tile.remove();
      if (remotes.get(this.id) === this) remotes.delete(this.id);
      log(`call with ${this.name} ended (${reason})`, "info");
      updateStatus();
    }
  }

  // Verification code (docs/protocol.md): SHA-256 of the label and the sorted SHA-256 digests
  // of our certificate and theirs, each in DER, as the DTLS transports used them. Ours is the
  // transport's local certificate in getStats(); theirs what getRemoteCertificates() gives of
  // the handshake (its first, the one the peer proved to hold). Null while either is missing.
  // Exactly one certificate each, on every transport: without BUNDLE a relay could sit on some
  // transports only, with one certificate of its own facing both sides, and a code over every
  // certificate would then be the same on both sides.

  async function verificationCode(pc) {
    if (!window.crypto || !crypto.subtle) {
      throw new Error("browsers compute SHA-256 only on https:// or http://localhost pages");
    }
    const ours = [], theirs = [];
    const stats = await pc.getStats();
    for (const report of stats.values()) {
      if (report.type !== "transport" || report.dtlsState !== "connected") continue;
      const certificate = stats.get(report.localCertificateId);
      if (certificate && certificate.base64Certificate) ours.push(fromBase64(certificate.base64Certificate));
    }
    for (const transport of dtlsTransports(pc)) {
      if (transport.state !== "connected") continue;
      const [leaf] = transport.getRemoteCertificates();
      if (leaf) theirs.push(new Uint8Array(leaf));
    }
    if (!ours.length || !theirs.length) return null;
    const [mine, others] = await Promise.all([ours, theirs].map(hexDigests));
    if (others.size > 1) throw new Error("the other side proved different certificates on its transports");
    if (mine.size > 1) throw new Error("this browser used different certificates on its transports");
    const [our] = mine, [their] = others;
    if (our === their) throw new Error("the other side presented our own certificate");
    const sorted = [our, their].sort().map(fromHex);  // hex of equal length sorts as the bytes do
    const label = new TextEncoder().encode(CODE_LABEL);
    const hash = await sha256(concatBytes([label, ...sorted]));
    let number = 0n;
    for (const byte of hash.slice(0, 16)) number = number * 256n + BigInt(byte);
    const digits = (number % 10n ** 25n).toString().padStart(25, "0");
    return digits.match(/\d{5}/g).join(" ");
  }

  async function hexDigests(certificates) {
    return new Set(await Promise.all(certificates.map(async (der) => toHex(await sha256(der)))));
  }

  function dtlsTransports(pc) {
    const transports = new Set();
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.sender.transport) transports.add(transceiver.sender.transport);
      if (transceiver.receiver.transport) transports.add(transceiver.receiver.transport);
    }
    if (pc.sctp) transports.add(pc.sctp.transport);
    return transports;
  }

  async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }
  function fromBase64(text) { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); }
  function toHex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); }
  function fromHex(text) { return Uint8Array.from(text.match(/../g), (h) => parseInt(h, 16)); }

  function concatBytes(parts) {
    const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  // Statistics: what the overlay shows of one call, from one getStats() report. Codec names
  // come from the other side's SDP: shown as text only, and cut short.

  function readStats(stats, at) {
    const sample = { at, bytesIn: 0, bytesOut: 0, received: 0, lost: 0, videoIn: null, videoOut: null,
                     lossOut: null, rtt: null, path: null };
    for (const report of stats.values()) {
      if (report.type === "inbound-rtp") {
        sample.bytesIn += report.bytesReceived || 0;
        sample.received += report.packetsReceived || 0;
        sample.lost += Math.max(0, report.packetsLost || 0);
        if (report.kind === "video") sample.videoIn = videoOf(stats, report);
      } else if (report.type === "outbound-rtp") {
        sample.bytesOut += report.bytesSent || 0;
        if (report.kind === "video") sample.videoOut = videoOf(stats, report);
      } else if (report.type === "remote-inbound-rtp" && typeof report.fractionLost === "number") {
        sample.lossOut = Math.max(sample.lossOut || 0, report.fractionLost);
      } else if (report.type === "transport" && report.selectedCandidatePairId) {
        const pair = stats.get(report.selectedCandidatePairId);
        const local = pair && stats.get(pair.localCandidateId);
        const remote = pair && stats.get(pair.remoteCandidateId);
        if (pair && typeof pair.currentRoundTripTime === "number") sample.rtt = pair.currentRoundTripTime;
        if (local && remote) sample.path = pathOf(local.candidateType, remote.candidateType);
      }
    }
    return sample;
  }

  function videoOf(stats, report) {
    const codec = report.codecId && stats.get(report.codecId);
    const name = codec && typeof codec.mimeType === "string" ? codec.mimeType.replace(/^video\//i, "").slice(0, 16) : "?";
    const size = report.frameWidth ? `${report.frameWidth}x${report.frameHeight}` : "no picture yet";
    const fps = typeof report.framesPerSecond === "number" ? `${Math.round(report.framesPerSecond)} fps` : "- fps";
    return `${size} ${fps} ${name}`;
  }

  // Direct, through NAT (an address a STUN server or the other side saw), or relayed by TURN.
  function pathOf(local, remote) {
    const types = [local, remote];
    const how = types.includes("relay") ? "relayed" : types.some((t) => t === "srflx" || t === "prflx") ? "through NAT" : "direct";
    return `${how} (${String(local).slice(0, 8)}/${String(remote).slice(0, 8)})`;
  }

  function describeStats(now, before) {
    const seconds = before ? (now.at - before.at) / 1000 : 0;
    const rate = (bytes, old) => (seconds > 0 ? bitrate(((bytes - old) * 8) / seconds) : "...");
    const lost = before ? now.lost - before.lost : now.lost;
    const packets = lost + (before ? now.received - before.received : now.received);
    const lossIn = packets > 0 ? (100 * lost) / packets : 0;
    return [
      `in  ${now.videoIn || "no video"} ${rate(now.bytesIn, before && before.bytesIn)}`,
      `out ${now.videoOut || "no video"} ${rate(now.bytesOut, before && before.bytesOut)}`,
      `rtt ${now.rtt === null ? "-" : Math.round(now.rtt * 1000) + " ms"}  loss ${lossIn.toFixed(1)} % in` +
        (now.lossOut === null ? "" : `, ${(100 * now.lossOut).toFixed(1)} % out`),
      `path ${now.path || "-"}`,
    ].join("\n");
  }

  function bitrate(bits) {
    return bits >= 1e6 ? `${(bits / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bits / 1000)} kbit/s`;
  }

  // Keys, as in the Python peer's window; never while typing (the chat box, the join form).

  const KEYS = { m: toggleMute, v: toggleCamera, f: toggleFullscreen, s: toggleStats, q: leave, escape: leave };

  function typing(target) {
    return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  }

  document.addEventListener("keydown", (event) => {
    if (!me || event.ctrlKey || event.altKey || event.metaKey || event.repeat || typing(event.target)) return;
    const key = event.key.toLowerCase();
    if (key === "escape" && document.fullscreenElement) return;  // Esc leaves fullscreen, not the room
    const action = Object.prototype.hasOwnProperty.call(KEYS, key) ? KEYS[key] : null;
    if (!action) return;
    event.preventDefault();
    action();
  });

  // Wiring

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    requestJoin($("room").value.trim(), $("name").value.trim(), "");
  });
  $("leave").addEventListener("click", leave);
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("chat-input");
    const text = input.value;
    if (!text.trim() || !me) return;
    const sent = Array.from(remotes.values()).filter((r) => r.sendChat(text)).length;
    const nobody = remotes.size ? "(nobody here can receive chat; message not sent)" : "(nobody is connected yet; message not sent)";
    log(sent ? `[${me.name}] ${text}` : nobody, sent ? "mine" : "info");
    input.value = "";
  });
  window.addEventListener("pagehide", leave);

  // A link such as /?room=demo&name=ann joins at once; one with bad values leaves the form shown.
  const linkRoom = params.get("room"), linkName = params.get("name");
  if (linkRoom !== null) $("room").value = linkRoom;
  if (linkName !== null) $("name").value = linkName;
  setJoined(false);
  if (linkRoom !== null) requestJoin(linkRoom.trim(), (linkName || "").trim(), " from this link");
})();
