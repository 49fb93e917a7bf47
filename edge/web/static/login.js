// Login, first-login TOTP enrollment, and the recovery codes shown once.
//
// POST /api/login {login, password, code}: "ok" → the main view; "enroll-totp" → an
// enrollment session (the code may be empty at a first login): POST /api/totp/enrollment
// gives the otpauth:// URI, the secret and the QR code as SVG text, POST
// /api/totp/enrollment/confirm {code} rotates the session and returns ten recovery codes,
// shown here once. POST /api/login/recovery {login, password, recovery_code} is the lost-
// phone path. Every refusal shows the server's own message (one text for every failure,
// so nothing tells a wrong login from a wrong password); 429 adds its Retry-After.

import { ApiError, post, setCsrf } from "./api.js";
import { field, h, replace, safeSvg } from "./dom.js";
import { t } from "./i18n.js";

function errorBox() {
  return h("p", { class: "error", role: "alert", id: "login-error", hidden: true });
}

function showError(box, error) {
  let text = error instanceof ApiError ? error.message : String(error && error.message);
  if (error instanceof ApiError && error.status === 429 && error.retryAfter) {
    text = `${text} ${t("login.retry", { seconds: error.retryAfter })}`;
  }
  box.textContent = text;
  box.hidden = false;
}

/**
 * The login screen in ``root``. ``done(result)`` is called with the login answer of a full
 * session; enrollment is handled here before ``done`` is called.
 */
export function showLogin(root, done, notice = null) {
  let recovery = false;
  const login = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: "current-password",
    required: true,
  });
  const code = h("input", {
    name: "code",
    autocomplete: "one-time-code",
    inputmode: "numeric",
    pattern: "[0-9 ]*",
    maxlength: "8",
  });
  const recoveryCode = h("input", { name: "recovery", autocomplete: "off", maxlength: "64" });
  const codeField = field(t("login.code"), code, t("login.code.hint"));
  const recoveryField = field(t("login.recovery"), recoveryCode);
  recoveryField.hidden = true;
  const error = errorBox();
  const submit = h("button", { type: "submit", class: "primary", text: t("login.submit") });
  const toggle = h("button", {
    type: "button",
    class: "link",
    id: "login-toggle",
    text: t("login.use.recovery"),
    onclick: () => {
      recovery = !recovery;
      codeField.hidden = recovery;
      recoveryField.hidden = !recovery;
      recoveryCode.required = recovery;
      toggle.textContent = recovery ? t("login.use.totp") : t("login.use.recovery");
      (recovery ? recoveryCode : code).focus();
    },
  });
  const form = h(
    "form",
    { class: "card login", id: "login-form", novalidate: true },
    h("h1", { text: t("login.title") }),
    notice ? h("p", { class: "notice", text: notice }) : null,
    field(t("login.login"), login),
    field(t("login.password"), password),
    codeField,
    recoveryField,
    error,
    h("div", { class: "actions" }, submit, toggle),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    if (!login.value.trim() || !password.value) {
      (login.value.trim() ? password : login).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = t("login.busy");
    try {
      const result = recovery
        ? await post("/api/login/recovery", {
            login: login.value.trim(),
            password: password.value,
            recovery_code: recoveryCode.value.trim(),
          })
        : await post("/api/login", {
            login: login.value.trim(),
            password: password.value,
            code: code.value.replace(/\s+/g, ""),
          });
      setCsrf(result.csrf_token);
      password.value = "";
      if (result.status === "enroll-totp") {
        await enroll(root, done);
      } else {
        done(result);
      }
    } catch (e) {
      showError(error, e);
      submit.disabled = false;
      submit.textContent = t("login.submit");
      (recovery ? recoveryCode : code).value = "";
      password.select();
      password.focus();
    }
  });
  replace(root, h("main", { class: "centered" }, form));
  login.focus();
}

async function enroll(root, done) {
  const enrollment = await post("/api/totp/enrollment");
  const qr = h("figure", { class: "qr", id: "enroll-qr" });
  try {
    const svg = safeSvg(enrollment.qr_svg);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", t("enroll.qr"));
    qr.append(svg);
  } catch {
    qr.hidden = true; // the key below still works
  }
  const secret = enrollment.secret.replace(/(.{4})/g, "$1 ").trim();
  const code = h("input", {
    name: "code",
    autocomplete: "one-time-code",
    inputmode: "numeric",
    maxlength: "8",
    required: true,
  });
  const error = errorBox();
  const submit = h("button", { type: "submit", class: "primary", text: t("enroll.submit") });
  const form = h(
    "form",
    { class: "card enroll", id: "enroll-form", novalidate: true },
    h("h1", { text: t("enroll.title") }),
    h("p", { text: t("enroll.intro") }),
    qr,
    h(
      "dl",
      {},
      h("dt", { text: t("enroll.secret") }),
      h("dd", {}, h("code", { id: "enroll-secret", class: "secret", text: secret })),
      h("dt", { text: t("enroll.uri") }),
      h("dd", {}, h("code", { id: "enroll-uri", class: "uri", text: enrollment.uri })),
    ),
    field(t("enroll.code"), code),
    error,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const result = await post("/api/totp/enrollment/confirm", {
        code: code.value.replace(/\s+/g, ""),
      });
      setCsrf(result.csrf_token);
      showRecoveryCodes(root, result.recovery_codes, () => done({ ...result, status: "ok" }));
    } catch (e) {
      showError(error, e);
      submit.disabled = false;
      code.select();
      code.focus();
    }
  });
  replace(root, h("main", { class: "centered" }, form));
  code.focus();
}

/**
 * The recovery codes as a list (``id``) and the buttons that copy them or save them as a
 * file: ``{list, buttons}``. Also used by the account page (new codes).
 */
export function recoveryCodesList(codes, id) {
  const text = `${codes.join("\n")}\n`;
  const list = h(
    "ol",
    { id, class: "codes-list", tabIndex: -1 },
    codes.map((c) => h("li", {}, h("code", { text: c }))),
  );
  const copy = h("button", {
    type: "button",
    text: t("codes.copy"),
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        copy.textContent = t("codes.copied");
      } catch {
        list.focus(); // the user selects and copies by hand
      }
    },
  });
  const download = h("button", {
    type: "button",
    text: t("codes.download"),
    onclick: () => {
      const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
      const a = h("a", { href: url, download: "zastava-recovery-codes.txt", hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    },
  });
  return { list, buttons: [copy, download] };
}

/** The recovery codes, once; ``next`` when the user says they are saved. */
export function showRecoveryCodes(root, codes, next) {
  const { list, buttons } = recoveryCodesList(codes, "recovery-codes");
  const ok = h("button", {
    type: "button",
    class: "primary",
    id: "codes-done",
    text: t("codes.done"),
    onclick: next,
  });
  replace(
    root,
    h(
      "main",
      { class: "centered" },
      h(
        "section",
        { class: "card codes" },
        h("h1", { text: t("codes.title") }),
        h("p", { text: t("codes.intro") }),
        list,
        h("div", { class: "actions" }, ok, buttons),
      ),
    ),
  );
  ok.focus();
}
