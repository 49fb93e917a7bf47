// The audit log (role security-officer; offered only to security officers, and the edge
// refuses GET /api/audit to anyone else with 403).
//
// GET /api/audit?login=&before=&limit= answers the newest entries first ({entries,
// next_before}): logins (any outcome, with the auth layer's reason), logouts, enrollments,
// password changes, ended sessions and every administrator's action, with the address, the
// method and the public session id — never a secret. The filter is the API's own (one
// login); "older entries" pages on with before=next_before. Actions and outcomes are shown
// in words, with the edge's own name as the cell's title; the rest as the edge wrote it.

import { get, query } from "./api.js";
import { field, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { methodName } from "./account.js";
import { createPage, feedback, timeOf } from "./page.js";

const PAGE = 100;

function words(prefix, value) {
  if (value === null || value === undefined) return "";
  const key = `${prefix}.${value}`;
  const text = t(key);
  return text === key ? String(value) : text;
}

const COLUMNS = ["at", "action", "outcome", "login", "actor", "address", "method", "reason"];

export function createAuditPage({ onBack }) {
  const login = h("input", {
    type: "search",
    id: "audit-login",
    autocomplete: "off",
    maxlength: "80",
  });
  const filter = h(
    "form",
    { class: "row", role: "search", id: "audit-filter", novalidate: true },
    field(t("audit.login"), login),
    h("button", { type: "submit", text: t("audit.filter") }),
  );
  const status = h("p", { class: "muted", role: "status", id: "audit-status" });
  const problems = feedback("audit-load");
  const rows = h("tbody", { id: "audit-rows" });
  const table = h(
    "table",
    { class: "audit", id: "audit-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        COLUMNS.map((c) => h("th", { scope: "col", text: t(`audit.col.${c}`) })),
      ),
    ),
    rows,
  );
  const older = h("button", {
    type: "button",
    class: "more",
    id: "audit-older",
    text: t("audit.older"),
    hidden: true,
  });
  let nextBefore = null;
  let generation = 0;
  let shown = 0;

  function row(e) {
    return h(
      "tr",
      { dataset: { id: e.id, action: e.action, outcome: e.outcome } },
      h("td", { class: "at" }, timeOf(e.at)),
      h("td", { title: e.action, text: words("audit.action", e.action) }),
      h("td", {
        class: e.outcome === "failed" ? "error" : null,
        title: e.outcome,
        text: words("audit.outcome", e.outcome),
      }),
      h("td", { class: "login", text: e.login ?? "" }),
      h("td", { class: "actor", text: e.actor ?? "" }),
      h("td", { class: "address", text: e.address ?? "" }),
      h("td", { title: e.method ?? "", text: e.method ? methodName(e.method) : "" }),
      h("td", { text: e.reason ?? "" }),
    );
  }

  async function load(append = false) {
    const mine = ++generation;
    problems.clear();
    try {
      const page = await get(
        query("/api/audit", {
          login: login.value.trim(),
          before: append ? nextBefore : undefined,
          limit: PAGE,
        }),
      );
      if (mine !== generation) return;
      nextBefore = page.next_before;
      const items = page.entries.map(row);
      if (append) rows.append(...items);
      else replace(rows, items);
      shown = (append ? shown : 0) + page.entries.length;
      status.textContent = shown ? t("audit.count", { n: shown }) : t("audit.empty");
      older.hidden = nextBefore === null;
    } catch (e) {
      if (mine === generation) problems.failed(e);
    }
  }

  filter.addEventListener("submit", (e) => {
    e.preventDefault();
    load(false);
  });
  older.addEventListener("click", () => load(true));

  const { root, title } = createPage(
    { id: "audit-page", title: t("audit.title"), onBack },
    h(
      "div",
      { class: "page-part", id: "audit-log" },
      filter,
      status,
      problems.nodes,
      h("div", { class: "table-scroll", tabIndex: 0 }, table),
      older,
    ),
  );

  return {
    root,
    show() {
      load(false);
      title.focus();
    },
    hide() {},
  };
}
