// Presence: who is online, busy, away, in a call or offline, here and at other plants.
//
// GET /api/presence?logins=… (at most 200 a call) fills the map for the people on screen;
// {"type":"presence"} frames on the site topic keep it current. Every dot on the page is a
// <span data-presence=login>; update() redraws the dots and labels of one login wherever
// they are. For a user of another plant the label says which plant and how old the news
// is ("Северный завод, 5 минут назад"): that state crossed the federation and may be late.

import { get, put, query } from "./api.js";
import { h } from "./dom.js";
import { formatAge, t } from "./i18n.js";

const STATES = new Set(["online", "busy", "away", "in_call", "offline"]);
const known = new Map(); // login -> {state, site, at_ms, age_s, received}
let mySite = null;
const siteNames = new Map();

export function configure(site, names) {
  mySite = site;
  for (const [id, name] of names || []) siteNames.set(id, name);
}

export function setSiteName(id, name) {
  if (id && name) siteNames.set(id, name);
}

export function stateOf(login) {
  return known.get(login)?.state ?? null;
}

function ageSeconds(entry) {
  if (typeof entry.age_s === "number") {
    return entry.age_s + (Date.now() - entry.received) / 1000;
  }
  if (typeof entry.at_ms === "number") return (Date.now() - entry.at_ms) / 1000;
  return null;
}

/** The label of a login's presence: state, and for another plant where and how old. */
export function label(login) {
  const entry = known.get(login);
  if (!entry) return t("presence.unknown");
  const state = t(`presence.${entry.state}`);
  if (entry.site && mySite && entry.site !== mySite) {
    const age = ageSeconds(entry);
    const site = siteNames.get(entry.site) || entry.site;
    const where = age === null ? site : t("presence.remote", { site, age: formatAge(age) });
    return `${state} (${where})`;
  }
  return state;
}

/** A dot for ``login`` (its state as the accessible label), kept current by update(). */
export function dot(login) {
  const el = h("span", { class: "presence dot", dataset: { presence: login }, role: "img" });
  draw(el, login);
  return el;
}

/** The state as text ("Online", "Away (Северный завод, 5 minutes ago)"), kept current. */
export function text(login) {
  const el = h("span", { class: "presence-label", dataset: { presence: login } });
  draw(el, login);
  return el;
}

function draw(el, login) {
  const state = stateOf(login) || "unknown";
  const words = label(login);
  el.dataset.state = state;
  if (el.classList.contains("dot")) {
    el.setAttribute("aria-label", words);
    el.title = words;
  } else {
    el.textContent = words;
  }
}

export function update(login) {
  for (const el of document.querySelectorAll(`[data-presence="${CSS.escape(login)}"]`)) {
    draw(el, login);
  }
  document.dispatchEvent(new CustomEvent("zastava:presence", { detail: { login } }));
}

/** Redraw every label (ages move on). */
export function refreshAll() {
  for (const el of document.querySelectorAll("[data-presence]")) draw(el, el.dataset.presence);
}

export async function load(logins) {
  const wanted = [...new Set(logins)].filter(Boolean);
  for (let i = 0; i < wanted.length; i += 200) {
    const chunk = wanted.slice(i, i + 200);
    const answer = await get(query("/api/presence", { logins: chunk.join(",") }));
    const received = Date.now();
    for (const p of answer.presence || []) {
      if (!STATES.has(p.state)) continue;
      known.set(p.login, { ...p, received });
      update(p.login);
    }
  }
}

/** A {"type":"presence"} frame. */
export function apply(frame) {
  if (typeof frame.login !== "string" || !STATES.has(frame.state)) return;
  known.set(frame.login, {
    login: frame.login,
    state: frame.state,
    site: frame.site,
    at_ms: frame.at_ms,
    received: Date.now(),
  });
  update(frame.login);
}

export function forget() {
  known.clear();
}

export function setMine(state) {
  return put("/api/presence", { state });
}
