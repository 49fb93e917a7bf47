// The company directory: search by name, department, plant or phone; presence of each
// person; "Message" starts (or reopens) the direct conversation with them.
//
// GET /api/directory/users?q=&department=&site=&limit=&offset= pages through the matches
// (next_offset), GET /api/directory/facets fills the two filters. The presence of the
// people listed is loaded for each page and follows the frames afterwards.

import { ApiError, get, query } from "./api.js";
import { debounce, field, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import * as presence from "./presence.js";
import { rememberName, store } from "./store.js";

const PAGE = 30;

export function createDirectory({ onMessage }) {
  const q = h("input", {
    type: "search",
    id: "directory-q",
    placeholder: t("dir.search"),
    autocomplete: "off",
  });
  const department = h("select", { id: "directory-department" });
  const site = h("select", { id: "directory-site" });
  const status = h("p", { class: "muted", role: "status", id: "directory-status" });
  const list = h("ul", { class: "people", id: "directory-results" });
  const more = h("button", { type: "button", class: "more", text: t("dir.more"), hidden: true });
  const root = h(
    "section",
    { class: "panel directory", id: "directory", "aria-label": t("nav.directory") },
    h(
      "form",
      { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      field(t("dir.search"), q),
      h(
        "div",
        { class: "row" },
        field(t("dir.department"), department),
        field(t("dir.site"), site),
      ),
    ),
    status,
    list,
    more,
  );
  let nextOffset = null;
  let generation = 0;
  let facetsLoaded = false;

  async function loadFacets() {
    if (facetsLoaded) return;
    const facets = await get("/api/directory/facets");
    facetsLoaded = true;
    replace(
      department,
      h("option", { value: "", text: t("dir.any") }),
      facets.departments.map((d) => h("option", { value: d, text: d })),
    );
    replace(
      site,
      h("option", { value: "", text: t("dir.any") }),
      facets.sites.map((s) => h("option", { value: s.id, text: s.name })),
    );
    for (const s of facets.sites) presence.setSiteName(s.id, s.name);
  }

  function person(user) {
    rememberName(user.login, user.display_name);
    presence.setSiteName(user.site, user.site_name);
    const mine = user.login === store.me?.login;
    const details = [user.department, user.site_name || user.site].filter(Boolean).join(" · ");
    return h(
      "li",
      { class: "person", dataset: { login: user.login } },
      presence.dot(user.login),
      h(
        "div",
        { class: "who" },
        h("span", { class: "name", text: user.display_name }),
        h("span", { class: "login muted", text: `@${user.login}` }),
        details ? h("span", { class: "details", text: details }) : null,
        user.phones.length
          ? h(
              "span",
              { class: "phones" },
              user.phones.map((p) => h("a", { href: `tel:${p.replace(/[^0-9+]/g, "")}`, text: p })),
            )
          : null,
        user.email ? h("span", { class: "email muted", text: user.email }) : null,
        presence.text(user.login),
      ),
      mine
        ? h("span", { class: "muted", text: t("dir.you") })
        : h("button", {
            type: "button",
            class: "write",
            text: t("dir.write"),
            "aria-label": `${t("dir.write")}: ${user.display_name}`,
            onclick: () => onMessage(user.login),
          }),
    );
  }

  async function search(append = false) {
    const mine = ++generation;
    const offset = append ? nextOffset : 0;
    try {
      await loadFacets();
      const page = await get(
        query("/api/directory/users", {
          q: q.value.trim(),
          department: department.value,
          site: site.value,
          limit: PAGE,
          offset,
        }),
      );
      if (mine !== generation) return;
      nextOffset = page.next_offset;
      const items = page.users.map(person);
      if (append) list.append(...items);
      else replace(list, items);
      status.textContent = page.total ? t("dir.total", { n: page.total }) : t("dir.empty");
      more.hidden = nextOffset === null;
      presence.load(page.users.map((u) => u.login)).catch(() => {});
    } catch (e) {
      if (mine !== generation) return;
      status.textContent =
        e instanceof ApiError ? t("error.generic", { message: e.message }) : String(e);
    }
  }

  const later = debounce(() => search(false), 250);
  q.addEventListener("input", later);
  q.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      later.cancel();
      search(false);
    }
  });
  department.addEventListener("change", () => search(false));
  site.addEventListener("change", () => search(false));
  more.addEventListener("click", () => search(true));

  return {
    root,
    show() {
      if (!list.childElementCount) search(false);
      q.focus();
    },
    refresh: () => search(false),
  };
}
