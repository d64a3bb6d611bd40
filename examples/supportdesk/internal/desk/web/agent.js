// Agent console: presence, incoming offers with a countdown, the agent's
// conversations with unread counts, chat panes, transfer and resolve, and the
// customer's earlier conversations (read-only, from the server's history).
"use strict";

(() => {
  const { el, $, fmtDuration, store, devToken, renderStatus, Transcript, renderTranscript, Typing, enterToSend, clientMessageID, toast, tierBadge } = Desk;
  const saved = store("supportdesk.agent");

  let s = saved.get(); // {token, user, name, skills, capacity, ws, presence}
  let conn = null;
  let me = s && s.user;
  let presence = "";
  let status = { state: "closed", detail: "" };
  const convs = new Map(); // conv ID → conversation view state
  const offers = new Map(); // conv ID → offer
  const names = new Map(); // customer ID → display name
  let selected = "";
  let accepting = "";
  // history caches the server's answer to history, per conversation (asked
  // once): {state: "loading"} until it comes, then {state: "ok", convs,
  // byConv} or {state: "error", code, message}.
  const history = new Map();
  const historyIdle = { state: "idle" }; // not asked yet (not connected)
  let historyShown = null; // {conv, h}: what the panel shows

  const ui = {
    login: $("#login"), loginForm: $("#login-form"), name: $("#name"), skills: $("#skills"), capacity: $("#capacity"),
    loginError: $("#login-error"), console: $("#console"), who: $("#who"), presence: $("#presence"), status: $("#status"),
    signout: $("#signout"), offers: $("#offers"), offerCount: $("#offer-count"), noOffers: $("#no-offers"),
    convs: $("#convs"), noConvs: $("#no-convs"), load: $("#load"), paneEmpty: $("#pane-empty"), paneBody: $("#pane-body"),
    paneName: $("#pane-name"), paneTier: $("#pane-tier"), paneEntry: $("#pane-entry"), paneState: $("#pane-state"),
    transferForm: $("#transfer-form"), transferTo: $("#transfer-to"), toQueue: $("#to-queue"), resolve: $("#resolve"),
    closePane: $("#close-pane"), messages: $("#messages"), typing: $("#typing"), composer: $("#composer"),
    text: $("#composer-text"), send: $("#send"),
    history: $("#history"), historyCount: $("#history-count"), historyBody: $("#history-body"),
  };

  function send(env) {
    return conn ? conn.send(env) : false;
  }

  // ---------- conversations ----------

  function ensureConv(id, info) {
    let c = convs.get(id);
    if (!c) {
      c = { id, customer: "", tier: "standard", entry: "", state: "active", myRead: 0, peerRead: 0, pending: [], typingUntil: 0 };
      c.t = new Transcript(id, {
        send,
        onChange: () => {
          if (c.id === selected) {
            renderPane();
            sendRead(c);
          }
          renderConvs();
        },
        onReload: () => toast("Conversation history was reloaded from the server.", ""),
      });
      convs.set(id, c);
      c.t.resume(true); // the whole history: we may join after the first messages
    }
    if (info) {
      for (const k of ["customer", "tier", "entry", "state"]) if (info[k]) c[k] = info[k];
    }
    return c;
  }

  function unread(c) {
    let n = 0;
    for (const m of c.t.msgs.values()) if (m.from !== me && m.offset > c.myRead) n++;
    return n;
  }

  function sendRead(c) {
    if (!c || c.id !== selected || document.visibilityState !== "visible") return;
    let newest = 0;
    for (const m of c.t.msgs.values()) if (m.from !== me && m.offset > newest && m.offset <= c.t.contig) newest = m.offset;
    if (newest > c.myRead && send({ type: "read", conv: c.id, offset: newest })) {
      c.myRead = newest;
      renderConvs();
    }
  }

  function select(id, focus) {
    selected = id;
    const c = convs.get(id);
    renderConvs();
    renderPane(true);
    if (c) sendRead(c);
    if (focus && c && !ui.text.disabled) ui.text.focus();
  }

  // ---------- rendering ----------

  function render() {
    renderStatus(ui.status, status.state, status.detail, conn);
    const signedIn = !!(s && s.token);
    ui.login.hidden = signedIn;
    ui.console.hidden = !signedIn;
    ui.presence.hidden = !signedIn;
    ui.signout.hidden = !signedIn;
    if (!signedIn) {
      ui.who.textContent = "";
      return;
    }
    ui.who.replaceChildren(el("strong", {}, s.name), " ", el("code", { title: "Your agent ID (for transfers)" }, me || ""));
    renderPresence();
    renderOffers();
    renderConvs();
    renderPane();
  }

  function renderPresence() {
    for (const r of ui.presence.querySelectorAll("input")) r.checked = r.value === presence;
    ui.presence.dataset.state = presence;
  }

  function renderOffers() {
    const list = [...offers.values()].sort((a, b) => a.received - b.received);
    ui.offerCount.textContent = list.length ? String(list.length) : "";
    ui.noOffers.hidden = list.length > 0;
    ui.offers.replaceChildren(
      ...list.map((o) =>
        el(
          "li",
          { class: "offer tier-" + (o.tier || "standard"), dataset: { conv: o.conv } },
          el("div", { class: "offer-head" },
            el("strong", { class: "offer-name" }, o.name || o.customer), tierBadge(o.tier),
            o.entry ? el("span", { class: "muted small" }, o.entry) : null,
            el("span", { class: "left small", role: "timer" }),
          ),
          el("div", { class: "countdown", "aria-hidden": "true" }, el("div", { class: "bar" })),
          el("div", { class: "offer-foot" },
            el("button", { type: "button", class: "primary accept", onclick: () => accept(o) }, "Accept"),
            el("button", { type: "button", class: "decline", onclick: () => decline(o) }, "Decline"),
          ),
        ),
      ),
    );
    tickOffers();
  }

  function tickOffers() {
    const now = Date.now();
    for (const li of ui.offers.children) {
      const o = offers.get(li.dataset.conv);
      if (!o) continue;
      const left = Math.max(0, o.deadline - now);
      li.querySelector(".bar").style.width = (o.total > 0 ? (100 * left) / o.total : 0).toFixed(1) + "%";
      li.querySelector(".left").textContent = left > 0 ? "moves on in " + Math.ceil(left / 1000) + " s" : "moving on…";
      li.classList.toggle("urgent", left < 5000);
    }
  }

  function renderConvs() {
    const list = [...convs.values()];
    ui.noConvs.hidden = list.length > 0;
    const active = list.filter((c) => c.state !== "resolved" && c.state !== "closed").length;
    ui.load.textContent = s && s.capacity ? active + " / " + s.capacity : String(active);
    let total = 0;
    for (const c of list) total += unread(c);
    Desk.reconcile(
      ui.convs,
      list,
      (c) => c.id,
      (c) => [names.get(c.customer), c.customer, c.tier, c.state, unread(c), c.id === selected].join("|"),
      (c) => {
        const n = unread(c);
        const ended = c.state === "resolved" || c.state === "closed";
        return el(
          "li",
          {},
          el(
            "button",
            { type: "button", class: "conv" + (c.id === selected ? " selected" : "") + (ended ? " ended" : ""), dataset: { focusKey: "c-" + c.id }, "aria-current": c.id === selected ? "true" : null, onclick: () => select(c.id, true) },
            el("span", { class: "conv-name" }, names.get(c.customer) || c.customer || c.id),
            tierBadge(c.tier),
            el("span", { class: "conv-state small muted" }, c.state),
            n ? el("span", { class: "unread", "aria-label": n + " unread" }, String(n)) : null,
          ),
        );
      },
    );
    document.title = (total ? "(" + total + ") " : "") + (offers.size ? "● " : "") + "Agent console";
  }

  function renderPane(forceBottom) {
    const c = convs.get(selected);
    ui.paneEmpty.hidden = !!c;
    ui.paneBody.hidden = !c;
    if (!c) return;
    const ended = c.state === "resolved" || c.state === "closed";
    ui.paneName.textContent = names.get(c.customer) || c.customer;
    ui.paneTier.replaceChildren(tierBadge(c.tier));
    ui.paneEntry.textContent = c.entry ? "topic: " + c.entry : "";
    ui.paneState.textContent = c.state;
    ui.paneState.className = "pill pill-" + c.state;
    for (const b of [ui.text, ui.send, ui.resolve, ui.toQueue, ui.transferTo, ...ui.transferForm.querySelectorAll("button")]) b.disabled = ended;
    ui.closePane.hidden = !ended;
    renderTranscript(ui.messages, c.t, me, { ticks: true, peerRead: c.peerRead, pending: c.pending, forceBottom });
    renderTyping();
    renderHistory();
  }

  // ---------- earlier conversations ----------

  // askHistory asks the server, once per conversation, for the customer's
  // earlier conversations; when not connected, the next render asks.
  function askHistory(id) {
    if (!id || history.has(id)) return;
    if (send({ type: "history", conv: id })) history.set(id, { state: "loading" });
  }

  function forgetConv(id) {
    convs.delete(id);
    history.delete(id);
  }

  function fmtDate(ms) {
    if (!ms) return "Unknown date";
    return new Date(ms).toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function onHistory(e) {
    if (e.customer && e.name) names.set(e.customer, e.name);
    const byConv = new Map();
    for (const m of e.items || []) {
      if (!m || !m.conv) continue;
      if (!byConv.has(m.conv)) byConv.set(m.conv, []);
      byConv.get(m.conv).push(m);
    }
    for (const list of byConv.values()) list.sort((a, b) => (a.offset || 0) - (b.offset || 0));
    const earlier = (e.convs || []).filter((ci) => ci && ci.conv && ci.conv !== e.conv);
    earlier.sort((a, b) => (b.created || 0) - (a.created || 0)); // newest first
    history.set(e.conv, { state: "ok", convs: earlier, byConv });
    if (e.conv === selected) renderHistory();
  }

  function historyError(e) {
    history.set(e.conv, { state: "error", code: e.code, message: e.message });
    if (e.conv === selected) renderHistory();
  }

  // renderHistory fills the "Earlier conversations" panel for the selected
  // conversation, asking for it first; it redraws only when the answer
  // changed, so open sections and scroll positions stay.
  function renderHistory() {
    const c = convs.get(selected);
    if (!c) return;
    askHistory(c.id);
    const h = history.get(c.id) || historyIdle;
    if (historyShown && historyShown.conv === c.id && historyShown.h === h) return;
    historyShown = { conv: c.id, h };
    ui.history.classList.toggle("history-has", h.state === "ok" && h.convs.length > 0);
    if (h.state === "loading" || h.state === "idle") ui.historyBody.setAttribute("aria-busy", "true");
    else ui.historyBody.removeAttribute("aria-busy");
    if (h.state === "ok") {
      ui.historyCount.textContent = String(h.convs.length);
      ui.historyCount.setAttribute("aria-label", h.convs.length === 1 ? "1 conversation" : h.convs.length + " conversations");
    } else {
      ui.historyCount.textContent = h.state === "error" ? "unavailable" : "…";
      ui.historyCount.removeAttribute("aria-label");
    }
    if (h.state === "idle" || h.state === "loading") {
      ui.historyBody.replaceChildren(el("p", { class: "muted small history-empty" }, h.state === "idle" ? "Earlier conversations load when the console is connected." : "Loading earlier conversations…"));
      return;
    }
    if (h.state === "error") {
      const why =
        h.code === "forbidden" || h.code === "not_participant"
          ? "only the assigned agent or a supervisor may read them."
          : h.code === "no_conversation"
            ? "this conversation no longer exists on the server."
            : h.message || h.code || "unknown error";
      ui.historyBody.replaceChildren(
        el("p", { class: "error small history-error", role: "alert" }, "Could not load earlier conversations: " + why),
        el("button", { type: "button", class: "history-retry", onclick: () => { history.delete(c.id); renderHistory(); } }, "Try again"),
      );
      return;
    }
    if (!h.convs.length) {
      ui.historyBody.replaceChildren(el("p", { class: "muted small history-empty" }, "No earlier conversations with " + (names.get(c.customer) || "this customer") + "."));
      return;
    }
    ui.historyBody.replaceChildren(
      el("ol", { class: "history-list" }, h.convs.map((ci, i) => historyEntry(ci, h.byConv.get(ci.conv) || [], i === 0))),
    );
  }

  // historyEntry is one earlier conversation: date, state, agent and its
  // transcript, read-only; the newest one starts open.
  function historyEntry(ci, msgs, open) {
    let agent = "no agent";
    if (ci.agent) {
      const m = msgs.find((x) => x.from === ci.agent && x.name);
      agent = ci.agent === me ? "you" : m ? m.name : ci.agent;
    }
    const date = fmtDate(ci.created);
    const state = ci.state || "closed";
    const list = el("ol", { class: "messages history-messages", "aria-label": "Messages of the conversation of " + date });
    if (msgs.length) {
      const items = msgs.map((m) => ({ msg: m }));
      if (msgs[0].offset > 1) items.unshift({ note: { text: "Only the last " + msgs.length + " messages are shown." } });
      renderTranscript(list, { items: () => items, loading: false }, me, {});
    } else {
      list.append(el("li", { class: "note" }, "No messages."));
    }
    return el(
      "li",
      { class: "history-conv", dataset: { conv: ci.conv } },
      el(
        "details",
        { open },
        el(
          "summary",
          { class: "history-head" },
          el("time", { class: "history-date", datetime: ci.created ? new Date(ci.created).toISOString() : null }, date),
          el("span", { class: "pill pill-" + state }, state),
          ci.tier ? tierBadge(ci.tier) : null,
          el("span", { class: "history-agent small" }, "Agent: " + agent),
          el("span", { class: "muted small" }, msgs.length === 1 ? "1 message" : msgs.length + " messages"),
        ),
        list,
      ),
    );
  }

  function renderTyping() {
    const c = convs.get(selected);
    ui.typing.textContent = c && c.typingUntil > Date.now() ? (names.get(c.customer) || "The customer") + " is typing…" : "";
  }

  // ---------- actions ----------

  function accept(o) {
    accepting = o.conv;
    send({ type: "accept", conv: o.conv, offer: o.offer });
  }

  function decline(o) {
    offers.delete(o.conv);
    send({ type: "decline", conv: o.conv, offer: o.offer });
    renderOffers();
  }

  function setPresence(p) {
    s.presence = p;
    saved.set(s);
    send({ type: "presence", state: p });
  }

  // ---------- protocol ----------

  function onEnvelope(e) {
    switch (e.type) {
      case "hello": {
        me = e.from;
        presence = e.state || "online";
        offers.clear(); // pending offers are sent again after hello
        for (const [id, h] of history) if (h.state !== "ok") history.delete(id); // asked again below
        const live = new Set();
        for (const ci of e.convs || []) {
          if (ci.agent !== me || ci.state === "resolved" || ci.state === "closed") continue;
          live.add(ci.conv);
          if (ci.name) names.set(ci.customer, ci.name);
          const existed = convs.has(ci.conv);
          const c = ensureConv(ci.conv, ci);
          c.myRead = Math.max(c.myRead, ci.read || 0);
          if (existed) c.t.reconnected(ci.offset, ci.epoch); // after a reconnect, from our last offset
          else c.t.known(ci.offset, ci.epoch);
          for (const p of c.pending) if (!p.acked) send({ type: "message", conv: c.id, id: p.id, text: p.text });
        }
        for (const c of convs.values()) {
          if (!live.has(c.id) && c.state !== "resolved" && c.state !== "closed") {
            c.state = "closed";
            c.t.note("This conversation is no longer yours (it was requeued while you were away).");
          }
        }
        if (s.presence && s.presence !== presence) send({ type: "presence", state: s.presence });
        if (!selected && live.size) selected = [...live][0];
        render();
        break;
      }
      case "presence":
        presence = e.state;
        renderPresence();
        break;
      case "offer": {
        if (e.name) names.set(e.customer, e.name);
        const total = Math.max(0, (e.expires || 0) - (e.ts || Date.now()));
        offers.set(e.conv, { ...e, received: Date.now(), total, deadline: Date.now() + total });
        renderOffers();
        renderConvs();
        break;
      }
      case "offer_expired": {
        const o = offers.get(e.conv);
        if (o) {
          offers.delete(e.conv);
          if (e.message === "timed_out") toast("The chat with " + (o.name || o.customer) + " moved on to another agent.", "");
          renderOffers();
          renderConvs();
        }
        break;
      }
      case "assigned": {
        offers.delete(e.conv);
        if (e.agent !== me) {
          renderOffers();
          break;
        }
        const fresh = !convs.has(e.conv);
        const c = ensureConv(e.conv, { customer: e.customer, tier: e.tier, state: "active" });
        c.state = "active";
        if (e.message) c.t.note(e.message.charAt(0).toUpperCase() + e.message.slice(1) + ".");
        c.t.known(e.offset, e.epoch);
        if (accepting === e.conv || !selected || !convs.has(selected)) {
          accepting = "";
          select(e.conv, true);
        } else if (fresh) {
          toast("New conversation with " + (names.get(e.customer) || e.customer) + ".", "");
        }
        renderOffers();
        renderConvs();
        break;
      }
      case "transferred": {
        const c = convs.get(e.conv);
        if (!c || e.from !== me) break;
        forgetConv(e.conv);
        toast(e.to ? "Transferred " + (names.get(c.customer) || c.customer) + " to " + e.to + "." : "Sent " + (names.get(c.customer) || c.customer) + " back to the queue.", "");
        if (selected === e.conv) selected = convs.size ? [...convs.keys()][0] : "";
        render();
        break;
      }
      case "message": {
        const c = convs.get(e.conv);
        if (!c) break;
        if (e.from === me) c.pending = c.pending.filter((p) => p.id !== e.id);
        else {
          if (e.name) names.set(e.from, e.name);
          c.typingUntil = 0;
        }
        if (!c.t.add(e) && c.id === selected) renderPane();
        break;
      }
      case "ack": {
        const c = convs.get(e.conv);
        if (!c) break;
        const p = c.pending.find((x) => x.id === e.id);
        if (p) p.acked = true;
        c.t.known(e.offset, e.epoch);
        if (c.id === selected) renderPane();
        break;
      }
      case "typing": {
        const c = convs.get(e.conv);
        if (!c || e.from === me) break;
        c.typingUntil = e.state === "on" ? Date.now() + 6000 : 0;
        renderTyping();
        break;
      }
      case "read": {
        const c = convs.get(e.conv);
        if (!c || e.from === me) break;
        if (e.offset > c.peerRead) {
          c.peerRead = e.offset;
          if (c.id === selected) renderPane();
        }
        break;
      }
      case "resolved": {
        const c = convs.get(e.conv);
        if (!c) break;
        c.state = e.state || "resolved";
        c.t.note(e.from === me ? "You resolved this conversation." : "Resolved by " + (e.from === c.customer ? "the customer" : e.from) + (e.message ? " (" + e.message + ")" : "") + ".");
        renderConvs();
        if (c.id === selected) renderPane();
        break;
      }
      case "reload": {
        const c = convs.get(e.conv);
        if (c) c.t.reload(e);
        break;
      }
      case "sync":
      case "resumed":
        // Handled by the conversation's Transcript (client.js): sync resumes
        // when its offset is above ours; resumed ends a resume batch.
        break;
      case "history":
        onHistory(e);
        break;
      case "error":
        if ((e.ref || "").split(":")[0] === "history" && e.conv) {
          historyError(e); // shown in the Earlier conversations panel
          break;
        }
        toast(e.message || e.code, "error");
        if (e.code === "offer_gone" && e.conv) {
          offers.delete(e.conv);
          renderOffers();
        }
        break;
    }
  }

  async function auth(refresh) {
    if (refresh || !s.token) {
      const r = await devToken({ user: s.user, name: s.name, role: "agent", skills: s.skills, capacity: s.capacity });
      Object.assign(s, { token: r.token, ws: r.ws, user: r.user });
      saved.set(s);
    }
    return { token: s.token, ws: s.ws, user: s.user };
  }

  function connect() {
    conn = Desk.startConnection({ auth, onEnvelope, statusNode: ui.status, onStatus: (s) => { status = s; } });
  }

  ui.loginForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    ui.loginError.hidden = true;
    const name = ui.name.value.trim();
    if (!name) return;
    const skills = ui.skills.value.split(",").map((x) => x.trim().toLowerCase()).filter(Boolean);
    const capacity = Math.max(1, parseInt(ui.capacity.value, 10) || 3);
    try {
      const r = await devToken({ name, role: "agent", skills, capacity });
      s = { name, skills, capacity, token: r.token, ws: r.ws, user: r.user, presence: "online" };
    } catch (err) {
      ui.loginError.textContent = "Could not sign in: " + err.message;
      ui.loginError.hidden = false;
      return;
    }
    me = s.user;
    saved.set(s);
    render();
    connect();
  });

  ui.presence.addEventListener("change", (ev) => {
    if (ev.target.name === "presence") setPresence(ev.target.value);
  });

  ui.composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const c = convs.get(selected);
    const text = ui.text.value.trim();
    if (!c || !text) return;
    const id = clientMessageID(me);
    c.pending.push({ id, text, acked: false });
    send({ type: "message", conv: c.id, id, text });
    typing.stop();
    ui.text.value = "";
    renderPane(true);
  });
  enterToSend(ui.text, ui.composer);
  const typing = new Typing(send);
  ui.text.addEventListener("input", () => {
    if (ui.text.value) typing.input(selected);
    else typing.stop();
  });

  ui.transferForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const to = ui.transferTo.value.trim();
    if (!to || !selected) return;
    send({ type: "transfer", conv: selected, to });
    ui.transferTo.value = "";
  });
  ui.toQueue.addEventListener("click", () => selected && send({ type: "transfer", conv: selected }));
  ui.resolve.addEventListener("click", () => selected && send({ type: "resolve", conv: selected }));
  ui.closePane.addEventListener("click", () => {
    forgetConv(selected);
    selected = convs.size ? [...convs.keys()][0] : "";
    render();
  });
  ui.signout.addEventListener("click", () => {
    if (conn) conn.stop();
    conn = null;
    saved.clear();
    s = null;
    convs.clear();
    history.clear();
    historyShown = null;
    offers.clear();
    selected = "";
    status = { state: "closed", detail: "" };
    render();
    ui.name.focus();
  });
  document.addEventListener("visibilitychange", () => sendRead(convs.get(selected)));

  setInterval(() => {
    tickOffers();
    renderTyping();
    if (status.state === "offline") renderStatus(ui.status, status.state, status.detail, conn);
  }, 250);

  if (s && s.token) {
    render();
    connect();
  } else {
    s = null;
    render();
  }
})();
