// What a failed call says to the user, in plain words.
//
// The edge answers every refusal with {"error": "..."}: a short sentence that names what was
// wrong ("a password needs at least 8 characters", "the current password is not right").
// The account and admin pages show it after a few words in the page's language that say
// what kind of refusal it is; a 429 adds how long to wait (Retry-After); a server failure
// (5xx) shows no server text at all, only that it failed and to try later. The result is
// plain text for textContent.

import { ApiError } from "./api.js";
import { t } from "./i18n.js";

/** ``text`` ending with a full stop; with ``capital``, starting with a capital letter. */
function sentence(text, capital = false) {
  let s = String(text || "").trim();
  if (!s) return s;
  if (capital) s = s[0].toUpperCase() + s.slice(1);
  return /[.!?…]$/.test(s) ? s : `${s}.`;
}

export function describeError(error) {
  if (!(error instanceof ApiError)) return String((error && error.message) || error);
  const { status } = error;
  if (status === 0) return error.message; // already "the server cannot be reached"
  if (status === 401) return t("error.session");
  if (status === 429) {
    const wait = error.retryAfter ? ` ${t("login.retry", { seconds: error.retryAfter })}` : "";
    return `${sentence(error.message, true)}${wait}`;
  }
  if (status >= 500) return t("error.server", { status });
  const key = `error.${status}`;
  const text = t(key, { message: sentence(error.message) });
  return text === key ? t("error.generic", { message: sentence(error.message) }) : text;
}
