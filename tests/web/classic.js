// The classic tutorial's browser client, written as its readers write it: one
// RTCPeerConnection for the page's life, join with a bare room string, offer as soon as it
// joins (video, then a data channel), answer any offer on the same connection, add every
// candidate, and greet on every data channel it is given. It knows nothing of our protocol.
// Loaded into a page by tests (see test_classic_browser.py); `window.classic` is what they read.
"use strict";

window.startClassic = async (room, withAudio) => {
  const state = window.classic = { received: [], greeted: [], errors: [], channels: [], decoded: 0 };
  const socket = io({ transports: ["websocket"] });
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: !!withAudio });
  stream.getTracks().forEach((track) => pc.addTrack(track, stream));

  const video = document.createElement("video");
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  video.width = 640;
  video.height = 480;
  document.body.appendChild(video);
  state.video = video;

  const listen = (channel) => {
    state.channels.push(channel.label);
    channel.onmessage = (event) => state.received.push({ label: channel.label, data: String(event.data) });
  };
  const chat = pc.createDataChannel("chat");
  listen(chat);
  chat.onopen = () => { state.chatOpen = true; };
  state.send = (text) => chat.send(text);

  pc.onicecandidate = (event) => {
    if (event.candidate) socket.emit("message", { type: "candidate", candidate: event.candidate });
  };
  pc.ontrack = (event) => {
    if (event.track.kind !== "video") return;
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
  };
  pc.ondatachannel = (event) => {
    const channel = event.channel;
    listen(channel);
    channel.onopen = () => {
      channel.send("hello from the classic client");
      state.greeted.push(channel.label);
    };
  };
  socket.on("message", async (message) => {
    try {
      if (message.type === "offer") {
        await pc.setRemoteDescription(message);
        await pc.setLocalDescription(await pc.createAnswer());
        socket.emit("message", pc.localDescription);
      } else if (message.type === "answer") {
        await pc.setRemoteDescription(message);
      } else if (message.type === "candidate" && message.candidate) {
        await pc.addIceCandidate(message.candidate);
      }
    } catch (error) {
      state.errors.push(`${message.type}: ${error}`);
    }
  });
  socket.emit("join", room);
  await pc.setLocalDescription(await pc.createOffer());
  socket.emit("message", pc.localDescription);
};
