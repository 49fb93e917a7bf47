// The account page, for every user: who I am, my password, where I am logged in, my
// recovery codes, logging out.
//
// The profile is GET /api/me as app.js loaded it (the directory's name and department are
// text from the directory: shown as text, W1). POST /api/password {old_password,
// new_password} answers 204; the edge ends my other sessions and closes their WebSockets,
// this one stays. GET /api/sessions lists mine ({session_id, method, created, last_seen,
// address, current}); DELETE /api/sessions/<id> ends one, whose pages are told at once
// (WebSocket close 4401) and go back to the login screen. POST /api/recovery-codes answers
// ten new codes and the old ones stop working: they are shown here once, under a plain
// "store these now", and taken off the page when the user says they are stored or leaves
// the page. Every refusal is shown in words (errortext.js); CSRF is api.js's business.

import { del, get, path, post } from "./api.js";
import { field, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { recoveryCodesList } from "./login.js";
import { createPage, feedback, part, timeOf } from "./page.js";
import { store } from "./store.js";

export function roleName(role) {
  const key = `role.${role}`;
  const text = t(key);
  return text === key ? role : text;
}

export function methodName(method) {
  const key = `method.${method}`;
  const text = t(key);
  return text === key ? method : text;
}

export function createAccountPage({ onBack, onLogout }) {
  // Profile
  const profile = h("dl", { class: "facts", id: "account-profile" });

  // Password
  const current = h("input", {
    type: "password",
    id: "password-current",
    autocomplete: "current-password",
    required: true,
  });
  const fresh = h("input", {
    type: "password",
    id: "password-new",
    autocomplete: "new-password",
    required: true,
  });
  const repeat = h("input", {
    type: "password",
    id: "password-repeat",
    autocomplete: "new-password",
    required: true,
  });
  const passwordSubmit = h("button", {
    type: "submit",
    class: "primary",
    id: "password-submit",
    text: t("password.submit"),
  });
  const passwordFeedback = feedback("password");
  const passwordForm = h(
    "form",
    { id: "password-form", class: "page-form", novalidate: true },
    field(t("password.current"), current),
    field(t("password.new"), fresh, t("password.hint")),
    field(t("password.repeat"), repeat),
    passwordFeedback.nodes,
    h("div", { class: "actions" }, passwordSubmit),
  );
  passwordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    passwordFeedback.clear();
    const empty = [current, fresh, repeat].find((input) => !input.value);
    if (empty) {
      passwordFeedback.failed(new Error(t("password.empty")));
      empty.focus();
      return;
    }
    if (fresh.value !== repeat.value) {
      passwordFeedback.failed(new Error(t("password.mismatch")));
      repeat.value = "";
      fresh.select();
      fresh.focus();
      return;
    }
    passwordSubmit.disabled = true;
    try {
      await post("/api/password", { old_password: current.value, new_password: fresh.value });
      for (const input of [current, fresh, repeat]) input.value = "";
      passwordFeedback.done(t("password.changed"));
      await loadSessions();
    } catch (e) {
      passwordFeedback.failed(e);
      const again = e && e.status === 403 ? current : fresh;
      again.select();
      again.focus();
    } finally {
      passwordSubmit.disabled = false;
    }
  });

  // Sessions
  const sessionList = h("ul", { class: "sessions", id: "session-list" });
  const sessionsFeedback = feedback("sessions");
  const refresh = h("button", {
    type: "button",
    id: "sessions-refresh",
    text: t("sessions.refresh"),
    onclick: () => loadSessions(),
  });

  function sessionItem(s) {
    const where = s.address || t("sessions.address.unknown");
    return h(
      "li",
      { class: ["session", s.current && "current"], dataset: { session: s.session_id } },
      h(
        "div",
        { class: "who" },
        h("span", { class: "name", text: where }),
        h("span", { class: "muted", text: methodName(s.method) }),
        h(
          "span",
          { class: "muted" },
          timeOf(s.created, "sessions.created"),
          " · ",
          timeOf(s.last_seen, "sessions.seen"),
        ),
      ),
      s.current
        ? h("span", { class: "tag", text: t("sessions.current") })
        : h("button", {
            type: "button",
            class: "danger end-session",
            text: t("sessions.end"),
            "aria-label": t("sessions.end.label", { address: where }),
            onclick: (e) => endSession(s, e.currentTarget),
          }),
    );
  }

  async function loadSessions() {
    try {
      const answer = await get("/api/sessions");
      replace(sessionList, answer.sessions.map(sessionItem));
    } catch (e) {
      sessionsFeedback.failed(e);
    }
  }

  async function endSession(s, button) {
    sessionsFeedback.clear();
    button.disabled = true;
    try {
      await del(path("/api/sessions/", s.session_id));
      sessionsFeedback.done(t("sessions.ended"));
      await loadSessions();
      (sessionList.querySelector("button.end-session") || refresh).focus();
    } catch (e) {
      sessionsFeedback.failed(e);
      button.disabled = false;
    }
  }

  // Recovery codes
  const codesFeedback = feedback("codes");
  const codesBox = h("div", { class: "codes-box", id: "account-codes-box", hidden: true });
  const newCodes = h("button", {
    type: "button",
    id: "codes-new",
    text: t("codes.account.new"),
    onclick: async () => {
      codesFeedback.clear();
      if (!window.confirm(t("codes.account.confirm"))) return;
      newCodes.disabled = true;
      try {
        const answer = await post("/api/recovery-codes");
        showCodes(answer.recovery_codes);
      } catch (e) {
        codesFeedback.failed(e);
      } finally {
        newCodes.disabled = false;
      }
    },
  });

  function showCodes(codes) {
    const { list, buttons } = recoveryCodesList(codes, "account-codes");
    const stored = h("button", {
      type: "button",
      class: "primary",
      id: "account-codes-done",
      text: t("codes.done"),
      onclick: () => {
        hideCodes();
        newCodes.focus();
      },
    });
    replace(
      codesBox,
      h("p", { class: "notice strong", id: "account-codes-store", text: t("codes.account.store") }),
      list,
      h("div", { class: "actions" }, stored, buttons),
    );
    codesBox.hidden = false;
    list.focus();
  }

  function hideCodes() {
    codesBox.replaceChildren(); // shown once: not left in the page
    codesBox.hidden = true;
  }

  const logoutButton = h("button", {
    type: "button",
    id: "account-logout",
    text: t("nav.logout"),
    onclick: onLogout,
  });

  const { root, title } = createPage(
    { id: "account-page", title: t("account.title"), onBack },
    part("account-profile-part", t("account.profile"), profile),
    part("account-password-part", t("password.title"), passwordForm),
    part(
      "account-sessions-part",
      t("sessions.title"),
      h("p", { class: "muted", text: t("sessions.intro") }),
      sessionList,
      sessionsFeedback.nodes,
      h("div", { class: "actions" }, refresh),
    ),
    part(
      "account-codes-part",
      t("codes.title"),
      h("p", { text: t("codes.account.intro") }),
      codesFeedback.nodes,
      codesBox,
      h("div", { class: "actions" }, newCodes),
    ),
    part(
      "account-logout-part",
      t("account.logout.title"),
      h("p", { class: "muted", text: t("account.logout.intro") }),
      logoutButton,
    ),
  );

  function drawProfile() {
    const me = store.me;
    const facts = [
      [t("account.name"), me.display_name || me.login],
      [t("account.login"), me.login],
      [t("account.department"), me.department],
      [t("account.site"), me.site],
      [t("account.roles"), (me.roles || []).map(roleName).join(", ")],
      [t("account.method"), methodName(me.method)],
    ];
    replace(
      profile,
      facts
        .filter(([, value]) => value)
        .map(([label, value]) => [h("dt", { text: label }), h("dd", { text: value })]),
      h("dt", { text: t("account.expires") }),
      h("dd", {}, timeOf(me.expires_at)),
    );
  }

  return {
    root,
    show() {
      drawProfile();
      passwordFeedback.clear();
      sessionsFeedback.clear();
      codesFeedback.clear();
      loadSessions();
      title.focus();
    },
    hide() {
      hideCodes();
      for (const input of [current, fresh, repeat]) input.value = "";
    },
  };
}
