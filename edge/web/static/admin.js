// The administration page (role admin; the top bar offers it only to administrators, and
// the edge refuses its calls to anyone else with 403).
//
// GET /api/admin/accounts?q=&after=&limit= lists accounts in login order, a page at a time
// (next_after), searching the login and the directory's display name; each answer is an
// AccountView {login, display_name, enabled, roles, totp_enrolled, failures, locked_until,
// sessions}. One account at a time is open below the list, with what can be done to it:
// POST …/disable (its sessions and WebSockets end at once) or …/enable, …/unlock (lift a
// lockout after failed logins), …/reset-totp (lost phone: the next login enrolls again),
// PUT …/roles {roles}, POST …/password {password} (its sessions end). POST
// /api/admin/accounts {login, roles, password?} creates one. Each change answers the
// account as it now is, which is drawn again (focus kept on the control that was used).
// Display names come from the directory, which anyone upstream may have typed: text only.

import { get, path, post, put, query } from "./api.js";
import { byId, field, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { methodName, roleName } from "./account.js";
import { createPage, feedback, part, timeOf } from "./page.js";
import { store } from "./store.js";

const PAGE = 50;
const ROLES = ["user", "admin", "security-officer"];

function roleBoxes(prefix, checked) {
  return h(
    "fieldset",
    { class: "roles", id: `${prefix}-roles` },
    h("legend", { text: t("admin.roles") }),
    ROLES.map((role) =>
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          id: `${prefix}-role-${role}`,
          name: `${prefix}-role`,
          value: role,
          checked: checked.includes(role),
        }),
        ` ${roleName(role)}`,
      ),
    ),
  );
}

function checkedRoles(box) {
  return [...box.querySelectorAll("input[type=checkbox]")]
    .filter((input) => input.checked)
    .map((input) => input.value);
}

function isLocked(view) {
  return view.locked_until !== null && Date.parse(view.locked_until) > Date.now();
}

