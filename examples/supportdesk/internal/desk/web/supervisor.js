// Supervisor view: queue depth and longest wait by tier, agents with
// presence and load (from stats frames), SLA warnings and breaches as they
// happen, and watching a conversation.
"use strict";

(() => {
  const { el, $, fmtDuration, fmtClockSeconds, store, devToken, renderStatus, Transcript, renderTranscript, toast, tierBadge } = Desk;
  const saved = store("supportdesk.supervisor");

  let s = saved.get(); // {token, user, name, ws}
  let conn = null;
  let me = s && s.user;
  let status = { state: "closed", detail: "" };
  let stats = null;
  let statsAt = 0;
  const slaEvents = []; // newest first
  const slaByConv = new Map(); // conv → latest SLA state
  const counts = { warning: 0, breached: 0, escalate: 0, drop: 0 };
  let watch = null; // {conv, t, info, typingUntil}

  const ui = {
    login: $("#login"), loginForm: $("#login-form"), name: $("#name"), loginError: $("#login-error"), board: $("#board"),
    who: $("#who"), status: $("#status"), updated: $("#updated"), signout: $("#signout"),
    tiers: $("#tiers tbody"), agents: $("#agents tbody"), agentCount: $("#agent-count"), noAgents: $("#no-agents"),
    sla: $("#sla"), slaCounts: $("#sla-counts"), noSla: $("#no-sla"),
    convs: $("#convs tbody"), convCount: $("#conv-count"), noConvs: $("#no-convs"),
    watch: $("#watch"), watchTitle: $("#watch-title"), watchTier: $("#watch-tier"), watchState: $("#watch-state"),
    unwatch: $("#unwatch"), transferForm: $("#transfer-form"), transferTo: $("#transfer-to"), toQueue: $("#to-queue"),
    messages: $("#messages"), typing: $("#typing"),
  };

  function send(env) {
    return conn ? conn.send(env) : false;
  }

  const customerNames = new Map(); // customer ID → name, from stats

  function customerName(id) {
    return customerNames.get(id) || id || "";
  }

  // ---------- rendering ----------

  function render() {
    renderStatus(ui.status, status.state, status.detail, conn);
    const signedIn = !!(s && s.token);
    ui.login.hidden = signedIn;
    ui.board.hidden = !signedIn;
    ui.signout.hidden = !signedIn;
    ui.who.textContent = signedIn ? s.name : "";
    if (!signedIn) return;
    renderStats();
    renderSLA();
    renderWatch();
  }

  function renderStats() {
    const st = stats || { tiers: [], agents: [], convs: [] };
    ui.updated.textContent = statsAt ? "updated " + fmtClockSeconds(statsAt) : "";
    const tiers = st.tiers && st.tiers.length ? st.tiers : ["vip", "premium", "standard"].map((tier) => ({ tier, depth: 0, longest_wait_ms: 0 }));
    ui.tiers.replaceChildren(
      ...tiers.map((t) =>
        el("tr", { class: t.depth ? "busy" : "" },
          el("th", { scope: "row" }, tierBadge(t.tier)),
          el("td", { class: "num" }, String(t.depth || 0)),
          el("td", { class: "num" }, t.depth ? fmtDuration(t.longest_wait_ms || 0) : "—"),
        ),
      ),
    );
    const agents = st.agents || [];
    ui.agentCount.textContent = agents.length ? String(agents.filter((a) => a.presence === "online").length) + " online" : "";
    ui.noAgents.hidden = agents.length > 0;
    ui.agents.replaceChildren(
      ...agents.map((a) => {
        const pct = a.capacity ? Math.min(100, (100 * a.load) / a.capacity) : 0;
        return el("tr", {},
          el("th", { scope: "row" }, el("code", {}, a.id)),
          el("td", {}, el("span", { class: "presence presence-" + a.presence }, a.presence)),
          el("td", {},
            el("div", { class: "load", title: a.load + " of " + a.capacity },
              el("div", { class: "load-bar" + (a.load >= a.capacity ? " full" : ""), style: "width:" + pct.toFixed(0) + "%" }),
            ),
            el("span", { class: "small" }, a.load + " / " + a.capacity),
          ),
        );
      }),
    );
    const convs = st.convs || [];
    ui.convCount.textContent = convs.length ? String(convs.length) : "";
    ui.noConvs.hidden = convs.length > 0;
    Desk.reconcile(
      ui.convs,
      convs,
      (c) => c.conv,
      (c) => [c.name, c.customer, c.tier, c.state, c.agent, c.offset, slaByConv.get(c.conv), watch && watch.conv === c.conv].join("|"),
      (c) => {
        const sla = slaByConv.get(c.conv);
        const watching = !!(watch && watch.conv === c.conv);
        return el("tr", { class: (sla ? "sla-" + sla : "") + (watching ? " watching" : "") },
          el("th", { scope: "row" }, c.name || c.customer, el("div", { class: "muted small mono" }, c.conv)),
          el("td", {}, tierBadge(c.tier)),
          el("td", {}, el("span", { class: "pill pill-" + c.state }, c.state), sla ? el("span", { class: "badge sla-badge sla-" + sla }, sla) : null),
          el("td", {}, c.agent ? el("code", {}, c.agent) : el("span", { class: "muted" }, "—")),
          el("td", { class: "num" }, String(c.offset || 0)),
          el("td", {},
            el("button", { type: "button", class: "watch-btn", dataset: { watch: c.conv, focusKey: "w-" + c.conv }, "aria-pressed": watching ? "true" : "false", onclick: () => (watching ? unwatch() : startWatch(c.conv)) }, watching ? "Watching" : "Watch"),
          ),
        );
      },
    );
  }

  function renderSLA() {
    ui.noSla.hidden = slaEvents.length > 0;
    const parts = [];
    if (counts.warning) parts.push(counts.warning + " warning" + (counts.warning > 1 ? "s" : ""));
    if (counts.breached) parts.push(counts.breached + " breached");
    if (counts.escalate + counts.drop) parts.push(counts.escalate + counts.drop + " queue deadline" + (counts.escalate + counts.drop > 1 ? "s" : ""));
    ui.slaCounts.textContent = parts.join(" · ");
    const kinds = { first_response: "first response", next_response: "next response", queue_wait: "queue wait" };
    ui.sla.replaceChildren(
      ...slaEvents.slice(0, 50).map((e) =>
        el("li", { class: "sla-item sla-" + e.state },
          el("span", { class: "badge sla-badge sla-" + e.state }, e.state),
          " ",
          el("strong", {}, kinds[e.kind] || e.kind),
          " ",
          tierBadge(e.tier),
          " ",
          el("span", {}, customerName(e.customer)),
          e.agent ? el("span", { class: "muted" }, " → " + e.agent) : null,
          el("div", { class: "muted small" },
            fmtClockSeconds(e.ts),
            e.due ? (e.state === "warning" ? " · due in " + fmtDuration(e.due - e.ts) : " · was due " + fmtClockSeconds(e.due)) : "",
            " · ",
            el("button", { type: "button", class: "link small", onclick: () => startWatch(e.conv) }, "watch " + e.conv),
          ),
        ),
      ),
    );
  }

  function renderWatch() {
    ui.watch.hidden = !watch;
    if (!watch) return;
    const info = (stats && (stats.convs || []).find((c) => c.conv === watch.conv)) || watch.info || {};
    ui.watchTitle.textContent = "Watching " + (info.name || info.customer || watch.conv);
    ui.watchTier.replaceChildren(tierBadge(info.tier));
    ui.watchState.textContent = info.state || "";
    ui.watchState.className = "pill pill-" + (info.state || "");
    renderTranscript(ui.messages, watch.t, me, {});
    ui.typing.textContent = watch.typingUntil > Date.now() ? watch.typingWho + " is typing…" : "";
  }

  // ---------- actions ----------

  function startWatch(conv) {
    if (watch && watch.conv === conv) return;
    if (watch) send({ type: "unwatch", conv: watch.conv });
    const w = { conv, info: null, typingUntil: 0, typingWho: "" };
    w.t = new Transcript(conv, { send, onChange: () => watch === w && renderWatch() });
    watch = w;
    send({ type: "watch", conv });
    render();
    ui.watch.scrollIntoView({ block: "nearest" });
  }

  function unwatch() {
    if (!watch) return;
    send({ type: "unwatch", conv: watch.conv });
    watch = null;
    render();
  }

  // ---------- protocol ----------

  function onEnvelope(e) {
    switch (e.type) {
      case "hello":
        me = e.from;
        if (watch) {
          // Watching is per connection on the server: ask again, then resume.
          send({ type: "watch", conv: watch.conv });
        }
        break;
      case "stats":
        stats = e;
        statsAt = Date.now();
        let named = false;
        for (const c of e.convs || []) {
          if (c.name && !customerNames.has(c.customer)) {
            customerNames.set(c.customer, c.name);
            named = true;
          }
        }
        if (named && slaEvents.length) renderSLA();
        renderStats();
        if (watch) renderWatch();
        break;
      case "sla": {
        slaEvents.unshift(e);
        if (slaEvents.length > 200) slaEvents.pop();
        if (counts[e.state] !== undefined) counts[e.state]++;
        slaByConv.set(e.conv, e.state);
        renderSLA();
        renderStats();
        break;
      }
      case "watch":
        if (!watch || watch.conv !== e.conv) break;
        watch.info = { conv: e.conv, state: e.state, agent: e.agent, customer: e.customer, tier: e.tier };
        watch.t.reconnected(e.offset, e.epoch);
        renderWatch();
        break;
      case "unwatch":
        break;
      case "message":
        if (watch && e.conv === watch.conv) {
          watch.typingUntil = 0;
          watch.t.add(e);
        }
        break;
      case "typing":
        if (watch && e.conv === watch.conv) {
          watch.typingUntil = e.state === "on" ? Date.now() + 6000 : 0;
          watch.typingWho = e.from;
          renderWatch();
        }
        break;
      case "assigned":
      case "transferred":
      case "resolved":
        if (watch && e.conv === watch.conv) {
          const what = e.type === "assigned" ? "Assigned to " + (e.name || e.agent) + "." : e.type === "resolved" ? "Conversation " + (e.state || "resolved") + "." : e.state === "queued" ? "Sent back to the queue." : "Transferred to " + e.to + ".";
          watch.t.note(what);
          watch.t.known(e.offset, e.epoch);
        }
        break;
      case "reload":
        if (watch && e.conv === watch.conv) watch.t.reload(e);
        break;
      case "error":
        toast(e.message || e.code, "error");
        if (watch && e.conv === watch.conv && (e.code === "no_conversation" || e.code === "not_participant")) {
          watch = null;
          render();
        }
        break;
    }
  }

  async function auth(refresh) {
    if (refresh || !s.token) {
      const r = await devToken({ user: s.user, name: s.name, role: "supervisor" });
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
    try {
      const r = await devToken({ name, role: "supervisor" });
      s = { name, token: r.token, ws: r.ws, user: r.user };
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
  ui.unwatch.addEventListener("click", unwatch);
  ui.transferForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const to = ui.transferTo.value.trim();
    if (!to || !watch) return;
    send({ type: "transfer", conv: watch.conv, to });
    ui.transferTo.value = "";
  });
  ui.toQueue.addEventListener("click", () => watch && send({ type: "transfer", conv: watch.conv }));
  ui.signout.addEventListener("click", () => {
    if (conn) conn.stop();
    conn = null;
    saved.clear();
    s = null;
    watch = null;
    stats = null;
    status = { state: "closed", detail: "" };
    render();
    ui.name.focus();
  });

  setInterval(() => {
    if (status.state === "offline") renderStatus(ui.status, status.state, status.detail, conn);
    if (watch && watch.typingUntil) renderWatch();
  }, 1000);

  if (s && s.token) {
    render();
    connect();
  } else {
    s = null;
    render();
  }
})();
