// A guest's page (docs/calls.md, "Guest links"): opened from a meeting's guest link
// (/guest#<token>), it asks for a display name, waits in the lobby until the moderator lets
// the guest in, then sends camera and microphone and shows the others, like a member's page.
//
// The token is in the fragment: it never reaches a server log or a Referer, and it is taken
// out of the address bar once used. The edge answers with a guest pass (an HttpOnly cookie
// that only /api/guest/… reads) and the pass's CSRF token. A guest has no WebSocket: the
// page asks GET /api/guest every second, which says where the guest is (waiting, in the
// meeting, refused, …) and, in the meeting, the call (members, publications) from which
// the page subscribes exactly as calls.js does (the same Media class, other routes).
// Names only ever go to textContent (THREATS W1).

import { ApiError, get, post, put, setCsrf } from "./api.js";
import { Media, TileGrid, tileVideo } from "./calls.js";
import { h, replace } from "./dom.js";
import { lang } from "./i18n.js";

const POLL_MS = 1000;
const STRINGS = {
  ru: {
    title: "Совещание",
    yourName: "Ваше имя",
    enter: "Войти",
    noToken: "В ссылке нет приглашения. Откройте ссылку целиком.",
    waiting: "Ждём, пока ведущий впустит вас…",
    joined: "Вы в совещании",
    refused: "Ведущий не впустил вас.",
    expired: "Срок действия ссылки истёк или она отозвана.",
    ended: "Совещание завершено.",
    removed: "Ведущий удалил вас из совещания.",
    left: "Вы вышли из совещания.",
    invalid: "Приглашение больше не действует.",
    mic: "Микрофон",
    cam: "Камера",
    leave: "Выйти",
    you: "Вы",
    noMedia: "Нет доступа к камере или микрофону: {message}",
  },
  en: {
    title: "Meeting",
    yourName: "Your name",
    enter: "Join",
    noToken: "The link holds no invitation. Open the whole link.",
    waiting: "Waiting for the host to let you in…",
    joined: "You are in the meeting",
    refused: "The host did not let you in.",
    expired: "The link has expired or was revoked.",
    ended: "The meeting has ended.",
    removed: "The host removed you from the meeting.",
    left: "You left the meeting.",
    invalid: "The invitation is no longer valid.",
    mic: "Microphone",
    cam: "Camera",
    leave: "Leave",
    you: "You",
    noMedia: "No access to the camera or microphone: {message}",
  },
};

