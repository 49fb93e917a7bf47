// Search across the history of every conversation I am in (GET /api/chat/search?q=).
// A hit opens its conversation scrolled to the message.

import { get, query } from "./api.js";
import { h, replace } from "./dom.js";
import { formatTime, t } from "./i18n.js";
import { richText } from "./message.js";
import { conversation, nameOf, titleOf } from "./store.js";

export function createSearch({ onOpen }) {
  const q = h("input", {
    type: "search",
    id: "search-q",
    placeholder: t("search.placeholder"),
    "aria-label": t("search.placeholder"),
    autocomplete: "off",
  });
  const status = h("p", { class: "muted", role: "status", id: "search-status" });
  const list = h("ul", { class: "results", id: "search-results" });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    h("div", { class: "row" }, q, h("button", { type: "submit", text: t("search.submit") })),
  );
  const root = h(
    "section",
    { class: "panel search", id: "search", "aria-label": t("nav.search") },
    form,
    status,
    list,
  );
  let generation = 0;

  function hit(m) {
    const conv = conversation(m.conversation);
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "hit",
          dataset: { message: m.id, conversation: m.conversation },
          onclick: () => onOpen(m.conversation, m.id),
        },
        h(
          "span",
          { class: "meta" },
          h("span", { class: "author", text: m.author_name || nameOf(m.author) }),
          " ",
          conv
            ? h("span", { class: "muted", text: t("search.in", { name: titleOf(conv) }) })
            : null,
          " ",
          h("time", { class: "muted", text: formatTime(m.sent_ms) }),
        ),
        h("span", { class: "text" }, richText(m.text, m.mentions)),
      ),
    );
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const words = q.value.trim();
    if (!words) return;
    const mine = ++generation;
    status.textContent = "…";
    try {
      const answer = await get(query("/api/chat/search", { q: words, limit: 50 }));
      if (mine !== generation) return;
      const hits = answer.messages.filter((m) => !m.deleted);
      replace(list, hits.map(hit));
      status.textContent = hits.length ? "" : t("search.empty");
    } catch (err) {
      if (mine === generation) status.textContent = err.message;
    }
  });

  return { root, show: () => q.focus() };
}
