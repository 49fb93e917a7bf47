// The frame of a page shown in the main area instead of the conversation: the account page,
// the administration page, the audit log.
//
// A page is a <section> with a heading that takes the focus when the page opens (so a
// keyboard or screen-reader user lands on it), a "back to chats" button, and its parts,
// each a titled <section>. Feedback is two lines per form: an error (role=alert) and a
// status (role=status), both plain text.

import { h, uniqueId } from "./dom.js";
import { describeError } from "./errortext.js";
import { formatFullTime, formatTime, t } from "./i18n.js";

/** {root, title}: the page ``id`` with its heading and ``parts``. */
export function createPage({ id, title: titleText, onBack }, ...parts) {
  const title = h("h2", { id: `${id}-title`, tabIndex: -1, text: titleText });
  const back = h("button", {
    type: "button",
    class: "link back",
    id: `${id}-back`,
    text: t("nav.back"),
    onclick: onBack,
  });
  const root = h(
    "section",
    { class: "page", id, "aria-labelledby": title.id, hidden: true },
    h("header", { class: "page-header" }, title, back),
    h("div", { class: "page-body" }, parts),
  );
  return { root, title };
}

/** A titled part of a page. */
export function part(id, titleText, ...children) {
  const heading = h("h3", { id: `${id}-title`, text: titleText, tabIndex: -1 });
  return h("section", { class: "page-part", id, "aria-labelledby": heading.id }, heading, children);
}

/** An error line and a status line, and how to fill them. */
export function feedback(prefix = uniqueId("feedback")) {
  const error = h("p", { class: "error", role: "alert", id: `${prefix}-error`, hidden: true });
  const status = h("p", { class: "notice", role: "status", id: `${prefix}-status`, hidden: true });
  return {
    nodes: [error, status],
    clear() {
      error.hidden = true;
      status.hidden = true;
    },
    failed(e) {
      status.hidden = true;
      error.textContent = describeError(e);
      error.hidden = false;
    },
    done(text) {
      error.hidden = true;
      status.textContent = text;
      status.hidden = false;
    },
  };
}

/**
 * A <time> for an ISO 8601 instant from the edge: the short form (``template`` with {time},
 * if given), the full date and time as its title.
 */
export function timeOf(iso, template = null) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return h("span", { text: String(iso ?? "") });
  const short = formatTime(ms);
  return h("time", {
    datetime: iso,
    title: formatFullTime(ms),
    text: template ? t(template, { time: short }) : short,
  });
}