function tr(key, vars = {}) {
  const text = (STRINGS[lang] || STRINGS.en)[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

const guestRoute = (rest) => `/api/guest${rest}`;
const FINAL = new Set(["refused", "expired", "ended", "removed", "left"]);

const root = document.getElementById("guest");
const status = h("p", { class: "muted", id: "guest-status", role: "status", "aria-live": "polite" });
const nameInput = h("input", {
  type: "text",
  id: "guest-name",
  maxlength: 64,
  required: true,
  autocomplete: "name",
  "aria-label": tr("yourName"),
  placeholder: tr("yourName"),
});
const form = h(
  "form",
  { class: "guest-form", id: "guest-form", hidden: true },
  nameInput,
  h("button", { type: "submit", class: "primary", id: "guest-enter", text: tr("enter") }),
);
const grid = new TileGrid();
const micButton = h("button", { type: "button", id: "call-mic", text: tr("mic") });
const camButton = h("button", { type: "button", id: "call-cam", text: tr("cam") });
const leaveButton = h("button", {
  type: "button",
  class: "danger",
  id: "call-leave",
  text: tr("leave"),
});
const view = h(
  "section",
  { class: "call-view guest-call", id: "call-view", hidden: true },
  grid.root,
  h("div", { class: "call-controls", role: "toolbar" }, micButton, camButton, leaveButton),
);
replace(root, h("main", { class: "guest-main" }, h("h1", { text: tr("title") }), status, form, view));

let me = null; // the latest GuestView
let media = null;
let joining = false;
let timer = null;
const muted = { audio: false, video: false };
const names = new Map(); // login -> display name

function say(text) {
  status.textContent = text;
}

function fail(e) {
  say(e instanceof ApiError || e instanceof Error ? e.message : String(e));
}

function stop(message) {
  clearTimeout(timer);
  timer = null;
  media?.close();
  media = null;
  view.hidden = true;
  grid.clear();
  form.hidden = true;
  say(message);
}

async function poll() {
  timer = null;
  try {
    show(await get("/api/guest"));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return stop(tr("invalid"));
    fail(e);
  }
  if (!FINAL.has(me?.state)) timer = setTimeout(poll, POLL_MS);
}

function show(view_) {
  me = view_;
  setCsrf(me.csrf_token);
  if (FINAL.has(me.state)) return stop(tr(me.state));
  if (me.state === "waiting") return say(tr("waiting"));
  if (me.state !== "joined" || !me.call) return;
  for (const m of me.call.members) names.set(m.login, m.name);
  say(tr("joined"));
  if (!media && !joining) start();
  else if (media && me.call.media_epoch > media.epoch) moved(media, me.call.media_epoch);
  else if (media) synchronize();
  draw();
}

async function start() {
  joining = true;
  try {
    me = await post("/api/guest/join", {});
    const mine = new Media(me.call.id, () => draw(), guestRoute, me.call.media_epoch || 0);
    media = mine;
    view.hidden = false;
    await mine.start();
    if (media !== mine) return mine.close();
    synchronize();
  } catch (e) {
    if (e instanceof DOMException) say(tr("noMedia", { message: e.message }));
    else fail(e);
    media?.close();
    media = null;
  } finally {
    joining = false;
  }
}

/** The SFU worker holding the meeting died and it goes on elsewhere (C1): connect again. */
function moved(mine, epoch) {
  mine
    .moved(epoch)
    .then(() => media === mine && synchronize())
    .catch((e) => media === mine && fail(e));
}

function synchronize() {
  const call = me?.call;
  if (!call || !media || !media.publisher) return;
  // a slot whose publisher is gone is idle (members learn it by a push frame; a guest here)
  const live = new Set(call.publications.map((p) => p.id));
  for (const [mid, pub] of media.slots) if (pub && !live.has(pub.id)) media.slots.set(mid, null);
  if (!media.lacks(call, me.id)) return draw();
  media.sync().catch((e) => media && fail(e));
}

function draw() {
  if (!media) return;
  micButton.setAttribute("aria-pressed", String(muted.audio));
  camButton.setAttribute("aria-pressed", String(muted.video));
  const wanted = [];
  if (media.local) {
    const mine = grid.tile("me/camera", me.id, "camera");
    mine.classList.add("mine");
    tileVideo(mine, media.local.getVideoTracks(), true);
    mine.querySelector("figcaption").textContent = tr("you");
    wanted.push(mine);
  }
  for (const [key, group] of media.remote()) {
    const el = grid.tile(key, group.login, group.source);
    tileVideo(el, [group.video, group.audio].filter(Boolean), false);
    if (group.mid) el.dataset.mid = group.mid;
    else delete el.dataset.mid;
    el.querySelector("figcaption").textContent = names.get(group.login) || group.login;
    wanted.push(el);
  }
  grid.show(wanted);
}

async function toggle(kind) {
  if (!media) return;
  muted[kind] = !muted[kind];
  media.setEnabled(kind, !muted[kind]);
  draw();
  try {
    show(await put("/api/guest/mute", muted));
  } catch (e) {
    fail(e);
  }
}

micButton.addEventListener("click", () => toggle("audio"));
camButton.addEventListener("click", () => toggle("video"));
leaveButton.addEventListener("click", async () => {
  try {
    show(await post("/api/guest/leave", {}));
  } catch (e) {
    fail(e);
  }
});

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = location.hash.slice(1);
  try {
    const entered = await post("/api/guest/enter", { token, name: nameInput.value });
    history.replaceState(null, "", "/guest"); // the token leaves the address bar
    form.hidden = true;
    show(entered);
    if (!timer) timer = setTimeout(poll, POLL_MS);
  } catch (err) {
    fail(err);
  }
});

// A page that goes away leaves the meeting (or the lobby), as a member's page does.
window.addEventListener("pagehide", () => {
  if (!me || FINAL.has(me.state)) return;
  fetch("/api/guest/leave", {
    method: "POST",
    keepalive: true,
    credentials: "same-origin",
    referrerPolicy: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": me.csrf_token },
    body: "{}",
  }).catch(() => {});
});

// A pass from before (a reloaded page) goes on where it was; else the name form.
(async () => {
  try {
    show(await get("/api/guest"));
    if (!FINAL.has(me.state)) timer = setTimeout(poll, POLL_MS);
    return;
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) return fail(e);
  }
  if (!location.hash.slice(1)) return say(tr("noToken"));
  form.hidden = false;
  nameInput.focus();
})();
