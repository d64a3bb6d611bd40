// Shared client code of the supportdesk pages: a reconnecting WebSocket
// connection that speaks the protocol of PROTOCOL.md, a per-conversation
// transcript that de-duplicates by offset and asks for what it missed, and
// small DOM helpers. Plain JavaScript, no build step, no dependencies.
//
// The connection hands the recovery envelopes that only concern a
// transcript (sync, resumed, and errors answering a resume) to the page's
// Transcript of that conversation itself, before the page sees them, so
// every page follows PROTOCOL.md's recovery rules the same way.
"use strict";

const Desk = (() => {
  // ---------- DOM helpers ----------

  // el builds an element: el("button", {class: "x", onclick: f}, "text", child).
  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") n.addEventListener(k.slice(2), v);
      else if (k === "class") n.className = v;
      else if (k === "dataset") Object.assign(n.dataset, v);
      else if (v === true) n.setAttribute(k, "");
      else n.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  const $ = (sel, root) => (root || document).querySelector(sel);

  // fmtDuration renders milliseconds as "1 min 05 s" / "42 s".
  function fmtDuration(ms) {
    if (ms > 0 && ms < 1000) return "<1 s";
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  }

  function fmtClock(ts) {
    const d = ts ? new Date(ts) : new Date();
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function fmtClockSeconds(ts) {
    const d = ts ? new Date(ts) : new Date();
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function tierBadge(tier) {
    const t = tier || "standard";
    return el("span", { class: "badge tier-" + t }, t.toUpperCase());
  }

  function randomID() {
    const b = new Uint8Array(6);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  // ---------- storage ----------

  // store is a JSON value in localStorage under key; it survives reloads
  // and is separate per browser profile.
  function store(key) {
    return {
      get() {
        try {
          return JSON.parse(localStorage.getItem(key) || "null");
        } catch (_) {
          return null;
        }
      },
      set(v) {
        try {
          localStorage.setItem(key, JSON.stringify(v));
        } catch (_) {
          // Storage full or disabled: the page still works, without reload memory.
        }
      },
      clear() {
        localStorage.removeItem(key);
      },
    };
  }

  // ---------- HTTP API ----------

  // devToken asks the server's dev endpoint for a token:
  // {name, role, tier, skills, capacity, user} → {token, user, role, tier, ws, node}.
  async function devToken(req) {
    const r = await fetch("/api/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(req),
    });
    if (!r.ok) {
      const msg = (await r.text()).trim();
      throw new Error(r.status === 404 ? "This server does not issue dev tokens (start it with -dev)." : msg || "HTTP " + r.status);
    }
    return r.json();
  }

  // route asks which node owns user on the cluster ring; null when unknown.
  async function route(user) {
    try {
      const r = await fetch("/api/route?user=" + encodeURIComponent(user), { cache: "no-store" });
      if (!r.ok) return null;
      return (await r.json()).ws || null;
    } catch (_) {
      return null;
    }
  }

  // ---------- connection ----------

  // Connection keeps one WebSocket open to the server, reconnecting with
  // exponential backoff and jitter. It reports every envelope to onEnvelope
  // and its state ("connecting", "online", "offline", "closed") to onStatus.
  // auth() returns {token, ws, user}; it is called again (refresh=true) when
  // connections keep failing before hello, e.g. after a server restart
  // invalidated the token.
  class Connection {
    constructor({ auth, onEnvelope, onStatus }) {
      this.auth = auth;
      this.onEnvelope = onEnvelope;
      this.onStatus = onStatus || (() => {});
      this.ws = null;
      this.ready = false; // hello received on the current socket
      this.attempt = 0;
      this.failsBeforeHello = 0;
      this.timer = null;
      this.stopped = false;
      this.retryAt = 0;
      this.connectedOnce = false;
      window.addEventListener("online", () => this.retryNow());
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") this.retryNow();
      });
    }

    async start() {
      Desk.active = this; // the page's connection, for the console and tests
      this.stopped = false;
      await this.open(false);
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.ws) this.ws.close(1000, "bye");
      this.ws = null;
      this.ready = false;
      this.onStatus("closed");
    }

    retryNow() {
      if (this.stopped || this.ws) return;
      clearTimeout(this.timer);
      this.open(false);
    }

    async open(refresh) {
      if (this.stopped) return;
      this.onStatus("connecting");
      let a;
      try {
        a = await this.auth(refresh);
      } catch (err) {
        this.onStatus("offline", String(err.message || err));
        this.schedule();
        return;
      }
      if (this.stopped) return;
      let url = a.ws;
      if (this.connectedOnce) url = (await route(a.user)) || url;
      if (!url) url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
      let ws;
      try {
        ws = new WebSocket(url + "?token=" + encodeURIComponent(a.token));
      } catch (err) {
        this.onStatus("offline", String(err.message || err));
        this.schedule();
        return;
      }
      this.ws = ws;
      this.ready = false;
      ws.onmessage = (ev) => {
        let env;
        try {
          env = JSON.parse(ev.data);
        } catch (_) {
          return;
        }
        if (env.type === "hello") {
          this.ready = true;
          this.attempt = 0;
          this.failsBeforeHello = 0;
          this.connectedOnce = true;
          this.onStatus("online");
        }
        recover(env);
        this.onEnvelope(env);
      };
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        const hadHello = this.ready;
        this.ready = false;
        if (this.stopped) return;
        if (!hadHello) this.failsBeforeHello++;
        const why = ev.code === 1001 ? "server is restarting" : ev.code === 1008 ? "too many messages" : ev.code === 1006 ? "connection lost" : "closed (" + ev.code + ")";
        this.onStatus("offline", why);
        this.schedule();
      };
    }

    schedule() {
      if (this.stopped) return;
      const base = Math.min(10000, 500 * 2 ** this.attempt);
      const delay = Math.round(base / 2 + Math.random() * (base / 2));
      this.attempt = Math.min(this.attempt + 1, 6);
      this.retryAt = Date.now() + delay;
      const refresh = this.failsBeforeHello >= 2;
      if (refresh) this.failsBeforeHello = 0;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.open(refresh), delay);
    }

    // send writes one envelope; false when the socket is not ready (the
    // caller keeps what it must resend after the next hello).
    send(env) {
      if (!this.ws || !this.ready || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(env));
      return true;
    }
  }

  // recover passes the envelopes of the recovery protocol to the
  // conversation's Transcript: sync (the node restored its delivery and may
  // have missed messages: resume if its offset is above ours), resumed (the
  // end of a resume batch) and an error answering a resume. Pages may ignore
  // these types; they still get them.
  function recover(env) {
    if (!env.conv) return;
    const t = Transcript.of(env.conv);
    if (!t) return;
    switch (env.type) {
      case "sync":
        t.sync(env);
        break;
      case "resumed":
        t.resumed(env);
        break;
      case "error":
        if ((env.ref || "").split(":")[0] === "resume") t.resumeFailed(env);
        break;
    }
  }

  // statusText renders a connection state for a status pill.
  function renderStatus(node, state, detail, conn) {
    node.className = "status status-" + state;
    let text = { connecting: "Connecting…", online: "Connected", offline: "Offline", closed: "Signed out" }[state] || state;
    if (state === "offline" && conn && conn.retryAt) {
      const s = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
      text = "Reconnecting" + (s > 0 ? " in " + s + " s" : "…");
    }
    node.textContent = text;
    node.title = detail || "";
  }

  // ---------- transcript ----------

  // live maps a conversation ID to the newest Transcript made for it: the one
  // the connection hands sync, resumed and resume errors to.
  const live = new Map();

  // Transcript is one conversation's messages as this client has them.
  // Offsets are unique within an epoch; contig is the highest offset up to
  // which nothing is missing. Whenever the client learns of a higher offset
  // (hello, queued, assigned, watch, ack, sync), or sees a gap, it resumes
  // from contig; a reload (our copy is from another epoch) drops the copy and
  // resumes from the start.
  class Transcript {
    constructor(conv, { send, onChange, onReload }) {
      this.conv = conv;
      this.epoch = "";
      this.contig = 0; // everything ≤ contig is shown
      this.msgs = new Map(); // offset → message envelope
      this.notes = []; // local system lines: {after, text, ts}
      this.send = send;
      this.onChange = onChange || (() => {});
      this.onReload = onReload || (() => {});
      this.resumeAt = 0;
      this.resyncing = false; // a resume with a stale epoch is waiting for reload
      this.target = 0; // the highest offset the server told us about
      this.inflight = 0; // resumes sent on this connection and not answered yet
      this.stalls = 0; // answered resumes in a row that brought nothing new
      this.contigAtSend = 0;
      this.retryTimer = null;
      live.set(conv, this);
    }

    // of returns the newest Transcript of conv, if the page made one.
    static of(conv) {
      return live.get(conv) || null;
    }

    // loading is true while a resume is unanswered.
    get loading() {
      return this.inflight > 0;
    }

    get last() {
      let m = this.contig;
      for (const off of this.msgs.keys()) if (off > m) m = off;
      return m;
    }

    // known reports a position the server mentioned (queued, assigned,
    // watch, ack, resolved, sync); it resumes when we are behind.
    known(offset, epoch) {
      if (epoch && this.epoch && epoch !== this.epoch) {
        this.resync();
        return;
      }
      if (epoch && !this.epoch) this.epoch = epoch;
      if ((offset || 0) > this.target) this.target = offset || 0;
      if ((offset || 0) > this.contig) this.resume();
    }

    // sync handles the server's sync: the node restored its delivery of the
    // conversation and may have missed messages; resume if its offset is
    // above ours.
    sync(e) {
      this.known(e.offset || 0, e.epoch);
    }

    // reconnected resumes after a (re)connect from our last offset; offset
    // and epoch are the server's position from hello, when known.
    reconnected(offset, epoch) {
      this.resyncing = false;
      this.inflight = 0; // answers to the old connection's resumes never come
      this.stalls = 0;
      if ((offset || 0) > this.target && !(epoch && this.epoch && epoch !== this.epoch)) this.target = offset || 0;
      if (epoch && this.epoch && epoch !== this.epoch) this.resync();
      else this.resume(true);
    }

    // resync asks with our old epoch, once, so that the server answers
    // reload with its epoch.
    resync() {
      if (this.resyncing) return;
      this.resyncing = true;
      this.sendResume();
    }

    // resume asks for everything after contig (throttled while one is in
    // flight; the resumed marker checks again whether more is needed).
    resume(force) {
      if (this.resyncing) return;
      if (!force && this.inflight > 0 && Date.now() - this.resumeAt < 700) return;
      this.sendResume();
    }

    sendResume() {
      const env = { type: "resume", conv: this.conv };
      if (this.contig > 0 || this.epoch) {
        env.offset = this.contig;
        env.epoch = this.epoch;
      }
      if (!this.send(env)) return; // not connected: hello resumes
      this.resumeAt = Date.now();
      this.contigAtSend = this.contig;
      const was = this.loading;
      this.inflight++;
      if (!was) this.onChange();
    }

    // resumed handles the end marker of a resume batch: the loading state
    // ends, and if we still miss messages (a gap, or an offset the server
    // mentioned meanwhile) we ask again — but not forever when the answers
    // bring nothing new.
    resumed(e) {
      if (this.inflight > 0) this.inflight--;
      if (e.epoch && !this.epoch) this.epoch = e.epoch;
      if (this.contig > this.contigAtSend) this.stalls = 0;
      else this.stalls++;
      const behind = this.target > this.contig || this.last > this.contig;
      if (behind && this.inflight === 0 && !this.resyncing && this.stalls < 3) this.sendResume();
      this.onChange();
    }

    // resumeFailed handles an error answering our resume: the loading state
    // ends; a temporary failure is retried after a second.
    resumeFailed(e) {
      if (this.inflight > 0) this.inflight--;
      if (this.resyncing && this.inflight === 0) this.resyncing = false;
      if (["unavailable", "internal", "rate_limited"].includes(e.code)) {
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.resume(true), 1000);
      }
      this.onChange();
    }

    // add stores a message; it returns false for duplicates.
    add(m) {
      const off = m.offset || 0;
      if (!off) return false;
      if (m.epoch && this.epoch && m.epoch !== this.epoch) {
        // The history was replaced: a resume with our old epoch answers reload.
        this.resync();
        return false;
      }
      if (m.epoch && !this.epoch) this.epoch = m.epoch;
      if (off <= this.contig || this.msgs.has(off)) return false;
      this.msgs.set(off, m);
      while (this.msgs.has(this.contig + 1)) this.contig++;
      if (off > this.contig) this.resume(); // a gap before this one
      this.onChange();
      return true;
    }

    // reload handles the server's reload (conv, epoch): our copy is from
    // another epoch, so drop it and resume from the start with the server's
    // epoch. A reload naming the epoch we already switched to answers an
    // older resume and is ignored.
    reload(r) {
      if (this.inflight > 0) this.inflight--;
      const epoch = r.epoch || "";
      if (epoch && epoch === this.epoch && !this.resyncing) {
        this.onChange();
        return;
      }
      const had = this.msgs.size > 0 || this.contig > 0;
      this.resyncing = false;
      this.msgs.clear();
      this.epoch = epoch;
      this.contig = 0;
      this.target = 0;
      this.stalls = 0;
      if (had) {
        this.note("The conversation history was replaced on the server and has been reloaded.");
        this.onReload(r);
      }
      this.sendResume();
      this.onChange();
    }

    note(text) {
      this.notes.push({ after: this.last, text, ts: Date.now() });
      if (this.notes.length > 100) this.notes.shift();
      this.onChange();
    }

    // items returns messages and notes in display order.
    items() {
      const msgs = [...this.msgs.values()].sort((a, b) => a.offset - b.offset);
      const out = [];
      let ni = 0;
      const notes = [...this.notes].sort((a, b) => a.after - b.after || a.ts - b.ts);
      for (const m of msgs) {
        while (ni < notes.length && notes[ni].after < m.offset) out.push({ note: notes[ni++] });
        out.push({ msg: m });
      }
      while (ni < notes.length) out.push({ note: notes[ni++] });
      return out;
    }

    toJSON() {
      const msgs = [...this.msgs.values()].sort((a, b) => a.offset - b.offset).slice(-300);
      return { conv: this.conv, epoch: this.epoch, contig: this.contig, msgs, notes: this.notes.slice(-50) };
    }

    restore(s) {
      if (!s || s.conv !== this.conv) return;
      this.epoch = s.epoch || "";
      this.contig = s.contig || 0;
      for (const m of s.msgs || []) this.msgs.set(m.offset, m);
      this.notes = s.notes || [];
    }
  }

  // renderTranscript draws t's messages into list; me is the viewer's user
  // ID, peerRead the highest offset the other side has read (for ticks),
  // pending the sent-but-not-echoed messages ({id, text, acked}).
  function renderTranscript(list, t, me, opts) {
    const o = opts || {};
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const frag = document.createDocumentFragment();
    for (const it of t.items()) {
      if (it.note) {
        frag.append(el("li", { class: "note" }, it.note.text));
        continue;
      }
      const m = it.msg;
      const mine = m.from === me;
      let tick = null;
      if (mine && o.ticks) {
        const read = (o.peerRead || 0) >= m.offset;
        tick = el("span", { class: "tick" + (read ? " read" : ""), title: read ? "Read" : "Delivered", "aria-label": read ? "read" : "delivered" }, read ? "✓✓" : "✓");
      }
      frag.append(
        el(
          "li",
          { class: "msg " + (mine ? "mine" : "theirs") + " role-" + (m.role || "customer"), dataset: { offset: m.offset, id: m.id || "" } },
          el("div", { class: "meta" }, el("span", { class: "who" }, mine ? "You" : m.name || m.from), " ", el("time", { datetime: new Date(m.ts || Date.now()).toISOString() }, fmtClock(m.ts))),
          el("div", { class: "text" }, m.text),
          tick,
        ),
      );
    }
    for (const p of o.pending || []) {
      frag.append(
        el(
          "li",
          { class: "msg mine pending", dataset: { id: p.id } },
          el("div", { class: "meta" }, el("span", { class: "who" }, "You"), " ", el("time", {}, p.acked ? "sent" : "sending…")),
          el("div", { class: "text" }, p.text),
          el("span", { class: "tick", "aria-label": p.acked ? "sent" : "sending" }, p.acked ? "✓" : "…"),
        ),
      );
    }
    list.replaceChildren(frag);
    if (t.loading) list.setAttribute("aria-busy", "true");
    else list.removeAttribute("aria-busy");
    if (atBottom || o.forceBottom) list.scrollTop = list.scrollHeight;
  }

  // Typing sends typing on/off for one conversation from an input's events.
  class Typing {
    constructor(send) {
      this.send = send;
      this.on = false;
      this.timer = null;
      this.conv = "";
    }
    input(conv) {
      if (!conv) return;
      if (!this.on || this.conv !== conv) {
        if (this.on && this.conv !== conv) this.send({ type: "typing", conv: this.conv, state: "off" });
        this.conv = conv;
        this.on = this.send({ type: "typing", conv, state: "on" });
      }
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.stop(), 3000);
    }
    stop() {
      clearTimeout(this.timer);
      if (this.on) this.send({ type: "typing", conv: this.conv, state: "off" });
      this.on = false;
    }
  }

  // enterToSend makes Enter submit form from textarea (Shift+Enter: new line).
  function enterToSend(textarea, form) {
    let sent = false; // the line break of the Enter that sent must not land in the box
    textarea.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        sent = true;
        form.requestSubmit();
      }
    });
    textarea.addEventListener("beforeinput", (ev) => {
      if (sent && (ev.inputType === "insertLineBreak" || ev.inputType === "insertParagraph" || ev.data === "\r" || ev.data === "\n")) ev.preventDefault();
      sent = false;
    });
    textarea.addEventListener("keyup", () => {
      sent = false;
    });
  }

  // reconcile makes parent's children the nodes built for items, in order,
  // keeping a child whose key and signature did not change, so that focus
  // and a click in progress survive frequent updates.
  function reconcile(parent, items, key, sig, build) {
    const old = new Map();
    for (const n of parent.children) old.set(n.dataset.key, n);
    const nodes = items.map((it) => {
      const k = key(it);
      const sg = sig(it);
      const prev = old.get(k);
      if (prev && prev.dataset.sig === sg) return prev;
      const n = build(it);
      n.dataset.key = k;
      n.dataset.sig = sg;
      return n;
    });
    const active = document.activeElement;
    let same = nodes.length === parent.children.length;
    for (let i = 0; same && i < nodes.length; i++) same = parent.children[i] === nodes[i];
    if (same) return;
    parent.replaceChildren(...nodes);
    if (active && !active.isConnected && active.dataset && active.dataset.focusKey) {
      const again = parent.querySelector('[data-focus-key="' + active.dataset.focusKey + '"]');
      if (again) again.focus();
    }
  }

  let seq = 0;
  function clientMessageID(user) {
    seq++;
    return user + "-" + Date.now().toString(36) + "-" + seq;
  }

  // toast shows a short message in the page's toast region.
  function toast(text, kind) {
    const region = $("#toasts");
    if (!region) return;
    const t = el("div", { class: "toast " + (kind || "") , role: kind === "error" ? "alert" : "status" }, text);
    region.append(t);
    setTimeout(() => t.remove(), 6000);
  }

  // startConnection opens a page's reconnecting connection: it renders the
  // connection state into statusNode and reports it to onStatus.
  function startConnection({ auth, onEnvelope, statusNode, onStatus }) {
    const conn = new Connection({
      auth,
      onEnvelope,
      onStatus: (state, detail) => {
        onStatus({ state, detail });
        renderStatus(statusNode, state, detail, conn);
      },
    });
    conn.start();
    return conn;
  }

  return {
    active: null, startConnection,
    el, $, fmtDuration, fmtClock, fmtClockSeconds, tierBadge, randomID, store, devToken, route,
    Connection, renderStatus, Transcript, renderTranscript, Typing, enterToSend, clientMessageID, toast, reconcile,
  };
})();
