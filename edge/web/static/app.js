// The web client's entry point (loaded by index.html as an ES module).
//
// GET /api/me decides: 401 → the login screen; a session → the main view. The main view
// is a top bar (connection, my presence, language, logout), a side panel with three tabs
// (chats, directory, search) and the open conversation. Frames from /api/ws are routed to
// the store and the views; after a reconnection the page catches up over HTTP (the
// conversation list, the open conversation's newer messages, the presence on screen).
// Key presses, clicks and focus tell the edge the user is active (throttled in push.js).
// The top bar also opens pages shown in the main area instead of the conversation: the
// account page (everyone, #account), administration (role admin, #admin) and the audit
// log (role security-officer, #audit); a page the user's roles do not allow is not built.

import { createAccountPage } from "./account.js";
import { createAdminPage } from "./admin.js";
import { ApiError, get, path, post, setCsrf, setUnauthorizedHandler } from "./api.js";
import { createAuditPage } from "./audit.js";
import { createCalls } from "./calls.js";
import { createConversationView } from "./conversation.js";
import { createConversationList, loadConversations } from "./conversations.js";
import { createDialogs } from "./dialogs.js";
import { createDirectory } from "./directory.js";
import { byId, h, replace } from "./dom.js";
import { LANGUAGES, lang, setLanguage, t } from "./i18n.js";
import { showLogin } from "./login.js";
import * as presence from "./presence.js";
import { Push } from "./push.js";
import { createSearch } from "./search.js";
import {
  conversation,
  emit,
  listen,
  rememberName,
  removeConversation,
  reset,
  store,
  upsertConversation,
} from "./store.js";

const root = byId("app");
let session = null; // {push, timers, views} while logged in

function wsUrl() {
  const url = new URL("/api/ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function loginScreen(notice) {
  document.title = t("app.title");
  showLogin(
    root,
    (result) => {
      // after a recovery-code login: how many codes are left
      const left = result.recovery_codes_left;
      start(typeof left === "number" ? t("login.codes.left", { n: left }) : null);
    },
    notice,
  );
}

function ended() {
  if (!session) return;
  stop();
  loginScreen(t("login.ended"));
}

function stop() {
  if (!session) return;
  session.views.calls?.close(); // camera and microphone off, connections closed
  session.push.stop();
  for (const timer of session.timers) clearInterval(timer);
  session = null;
  setCsrf(null);
  reset();
  presence.forget();
}

async function logout() {
  if (!session) return;
  try {
    session.views.conversation.close(); // ends my typing indicator
    await session.views.calls?.leave(); // hangs up a call this page is in
    await session.push.stop();
    await post("/api/logout");
  } catch {
    // the session is gone either way
  }
  stop();
  history.replaceState(null, "", window.location.pathname);
  loginScreen(null);
}

function topBar(push, pageButtons = []) {
  const status = h("span", { class: "connection", id: "connection", role: "status" });
  push.addEventListener("state", (e) => {
    const { state } = e.detail;
    status.dataset.state = state;
    status.textContent =
      state === "open" ? "" : state === "connecting" ? t("push.connecting") : t("push.offline");
  });
  const select = h(
    "select",
    { id: "presence-select", "aria-label": t("presence.label") },
    ["online", "busy", "away"].map((s) => h("option", { value: s, text: t(`presence.${s}`) })),
  );
  select.addEventListener("change", async () => {
    try {
      await presence.setMine(select.value);
    } catch (e) {
      window.alert(e.message);
    }
  });
  listen(document, "zastava:presence", (e) => {
    if (e.detail.login !== store.me.login) return;
    const state = presence.stateOf(store.me.login);
    if (["online", "busy", "away"].includes(state)) select.value = state;
  });
  const language = h(
    "select",
    { id: "language", "aria-label": t("lang.label") },
    Object.entries(LANGUAGES).map(([code, name]) =>
      h("option", { value: code, text: name, selected: code === lang }),
    ),
  );
  language.addEventListener("change", () => {
    setLanguage(language.value);
    window.location.reload();
  });
  const me = store.me;
  return h(
    "header",
    { class: "topbar" },
    h("a", { class: "skip", href: "#composer", text: t("app.skip") }),
    h("span", { class: "brand", text: t("app.title") }),
    status,
    h(
      "span",
      { class: "me" },
      presence.dot(me.login),
      h("span", { class: "me-name", id: "me-name", text: me.display_name || me.login }),
    ),
    select,
    language,
    pageButtons,
    h("button", { type: "button", id: "logout", text: t("nav.logout"), onclick: logout }),
  );
}

function tabs(panels) {
  const buttons = panels.map(([key, label, panel]) =>
    h("button", {
      type: "button",
      role: "tab",
      id: `tab-${key}`,
      "aria-controls": panel.root.id,
      text: label,
      onclick: () => select(key),
    }),
  );
  function select(key) {
    panels.forEach(([k, , panel], i) => {
      const on = k === key;
      buttons[i].setAttribute("aria-selected", String(on));
      buttons[i].tabIndex = on ? 0 : -1;
      panel.root.hidden = !on;
      if (on) panel.show?.();
    });
  }
  const bar = h("div", { class: "tabs", role: "tablist" }, buttons);
  bar.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    const next = buttons[(i + (e.key === "ArrowRight" ? 1 : buttons.length - 1)) % buttons.length];
    next.focus();
    next.click();
  });
  for (const [, , panel] of panels) panel.root.setAttribute("role", "tabpanel");
  return { bar, select };
}

