// One message as a list item: author, time, the message it answers, its text with
// @mentions marked, its attachments (download links), "edited", and the actions (reply;
// edit and delete for my own). Text is split into text nodes and <span>s for mentions:
// whatever the text holds, it stays text (W1).

import { path } from "./api.js";
import { h } from "./dom.js";
import { formatFullTime, formatSize, formatTime, t } from "./i18n.js";
import { isMine, nameOf, store } from "./store.js";

const MENTION = /@([\p{L}\p{N}._-]+)/gu;

/** Text nodes and mention spans for ``text``; ``mentions`` are the logins the server found. */
export function richText(text, mentions = []) {
  const wanted = new Set(mentions);
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(MENTION)) {
    const login = match[1].replace(/[._-]+$/, "");
    if (!wanted.has(login)) continue;
    if (match.index > at) parts.push(text.slice(at, match.index));
    const me = login === store.me?.login;
    parts.push(
      h("span", {
        class: me ? "mention me" : "mention",
        title: nameOf(login),
        text: `@${login}`,
      }),
    );
    at = match.index + 1 + login.length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return parts;
}

function attachmentView(a) {
  const size = formatSize(a.size);
  if (!a.available) {
    return h(
      "li",
      { class: "attachment unavailable" },
      h("span", { class: "file-name", text: a.name }),
      h("span", { class: "muted", text: ` (${size}, ${t("msg.attachment.unavailable")})` }),
    );
  }
  return h(
    "li",
    { class: "attachment" },
    h(
      "a",
      {
        href: path("/api/chat/attachments/", a.id),
        download: a.name,
        class: "file",
        "aria-label": t("msg.download", { name: a.name }),
        dataset: { attachment: a.id },
      },
      h("span", { class: "file-name", text: a.name }),
    ),
    h("span", { class: "muted", text: ` (${size})` }),
  );
}

function quote(message, byId) {
  if (!message.reply_to) return null;
  const original = byId(message.reply_to);
  const text = original
    ? original.deleted
      ? t("msg.deleted")
      : original.text
    : t("msg.reply.unknown");
  return h(
    "a",
    {
      class: "quote",
      href: `#m-${message.reply_to}`,
      dataset: { replyTo: message.reply_to },
    },
    original
      ? h("span", { class: "author", text: original.author_name || nameOf(original.author) })
      : null,
    h("span", { class: "quote-text", text: text.length > 140 ? `${text.slice(0, 140)}…` : text }),
  );
}

/**
 * The <li> for ``message``. ``actions`` has reply(message), edit(message), remove(message);
 * ``byId`` finds another loaded message (for the quote of a reply).
 */
export function messageView(message, { actions, byId }) {
  const mine = isMine(message);
  const mentionsMe = (message.mentions || []).includes(store.me?.login);
  const body = message.deleted
    ? h("p", { class: "text deleted", text: t("msg.deleted") })
    : h("p", { class: "text" }, richText(message.text, message.mentions));
  const buttons = message.deleted
    ? null
    : h(
        "div",
        { class: "msg-actions" },
        h("button", {
          type: "button",
          class: "reply",
          text: t("msg.reply"),
          onclick: () => actions.reply(message),
        }),
        mine
          ? h("button", {
              type: "button",
              class: "edit",
              text: t("msg.edit"),
              onclick: () => actions.edit(message),
            })
          : null,
        mine
          ? h("button", {
              type: "button",
              class: "delete",
              text: t("msg.delete"),
              onclick: () => actions.remove(message),
            })
          : null,
      );
  return h(
    "li",
    {
      class: [
        "message",
        mine && "mine",
        mentionsMe && "mentions-me",
        message.deleted && "is-deleted",
      ],
      id: `m-${message.id}`,
      dataset: { id: message.id, seq: message.seq, author: message.author },
    },
    h(
      "div",
      { class: "meta" },
      h("span", { class: "author", text: message.author_name || nameOf(message.author) }),
      h("time", {
        datetime: new Date(message.sent_ms).toISOString(),
        title: formatFullTime(message.sent_ms),
        text: formatTime(message.sent_ms),
      }),
      message.edited_ms && !message.deleted
        ? h("span", {
            class: "edited muted",
            title: formatFullTime(message.edited_ms),
            text: `(${t("msg.edited")})`,
          })
        : null,
    ),
    quote(message, byId),
    body,
    message.attachments?.length && !message.deleted
      ? h("ul", { class: "attachments" }, message.attachments.map(attachmentView))
      : null,
    buttons,
  );
}