export function createAdminPage({ onBack }) {
  // The list
  const q = h("input", { type: "search", id: "account-q", autocomplete: "off" });
  const listStatus = h("p", { class: "muted", role: "status", id: "accounts-status" });
  const list = h("ul", { class: "accounts", id: "account-list" });
  const more = h("button", {
    type: "button",
    class: "more",
    id: "accounts-more",
    text: t("admin.more"),
    hidden: true,
  });
  const listFeedback = feedback("accounts-load");
  const search = h(
    "form",
    { class: "row", role: "search", id: "account-search", novalidate: true },
    field(t("admin.search"), q),
    h("button", { type: "submit", text: t("admin.search.submit") }),
  );
  let nextAfter = null;
  let generation = 0;
  let shown = 0;

  function badges(view) {
    return [
      view.enabled ? null : h("span", { class: "tag off", text: t("admin.disabled") }),
      isLocked(view) ? h("span", { class: "tag off", text: t("admin.locked") }) : null,
      view.totp_enrolled ? null : h("span", { class: "tag", text: t("admin.no.totp") }),
      view.roles
        .filter((r) => r !== "user")
        .map((r) => h("span", { class: "tag role", text: roleName(r) })),
    ];
  }

  function item(view) {
    return h(
      "li",
      {
        class: ["account", !view.enabled && "disabled"],
        dataset: { login: view.login },
      },
      h(
        "button",
        {
          type: "button",
          class: "account-open",
          "aria-label": t("admin.open", { login: view.login }),
          onclick: () => open(view),
        },
        h("span", { class: "login", text: view.login }),
        view.display_name ? h("span", { class: "name", text: view.display_name }) : null,
        h("span", { class: "tags" }, badges(view)),
      ),
    );
  }

  async function load(append = false) {
    const mine = ++generation;
    listFeedback.clear();
    try {
      const page = await get(
        query("/api/admin/accounts", {
          q: q.value.trim(),
          after: append ? nextAfter : undefined,
          limit: PAGE,
        }),
      );
      if (mine !== generation) return;
      nextAfter = page.next_after;
      const items = page.accounts.map(item);
      if (append) list.append(...items);
      else replace(list, items);
      shown = (append ? shown : 0) + page.accounts.length;
      listStatus.textContent = shown ? t("admin.count", { n: shown }) : t("admin.empty");
      more.hidden = nextAfter === null;
    } catch (e) {
      if (mine === generation) listFeedback.failed(e);
    }
  }

  search.addEventListener("submit", (e) => {
    e.preventDefault();
    load(false);
  });
  more.addEventListener("click", () => load(true));

  /** The list's entry for ``view`` drawn again (after a change). */
  function redrawItem(view) {
    const old = list.querySelector(`li[data-login="${CSS.escape(view.login)}"]`);
    if (old) old.replaceWith(item(view));
  }

  // One account
  const detail = h("div", { class: "account-detail", id: "account-detail" });
  const detailFeedback = feedback("account");
  const detailPart = part("account-detail-part", "", detail, detailFeedback.nodes);
  detailPart.hidden = true;
  const detailTitle = detailPart.querySelector("h3");

  function facts(view) {
    const sessions = view.sessions.length
      ? h(
          "ul",
          { class: "plain", id: "account-sessions" },
          view.sessions.map((s) =>
            h(
              "li",
              {},
              `${s.address || t("sessions.address.unknown")} · ${methodName(s.method)} · `,
              timeOf(s.last_seen, "sessions.seen"),
            ),
          ),
        )
      : t("admin.no.sessions");
    const rows = [
      [t("admin.status"), view.enabled ? t("admin.enabled") : t("admin.disabled")],
      [t("admin.roles"), view.roles.map(roleName).join(", ") || "—"],
      [t("admin.totp"), view.totp_enrolled ? t("admin.totp.yes") : t("admin.totp.no")],
      [t("admin.failures"), String(view.failures)],
      [
        t("admin.lock"),
        isLocked(view) ? timeOf(view.locked_until, "admin.locked.until") : t("admin.not.locked"),
      ],
      [t("admin.sessions"), sessions],
    ];
    return h(
      "dl",
      { class: "facts", id: "account-facts" },
      rows.map(([label, value]) => [h("dt", { text: label }), h("dd", {}, value)]),
    );
  }

  /** Run one change on the open account; ``done`` names it in the status line. */
  async function change(call, done, control) {
    detailFeedback.clear();
    const focused = document.activeElement?.id;
    if (control) control.disabled = true;
    try {
      const updated = await call();
      draw(updated);
      redrawItem(updated);
      detailFeedback.done(t(done, { login: updated.login }));
      if (focused) byId(focused)?.focus();
      return true;
    } catch (e) {
      detailFeedback.failed(e);
      if (control) control.disabled = false;
      return false;
    }
  }

  function draw(view) {
    const at = (suffix) => path("/api/admin/accounts/", view.login, suffix);
    replace(
      detailTitle,
      view.login,
      view.display_name ? h("span", { class: "muted", text: ` — ${view.display_name}` }) : null,
    );
    const toggle = h("button", {
      type: "button",
      id: "account-toggle",
      class: view.enabled ? "danger" : "primary",
      text: view.enabled ? t("admin.disable") : t("admin.enable"),
      onclick: () => {
        if (view.enabled && !window.confirm(t("admin.confirm.disable", { login: view.login })))
          return;
        change(
          () => post(at(view.enabled ? "/disable" : "/enable")),
          view.enabled ? "admin.done.disable" : "admin.done.enable",
          toggle,
        );
      },
    });
    const unlock = h("button", {
      type: "button",
      id: "account-unlock",
      text: t("admin.unlock"),
      disabled: !isLocked(view) && view.failures === 0,
      onclick: () => change(() => post(at("/unlock")), "admin.done.unlock", unlock),
    });
    const reset = h("button", {
      type: "button",
      id: "account-reset-totp",
      class: "danger",
      text: t("admin.reset.totp"),
      disabled: !view.totp_enrolled,
      onclick: () => {
        if (!window.confirm(t("admin.confirm.reset", { login: view.login }))) return;
        change(() => post(at("/reset-totp")), "admin.done.reset", reset);
      },
    });
    const roles = roleBoxes("account", view.roles);
    const saveRoles = h("button", {
      type: "button",
      id: "account-roles-save",
      text: t("admin.roles.save"),
      onclick: () => {
        const wanted = checkedRoles(roles);
        const self = view.login === store.me?.login;
        if (self && !wanted.includes("admin") && !window.confirm(t("admin.confirm.self"))) return;
        change(() => put(at("/roles"), { roles: wanted }), "admin.done.roles", null);
      },
    });
    const password = h("input", {
      type: "password",
      id: "account-password",
      autocomplete: "new-password",
      required: true,
    });
    const passwordForm = h(
      "form",
      { class: "page-form", id: "account-password-form", novalidate: true },
      field(t("admin.password", { login: view.login }), password, t("admin.password.hint")),
      h("button", { type: "submit", text: t("admin.password.submit") }),
    );
    passwordForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!password.value) {
        password.focus();
        return;
      }
      const set = () => post(at("/password"), { password: password.value });
      if (await change(set, "admin.done.password", null)) password.value = "";
    });
    replace(
      detail,
      facts(view),
      h("div", { class: "actions" }, toggle, unlock, reset),
      roles,
      h("div", { class: "actions" }, saveRoles),
      passwordForm,
    );
  }

  /** Open an account below the list, as it is now (the list may be old). */
  let opening = 0;
  async function open(view) {
    const mine = ++opening;
    detailFeedback.clear();
    replace(detailTitle, view.login);
    replace(detail, h("p", { class: "muted", role: "status", text: t("admin.loading") }));
    detailPart.hidden = false;
    detailTitle.focus();
    try {
      const fresh = await get(path("/api/admin/accounts/", view.login));
      if (mine !== opening) return;
      draw(fresh);
      redrawItem(fresh);
    } catch (e) {
      if (mine !== opening) return;
      draw(view);
      detailFeedback.failed(e);
    }
  }

  // A new account
  const newLogin = h("input", {
    id: "new-login",
    autocomplete: "off",
    required: true,
    maxlength: "80",
  });
  const newPassword = h("input", {
    type: "password",
    id: "new-password",
    autocomplete: "new-password",
  });
  const newRoles = roleBoxes("new", ["user"]);
  const createFeedback = feedback("create");
  const createForm = h(
    "form",
    { id: "account-create", class: "page-form", novalidate: true },
    field(t("admin.create.login"), newLogin, t("admin.create.login.hint")),
    field(t("admin.create.password"), newPassword, t("admin.create.password.hint")),
    newRoles,
    createFeedback.nodes,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "primary", text: t("admin.create.submit") }),
    ),
  );
  createForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    createFeedback.clear();
    const login = newLogin.value.trim();
    if (!login) {
      newLogin.focus();
      return;
    }
    try {
      const view = await post("/api/admin/accounts", {
        login,
        roles: checkedRoles(newRoles),
        ...(newPassword.value ? { password: newPassword.value } : {}),
      });
      newLogin.value = "";
      newPassword.value = "";
      createFeedback.done(t("admin.created", { login: view.login }));
      await load(false);
      open(view);
    } catch (err) {
      createFeedback.failed(err);
      newLogin.focus();
    }
  });

  const { root, title } = createPage(
    { id: "admin-page", title: t("admin.title"), onBack },
    part(
      "admin-accounts",
      t("admin.accounts"),
      search,
      listStatus,
      listFeedback.nodes,
      list,
      more,
    ),
    detailPart,
    part("admin-create", t("admin.create.title"), createForm),
  );

  return {
    root,
    show() {
      load(false);
      title.focus();
    },
    hide() {
      detailPart.hidden = true;
      detail.replaceChildren();
    },
  };
}
