// Customer widget: start a chat, wait in the queue, talk to an agent.
// The token, the conversation, its last offset/epoch and the transcript are
// kept in localStorage, so a reload or a lost connection loses nothing: the
// page resumes from its last offset and the server fills in what it missed.
"use strict";

(() => {
  const { el, $, fmtDuration, store, devToken, renderStatus, Transcript, renderTranscript, Typing, enterToSend, clientMessageID, toast, tierBadge, randomID } = Desk;
  const saved = store("supportdesk.customer");

  // s is everything that survives a reload.
  let s = saved.get();
  let conn = null;
  let t = null; // Transcript of s.conv
  let me = s && s.user;
  let etaEnd = 0; // local time the estimated wait ends
  let position = 0;
  let peerTypingUntil = 0;
  let peerTypingName = "";
  let wantStart = false;
  let status = { state: "closed", detail: "" };

  const ui = {
    setup: $("#setup"), form: $("#setup-form"), name: $("#name"), entry: $("#entry"), setupError: $("#setup-error"),
    chat: $("#chat"), status: $("#status"), who: $("#who"), signout: $("#signout"), convState: $("#conv-state"),
    banner: $("#banner"), queue: $("#queue"), queuePos: $("#queue-position"), queueLabel: $("#queue-label"),
    queueEta: $("#queue-eta"), queueTier: $("#queue-tier"), agentLine: $("#agent-line"), messages: $("#messages"),
    typing: $("#typing"), composer: $("#composer"), text: $("#composer-text"), send: $("#send"),
    leave: $("#leave"), end: $("#end"), again: $("#again"),
  };

  let saveQueued = false;
  function save() {
    if (!s || saveQueued) return;
    saveQueued = true;
    queueMicrotask(() => {
      saveQueued = false;
      if (!s) return;
      s.transcript = t ? t.toJSON() : null;
      saved.set(s);
    });
  }

  function send(env) {
    return conn ? conn.send(env) : false;
  }

  function newTranscript(conv) {
    t = new Transcript(conv, {
      send,
      onChange: () => {
        render();
        save();
      },
      onReload: () => {
        showBanner("The server asked this page to reload the conversation: it could not replay every message you missed. What its history still holds is shown below.");
      },
    });
    return t;
  }

  function showBanner(text) {
    ui.banner.replaceChildren(el("span", {}, text), " ", el("button", { type: "button", class: "link", onclick: () => showBanner("") }, "Dismiss"));
    ui.banner.hidden = !text;
  }

  // ---------- rendering ----------

  function render() {
    renderStatus(ui.status, status.state, status.detail, conn);
    const signedIn = !!(s && s.token);
    ui.setup.hidden = signedIn;
    ui.chat.hidden = !signedIn;
    ui.signout.hidden = !signedIn;
    if (!signedIn) {
      ui.who.textContent = "";
      return;
    }
    ui.who.replaceChildren(s.name + " ", tierBadge(s.tier));
    const mode = s.mode || "starting";
    const labels = { starting: "Connecting", waiting: "Waiting for an agent", offered: "An agent is picking up", active: "With " + (s.agentName || "an agent"), ended: "Ended" };
    ui.convState.textContent = labels[mode] || mode;
    ui.convState.className = "pill pill-" + mode;
    ui.queue.hidden = !(mode === "waiting" || mode === "offered");
    renderQueue();
    ui.agentLine.hidden = mode !== "active";
    ui.agentLine.textContent = mode === "active" ? "You are chatting with " + (s.agentName || "an agent") + "." : "";
    const canWrite = !!(s.conv && mode !== "ended" && mode !== "starting");
    ui.text.disabled = !canWrite;
    ui.send.disabled = !canWrite;
    ui.leave.hidden = !(mode === "waiting" || mode === "offered");
    ui.end.hidden = mode !== "active";
    ui.again.hidden = mode !== "ended";
    if (t) renderTranscript(ui.messages, t, me, { ticks: true, peerRead: s.peerRead || 0, pending: s.pending || [] });
    else ui.messages.replaceChildren();
    renderTyping();
  }

  function renderQueue() {
    if (ui.queue.hidden) return;
    if (s.mode === "offered") {
      ui.queuePos.textContent = "✓";
      ui.queueLabel.textContent = "an agent is picking up your chat";
      ui.queueEta.textContent = "any moment now";
      return;
    }
    ui.queuePos.textContent = position ? String(position) : "–";
    ui.queueLabel.textContent = position === 1 ? "you are next in line" : position ? "in line" : "joining the queue";
    if (etaEnd) {
      const left = etaEnd - Date.now();
      ui.queueEta.textContent = left > 1000 ? "about " + fmtDuration(left) : "any moment now";
    } else {
      ui.queueEta.textContent = position === 1 ? "you are next" : "estimating…";
    }
    ui.queueTier.replaceChildren("Your tier: ", tierBadge(s.tier), s.tier === "vip" ? " — priority service" : "");
  }

  function renderTyping() {
    const on = peerTypingUntil > Date.now();
    ui.typing.textContent = on ? peerTypingName + " is typing…" : "";
  }

  // ---------- protocol ----------

  function setMode(mode) {
    if (s.mode !== mode) {
      s.mode = mode;
      save();
    }
    render();
  }

  function adopt(conv) {
    if (s.conv === conv && t) return;
    s.conv = conv;
    s.pending = s.pending || [];
    s.peerRead = 0;
    s.myRead = 0;
    s.agentName = "";
    newTranscript(conv);
    showBanner("");
  }

  function sendRead() {
    if (!t || document.visibilityState !== "visible") return;
    let newest = 0;
    for (const m of t.msgs.values()) if (m.from !== me && m.offset > newest && m.offset <= t.contig) newest = m.offset;
    if (newest > (s.myRead || 0) && send({ type: "read", conv: t.conv, offset: newest })) {
      s.myRead = newest;
      save();
    }
  }

  function resendPending() {
    for (const p of s.pending || []) {
      if (!p.acked) send({ type: "message", conv: s.conv, id: p.id, text: p.text });
    }
  }

  function onHello(h) {
    me = h.from;
    s.user = h.from;
    const convs = h.convs || [];
    if (s.conv) {
      const inf = convs.find((c) => c.conv === s.conv);
      if (!inf) {
        if (s.mode !== "ended") {
          showBanner("Your previous conversation is no longer available on the server (it may have restarted). Start a new chat to reach us again.");
          setMode("ended");
        }
        return;
      }
      s.myRead = Math.max(s.myRead || 0, inf.read || 0);
      if (inf.agent && !s.agentName) s.agentName = inf.agent;
      applyState(inf.state);
      t.reconnected(inf.offset, inf.epoch); // after every (re)connect, from our last offset
      resendPending();
      sendRead();
      return;
    }
    const open = convs.filter((c) => c.state !== "resolved" && c.state !== "closed").pop();
    if (open) {
      adopt(open.conv);
      applyState(open.state);
      t.reconnected(open.offset, open.epoch);
      return;
    }
    if (wantStart || !s.mode || s.mode === "starting") {
      wantStart = false;
      send({ type: "start", entry: s.entry || "" });
    }
  }

  function applyState(state) {
    if (state === "queued") setMode("waiting");
    else if (state === "offered") setMode("offered");
    else if (state === "resolved" || state === "closed") setMode("ended");
    else setMode("active");
  }

  function onEnvelope(e) {
    if (!s) return;
    switch (e.type) {
      case "hello":
        onHello(e);
        break;
      case "queued":
        if (s.conv !== e.conv) adopt(e.conv);
        position = e.position || 0;
        etaEnd = e.eta_ms ? Date.now() + e.eta_ms : 0;
        setMode("waiting");
        t.known(e.offset || 0, e.epoch);
        ui.text.focus();
        break;
      case "position":
        if (e.conv !== s.conv) break;
        position = e.position || 0;
        etaEnd = e.eta_ms ? Date.now() + e.eta_ms : 0;
        if (s.mode !== "waiting") setMode("waiting");
        else renderQueue();
        break;
      case "assigned":
        if (e.conv !== s.conv) break;
        if (s.agentName !== e.name || s.mode !== "active") t.note((e.name || e.agent) + " joined the conversation.");
        s.agentName = e.name || e.agent;
        setMode("active");
        t.known(e.offset, e.epoch);
        break;
      case "transferred":
        if (e.conv !== s.conv) break;
        if (e.state === "queued") {
          t.note("Your agent is no longer available — you are back at the front of the queue.");
          position = 0;
          etaEnd = 0;
          setMode("waiting");
        }
        break;
      case "message":
        if (e.conv !== s.conv || !t) break;
        if (e.from === me && s.pending) s.pending = s.pending.filter((p) => p.id !== e.id);
        if (e.from !== me && peerTypingName && e.from) peerTypingUntil = 0;
        if (t.add(e)) sendRead();
        else render();
        break;
      case "ack": {
        if (e.conv !== s.conv) break;
        const p = (s.pending || []).find((x) => x.id === e.id);
        if (p) p.acked = true;
        t.known(e.offset, e.epoch);
        save();
        render();
        break;
      }
      case "typing":
        if (e.conv !== s.conv || e.from === me) break;
        peerTypingName = s.agentName || "The agent";
        peerTypingUntil = e.state === "on" ? Date.now() + 6000 : 0;
        renderTyping();
        break;
      case "read":
        if (e.conv !== s.conv || e.from === me) break;
        if ((e.offset || 0) > (s.peerRead || 0)) {
          s.peerRead = e.offset;
          save();
          render();
        }
        break;
      case "resolved":
        if (e.conv !== s.conv) break;
        t.note(e.state === "closed" ? "The conversation was closed: " + (e.message || "") : "The conversation was resolved. Thank you!");
        setMode("ended");
        t.known(e.offset, e.epoch);
        break;
      case "reload":
        if (t && e.conv === t.conv) t.reload(e);
        break;
      case "sync":
      case "resumed":
        // Handled by the Transcript (client.js): sync resumes when its offset
        // is above ours; resumed ends a resume batch.
        break;
      case "error":
        if (e.code === "no_conversation" && s.conv && e.conv === s.conv) setMode("ended");
        toast(e.message || e.code, "error");
        break;
    }
  }

  // ---------- actions ----------

  async function auth(refresh) {
    if (refresh || !s.token) {
      const r = await devToken({ user: s.user, name: s.name, role: "customer", tier: s.tier });
      s.token = r.token;
      s.ws = r.ws;
      s.user = r.user;
      save();
    }
    return { token: s.token, ws: s.ws, user: s.user };
  }

  function connect() {
    conn = Desk.startConnection({ auth, onEnvelope, statusNode: ui.status, onStatus: (s) => { status = s; } });
  }

  ui.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    ui.setupError.hidden = true;
    const name = ui.name.value.trim();
    if (!name) return;
    const tier = new FormData(ui.form).get("tier") || "standard";
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "guest";
    const next = { name, tier, entry: ui.entry.value, user: "c-" + slug + "-" + randomID().slice(0, 6), mode: "starting", pending: [] };
    try {
      const r = await devToken({ user: next.user, name, role: "customer", tier });
      Object.assign(next, { token: r.token, ws: r.ws, user: r.user });
    } catch (err) {
      ui.setupError.textContent = "Could not sign in: " + err.message;
      ui.setupError.hidden = false;
      return;
    }
    s = next;
    me = s.user;
    t = null;
    wantStart = true;
    save();
    render();
    connect();
  });

  ui.composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = ui.text.value.trim();
    if (!text || !s.conv) return;
    const id = clientMessageID(me);
    s.pending = s.pending || [];
    s.pending.push({ id, text, acked: false });
    send({ type: "message", conv: s.conv, id, text });
    typing.stop();
    ui.text.value = "";
    save();
    render();
    ui.messages.scrollTop = ui.messages.scrollHeight;
  });
  enterToSend(ui.text, ui.composer);

  const typing = new Typing(send);
  ui.text.addEventListener("input", () => {
    if (ui.text.value) typing.input(s && s.conv);
    else typing.stop();
  });

  ui.leave.addEventListener("click", () => send({ type: "cancel", conv: s.conv }));
  ui.end.addEventListener("click", () => {
    if (confirm("End this chat?")) send({ type: "resolve", conv: s.conv });
  });
  ui.again.addEventListener("click", () => {
    s.conv = "";
    s.mode = "starting";
    s.pending = [];
    t = null;
    showBanner("");
    position = 0;
    etaEnd = 0;
    save();
    render();
    if (!send({ type: "start", entry: s.entry || "" })) wantStart = true;
  });
  ui.signout.addEventListener("click", () => {
    if (conn) conn.stop();
    conn = null;
    saved.clear();
    s = null;
    t = null;
    status = { state: "closed", detail: "" };
    render();
    ui.name.focus();
  });
  document.addEventListener("visibilitychange", sendRead);

  setInterval(() => {
    if (!s) return;
    renderQueue();
    renderTyping();
    if (status.state === "offline") renderStatus(ui.status, status.state, status.detail, conn);
  }, 1000);

  // ---------- start ----------

  if (s && s.token) {
    if (s.conv) {
      newTranscript(s.conv);
      t.restore(s.transcript);
    }
    render();
    ui.messages.scrollTop = ui.messages.scrollHeight;
    connect();
  } else {
    s = null;
    render();
  }
})();
