// The open conversation: its header, its history, who is typing, the composer.
//
// History is loaded newest page first (GET …/messages?limit=50, oldest first in the
// answer); "Load older" asks for ?before=<oldest loaded>. Frames add, replace (edit) or
// tombstone (delete) messages by id, so the answer to my own POST and the frame for it
// are one message. After a reconnection, ?after=<newest loaded> fetches what was missed.
// A "New messages" line marks where the unread ones began when the conversation was
// opened; while the page is visible and scrolled to the end, what is shown is marked read
// (POST …/read {up_to}), which clears the badges here and, by the "unread" frame, in my
// other tabs.

import { ApiError, del, get, patch, path, post, put, query } from "./api.js";
import { createComposer } from "./composer.js";
import { debounce, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { messageView } from "./message.js";
import * as presence from "./presence.js";
import {
  conversation,
  emit,
  isMine,
  listen,
  on,
  nameOf,
  otherLogin,
  removeConversation,
  store,
  titleOf,
  upsertConversation,
} from "./store.js";

const PAGE = 50;
const TYPING_SHOWN_MS = 7000;

export function createConversationView({ openDialog, push = null }) {
  let current = null; // conversation id
  let messages = new Map(); // id -> message
  let hasOlder = false;
  let firstUnreadId = null;
  const typists = new Map(); // login -> timer

  const title = h("h2", { id: "conversation-title", tabIndex: -1 });
  const subtitle = h("p", { class: "muted subtitle", id: "conversation-subtitle" });
  const tools = h("div", { class: "conv-tools" });
  const older = h("button", {
    type: "button",
    class: "more",
    id: "load-older",
    text: t("conv.older"),
    hidden: true,
  });
  const start = h("p", { class: "muted start", text: t("conv.start"), hidden: true });
  const list = h("ol", {
    class: "messages",
    id: "messages",
    "aria-live": "polite",
    "aria-relevant": "additions",
  });
  const scroller = h("div", { class: "history", id: "history", tabIndex: 0 }, older, start, list);
  const typingLine = h("p", { class: "typing muted", id: "typing", "aria-live": "polite" });
  const empty = h("p", { class: "empty muted", id: "no-conversation", text: t("conv.none") });

  const composer = createComposer({
    send: async (body) => {
      const message = {
        text: body.text,
        ...(body.reply_to ? { reply_to: body.reply_to } : {}),
        ...(body.attachments.length ? { attachments: body.attachments } : {}),
      };
      // over the WebSocket when it is open (no HTTP request per message), else over HTTP
      const sent =
        (push && (await push.postMessage(current, message))) ||
        (await post(path("/api/chat/conversations/", current, "/messages"), message));
      upsertMessage(sent, true);
      return sent;
    },
    save: async (message, text) => {
      upsertMessage(await patch(path("/api/chat/messages/", message.id), { text }));
    },
    editLast: () => {
      const mine = [...messages.values()].filter((m) => isMine(m) && !m.deleted);
      if (!mine.length) return false;
      composer.edit(mine[mine.length - 1]);
      return true;
    },
    members: () => conversation(current)?.members || [],
  });

  const pane = h(
    "section",
    {
      class: "conversation",
      id: "conversation",
      hidden: true,
      "aria-labelledby": "conversation-title",
    },
    h(
      "header",
      { class: "conv-header" },
      h("div", { class: "conv-title" }, title, subtitle),
      tools,
    ),
    scroller,
    typingLine,
    composer.root,
  );
  const root = h("div", { class: "conversation-pane" }, empty, pane);

  const byId = (id) => messages.get(id) || null;
  const actions = {
    reply: (m) => composer.reply(m),
    edit: (m) => composer.edit(m),
    remove: async (m) => {
      if (!window.confirm(t("msg.delete.confirm"))) return;
      try {
        upsertMessage(await del(path("/api/chat/messages/", m.id)));
        composer.forget(m.id);
      } catch (e) {
        window.alert(e.message);
      }
    },
  };

  function atBottom() {
    // not rendered (a page such as the account page is shown instead): nothing is seen
    if (!scroller.getClientRects().length) return false;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  }

  function scrollToEnd() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  function ordered() {
    return [...messages.values()].sort((a, b) => a.seq - b.seq);
  }

  function render() {
    const items = [];
    for (const m of ordered()) {
      if (m.id === firstUnreadId) {
        items.push(
          h("li", { class: "divider", id: "unread-divider", text: t("conv.new.divider") }),
        );
      }
      items.push(messageView(m, { actions, byId }));
    }
    replace(list, items);
    older.hidden = !hasOlder;
    start.hidden = hasOlder || messages.size === 0;
  }

  /** Add or replace one message; ``own`` scrolls to it (I sent it). */
  function upsertMessage(message, own = false) {
    if (message.conversation !== current) return;
    const stick = own || atBottom();
    const known = messages.has(message.id);
    messages.set(message.id, message);
    const next = ordered();
    const last = next[next.length - 1];
    if (!known && last.id === message.id) {
      list.append(messageView(message, { actions, byId }));
    } else {
      const old = document.getElementById(`m-${message.id}`);
      if (old) old.replaceWith(messageView(message, { actions, byId }));
      else render();
    }
    start.hidden = hasOlder || messages.size === 0;
    if (stick) scrollToEnd();
    markRead();
  }

  async function readNow() {
    if (!current || document.visibilityState !== "visible" || !atBottom()) return;
    const conv = conversation(current);
    const newest = ordered().pop();
    if (!conv || !newest || (!conv.unread && !conv.mentions)) return;
    try {
      const counts = await post(path("/api/chat/conversations/", current, "/read"), {
        up_to: newest.id,
      });
      const fresh = conversation(conv.id);
      if (fresh) upsertConversation({ ...fresh, ...counts });
    } catch {
      // shown unread until the next try
    }
  }
  const markRead = debounce(readNow, 400);

  function drawHeader(conv) {
    replace(title, conv.kind === "direct" ? presence.dot(otherLogin(conv)) : null, titleOf(conv));
    const kind = t(`conv.${conv.kind}`);
    const members = t("conv.members", { n: (conv.members || []).length });
    const other = otherLogin(conv);
    replace(
      subtitle,
      conv.kind === "direct" ? [presence.text(other), ` · @${other}`] : [kind, " · ", members],
      conv.topic ? h("span", { class: "topic", text: ` · ${conv.topic}` }) : null,
    );
    const folder = h(
      "select",
      { id: "conversation-folder", "aria-label": t("conv.move") },
      h("option", { value: "", text: t("conv.folder.none") }),
      store.folders.map((f) =>
        h("option", { value: f.id, text: f.name, selected: f.id === conv.folder_id }),
      ),
    );
    folder.addEventListener("change", async () => {
      upsertConversation(
        await put(path("/api/chat/conversations/", conv.id, "/folder"), {
          folder_id: folder.value || null,
        }),
      );
    });
    replace(
      tools,
      folder,
      h("button", {
        type: "button",
        id: "conversation-archive",
        text: conv.archived ? t("conv.unarchive") : t("conv.archive"),
        onclick: async () => {
          upsertConversation(
            await put(path("/api/chat/conversations/", conv.id, "/archived"), {
              archived: !conv.archived,
            }),
          );
        },
      }),
      conv.kind !== "direct"
        ? h("button", {
            type: "button",
            id: "conversation-details",
            text: t("conv.details"),
            onclick: () => openDialog("details", conv),
          })
        : null,
      conv.kind !== "direct"
        ? h("button", {
            type: "button",
            text: t("conv.add.members"),
            onclick: () => openDialog("members", conv),
          })
        : null,
      conv.kind !== "direct"
        ? h("button", {
            type: "button",
            class: "danger",
            text: t("conv.leave"),
            onclick: async () => {
              if (!window.confirm(t("conv.leave.confirm", { name: titleOf(conv) }))) return;
              await post(path("/api/chat/conversations/", conv.id, "/leave"), {});
              removeConversation(conv.id);
              close();
            },
          })
        : null,
    );
  }

  function drawTyping() {
    const names = [...typists.keys()].map(nameOf);
    typingLine.textContent = names.length
      ? t(names.length > 1 ? "conv.typing.many" : "conv.typing", { names: names.join(", ") })
      : "";
  }

  function stopTyping(login) {
    clearTimeout(typists.get(login));
    typists.delete(login);
    drawTyping();
  }

  async function open(id, { highlight = null } = {}) {
    const conv = conversation(id) || (await get(path("/api/chat/conversations/", id)));
    if (!conversation(id)) upsertConversation(conv);
    if (current !== id) {
      for (const login of [...typists.keys()]) stopTyping(login);
      current = id;
      store.currentId = id;
      messages = new Map();
      composer.setConversation(id);
      const page = await get(
        query(path("/api/chat/conversations/", id, "/messages"), { limit: PAGE }),
      );
      if (current !== id) return;
      for (const m of page.messages) messages.set(m.id, m);
      hasOlder = page.messages.length >= PAGE;
      const unread = conv.unread || 0;
      const list = ordered();
      firstUnreadId = unread > 0 && list.length ? list[Math.max(0, list.length - unread)].id : null;
      empty.hidden = true;
      pane.hidden = false;
      drawHeader(conversation(id));
      render();
      scrollToEnd();
      presence.load((conv.members || []).map((m) => m.login)).catch(() => {});
    }
    emit("opened", { id });
    if (highlight) {
      await reveal(highlight);
      markRead();
    } else {
      composer.focus();
      await readNow(); // what opening showed is read, even if the reader scrolls up at once
    }
  }

  async function loadOlder() {
    const first = ordered()[0];
    if (!current || !first) return;
    const id = current;
    const height = scroller.scrollHeight;
    const page = await get(
      query(path("/api/chat/conversations/", id, "/messages"), { before: first.id, limit: PAGE }),
    );
    if (current !== id) return;
    for (const m of page.messages) messages.set(m.id, m);
    hasOlder = page.messages.length >= PAGE;
    render();
    scroller.scrollTop = scroller.scrollHeight - height;
  }

  /** Scroll to a message (a search hit), loading older pages until it is there. */
  async function reveal(messageId) {
    for (let i = 0; i < 20 && !messages.has(messageId) && hasOlder; i += 1) await loadOlder();
    const el = document.getElementById(`m-${messageId}`);
    if (!el) return;
    el.classList.add("highlight");
    el.tabIndex = -1;
    el.scrollIntoView({ block: "center" });
    el.focus();
    setTimeout(() => el.classList.remove("highlight"), 4000);
  }

  /** After a reconnection: what was missed in the open conversation. */
  async function catchUp() {
    if (!current) return;
    const newest = ordered().pop();
    const id = current;
    const page = await get(
      query(path("/api/chat/conversations/", id, "/messages"), {
        after: newest ? newest.id : undefined,
        limit: PAGE,
      }),
    );
    if (current !== id) return;
    for (const m of page.messages) upsertMessage(m);
  }

  function close() {
    composer.setConversation(null);
    current = null;
    store.currentId = null;
    messages = new Map();
    pane.hidden = true;
    empty.hidden = false;
    emit("opened", { id: null });
  }

  const redrawHeader = () => {
    const conv = current && conversation(current);
    if (conv) drawHeader(conv);
  };
  on("folders", redrawHeader);
  on("current-changed", redrawHeader);
  older.addEventListener("click", () => loadOlder().catch((e) => window.alert(e.message)));
  scroller.addEventListener("scroll", () => {
    if (atBottom()) markRead();
  });
  listen(document, "visibilitychange", () => markRead());
  listen(window, "focus", () => markRead());
  list.addEventListener("click", (e) => {
    const quote = e.target.closest?.("a.quote");
    if (quote) {
      e.preventDefault();
      reveal(quote.dataset.replyTo);
    }
  });

  return {
    root,
    open: (id, opts) =>
      open(id, opts).catch((e) => {
        if (e instanceof ApiError && e.status === 404) {
          removeConversation(id);
          close();
        } else throw e;
      }),
    close,
    catchUp,
    get current() {
      return current;
    },
    onMessage(frame) {
      if (frame.conversation !== current) return;
      if (typists.has(frame.message.author)) stopTyping(frame.message.author);
      upsertMessage(frame.message);
    },
    onTyping(frame) {
      if (frame.conversation !== current || frame.login === store.me?.login) return;
      clearTimeout(typists.get(frame.login));
      if (frame.typing) {
        typists.set(
          frame.login,
          setTimeout(() => stopTyping(frame.login), TYPING_SHOWN_MS),
        );
        drawTyping();
      } else stopTyping(frame.login);
    },
    visibleAndAtEnd: () => current !== null && document.visibilityState === "visible" && atBottom(),
    markRead,
  };
}