function onFrame(frame, views) {
  switch (frame.type) {
    case "message":
    case "message_edited":
    case "message_deleted": {
      const m = frame.message;
      if (!m || typeof frame.conversation !== "string") return;
      const conv = conversation(frame.conversation);
      if (!conv) {
        get(path("/api/chat/conversations/", frame.conversation))
          .then(upsertConversation)
          .catch(() => {});
        return;
      }
      const update = { ...conv };
      if (frame.type === "message") {
        if (!conv.last_message || m.seq >= (conv.last_message.seq ?? 0)) update.last_message = m;
        const fresh = m.author !== store.me.login && m.id !== conv.last_message?.id;
        if (fresh) {
          update.unread = (conv.unread || 0) + 1;
          if ((m.mentions || []).includes(store.me.login))
            update.mentions = (conv.mentions || 0) + 1;
        }
      } else if (conv.last_message?.id === m.id) {
        update.last_message = m;
      }
      if (m.author_name) rememberName(m.author, m.author_name);
      upsertConversation(update);
      views.conversation.onMessage(frame);
      return;
    }
    case "conversation":
      if (frame.conversation && typeof frame.conversation.id === "string") {
        upsertConversation(frame.conversation);
      }
      return;
    case "conversation_left":
      // I left or was removed (another tab, an owner): not listed, closed if open
      if (typeof frame.conversation !== "string") return;
      if (views.conversation.current === frame.conversation) views.conversation.close();
      removeConversation(frame.conversation);
      return;
    case "unread": {
      const conv = conversation(frame.conversation);
      if (conv) upsertConversation({ ...conv, unread: frame.unread, mentions: frame.mentions });
      return;
    }
    case "typing":
      views.conversation.onTyping(frame);
      return;
    case "presence":
      presence.apply(frame);
      return;
    case "presence_many": // several changes at once (a shift starting)
      if (Array.isArray(frame.presence)) for (const p of frame.presence) presence.apply(p);
      return;
    case "directory.changed":
      views.directory.refresh();
      return;
    default:
      // hello, subscribed, and anything newer than this page
      return;
  }
}

/** A dismissible line above the conversation (null: none). */
function banner(text) {
  if (!text) return null;
  const el = h(
    "p",
    { class: "notice banner", id: "notice", role: "status" },
    h("span", { text }),
    h("button", {
      type: "button",
      class: "link",
      text: t("dialog.close"),
      onclick: () => el.remove(),
    }),
  );
  return el;
}

async function catchUp(views) {
  await loadConversations();
  await views.conversation.catchUp();
  const shown = [...document.querySelectorAll("[data-presence]")].map((el) => el.dataset.presence);
  await presence.load(shown);
}

