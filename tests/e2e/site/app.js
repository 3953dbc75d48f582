"use strict";
document.getElementById("host").textContent = location.host;
document.getElementById("script").textContent = "app.js ran";

// Like a dev server's live-reload channel: one WebSocket to the page's own host.
const state = document.getElementById("socket");
const socket = new WebSocket(`ws://${location.host}/ws`);
socket.onopen = () => { state.textContent = "WebSocket open"; };
socket.onclose = () => { state.textContent = "WebSocket closed"; };
socket.onmessage = (event) => {
  const item = document.createElement("li");
  item.textContent = event.data;
  document.getElementById("echoes").append(item);
};
document.getElementById("send").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("message");
  socket.send(input.value);
  input.value = "";
};