async function start(notice = null) {
  let me;
  try {
    me = await get("/api/me");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return loginScreen(null);
    const retry = h("button", { type: "button", class: "primary", text: t("app.retry") });
    retry.addEventListener("click", () => start());
    replace(
      root,
      h(
        "main",
        { class: "centered" },
        h("div", { class: "card" }, h("p", { class: "error", text: e.message }), retry),
      ),
    );
    retry.focus();
    return;
  }
  setCsrf(me.csrf_token);
  store.me = me;
  rememberName(me.login, me.display_name);
  presence.configure(me.site);
  const push = new Push(wsUrl());
  const views = {};
  session = { push, timers: [], views };

  const openConversation = (id, messageId = null) => {
    showPage(null, false);
    history.replaceState(null, "", `#c=${encodeURIComponent(id)}`);
    return views.conversation
      .open(id, { highlight: messageId })
      .catch((e) => window.alert(e.message));
  };
  const dialogs = createDialogs({ onCreated: (id) => openConversation(id) });
  views.conversation = createConversationView({ openDialog: dialogs.open, push });
  views.list = createConversationList({ onOpen: openConversation, openDialog: dialogs.open });
  views.directory = createDirectory({
    onMessage: async (login) => {
      try {
        const conv = await post("/api/chat/direct", { with: login });
        upsertConversation(conv);
        nav.select("chats");
        await openConversation(conv.id);
      } catch (e) {
        window.alert(e.message);
      }
    },
  });
  views.search = createSearch({ onOpen: openConversation });
  views.calls = createCalls({ push });

  // pages in the main area instead of the conversation; null: the conversation
  const back = () => showPage(null);
  const pages = { account: createAccountPage({ onBack: back, onLogout: logout }) };
  if (me.roles.includes("admin")) pages.admin = createAdminPage({ onBack: back });
  if (me.roles.includes("security-officer")) pages.audit = createAuditPage({ onBack: back });
  const pageButtons = Object.fromEntries(
    Object.keys(pages).map((key) => [
      key,
      h("button", {
        type: "button",
        id: `nav-${key}`,
        text: t(`nav.${key}`),
        onclick: () => showPage(key),
      }),
    ]),
  );
  let currentPage = null;
  function showPage(key, focus = true) {
    const wanted = Object.hasOwn(pages, key ?? "") ? key : null;
    if (currentPage && currentPage !== wanted) pages[currentPage].hide();
    currentPage = wanted;
    for (const [k, page] of Object.entries(pages)) page.root.hidden = k !== wanted;
    for (const [k, button] of Object.entries(pageButtons)) {
      if (k === wanted) button.setAttribute("aria-current", "page");
      else button.removeAttribute("aria-current");
    }
    views.conversation.root.hidden = wanted !== null;
    if (wanted) {
      history.replaceState(null, "", `#${wanted}`);
      pages[wanted].show();
      return;
    }
    const open = views.conversation.current;
    const url = open ? `#c=${encodeURIComponent(open)}` : window.location.pathname;
    history.replaceState(null, "", url);
    views.conversation.markRead(); // what arrived while a page was shown, if now seen
    if (focus) (open ? byId("conversation-title") : byId("tab-chats"))?.focus();
  }
  views.list.show = () => {};
  const nav = tabs([
    ["chats", t("nav.chats"), views.list],
    ["directory", t("nav.directory"), views.directory],
    ["search", t("nav.search"), views.search],
  ]);

  replace(
    root,
    h(
      "div",
      { class: "layout" },
      topBar(push, Object.values(pageButtons)),
      h(
        "aside",
        { class: "sidebar" },
        nav.bar,
        views.list.root,
        views.directory.root,
        views.search.root,
      ),
      h(
        "main",
        { class: "main", id: "main" },
        banner(notice),
        views.conversation.root,
        Object.values(pages).map((page) => page.root),
      ),
      dialogs.root,
      views.calls.root,
    ),
  );
  nav.select("chats");
  views.calls.mount(); // call buttons in the directory and the conversation header

  push.addEventListener("frame", (e) => onFrame(e.detail, views));
  push.addEventListener("ended", ended);
  push.addEventListener("state", (e) => {
    if (e.detail.state === "open" && e.detail.reconnected) catchUp(views).catch(() => {});
    if (e.detail.state === "closed") get("/api/me").catch(() => {}); // 401 → ended()
  });
  push.start();

  const active = () => push.activity();
  for (const type of ["keydown", "pointerdown", "focus"]) listen(window, type, active, true);
  session.timers.push(setInterval(() => presence.refreshAll(), 30_000));

  try {
    await loadConversations();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) window.alert(e.message);
  }
  const partners = [...store.conversations.values()].flatMap((c) =>
    (c.members || []).map((m) => m.login),
  );
  presence.load([me.login, ...partners]).catch(() => {});
  const route = () => {
    const hash = window.location.hash;
    const wanted = /^#c=(.+)$/.exec(hash);
    if (wanted) openConversation(decodeURIComponent(wanted[1]));
    else if (Object.hasOwn(pages, hash.slice(1))) showPage(hash.slice(1));
  };
  route();
  listen(window, "hashchange", route);
  emit("ready");
}

setUnauthorizedHandler(() => ended());
start();
