// Calls and meetings: ringing, the meeting view, the media (docs/calls.md).
//
// Signalling is HTTPS (POST /api/calls…) and the push frames "call", "call_slots" and
// "call_speaker" on the page's WebSocket. Media is WebRTC with the edge's SFU and no ICE
// servers at all: host candidates on the plant's own network, sent inside the SDP once
// gathered (no trickle). Each participant has one publish connection for microphone and
// camera, one more while sharing the screen, and one subscribe connection: the SFU offers
// it a slot (mid) per stream of the others and this page answers; POST …/subscribe is asked
// again whenever the call lists a publication that no slot shows yet, and the SFU re-points
// idle slots before it adds new ones. Tiles are drawn from the slot map the SFU returns
// (mid → publication: who, audio or video, camera or screen).
//
// The page hooks in without changing the other views: a "Call" and a "Meeting" button are
// added to each directory entry as the list is drawn (a MutationObserver), and a call
// button to the open conversation's header. Text from the server (names) only ever goes to
// textContent (THREATS W1); styling is by class names and data attributes.

import { ApiError, del, get, path, post, put } from "./api.js";
import { byId, h, replace } from "./dom.js";
import { lang } from "./i18n.js";
import { conversation, listen, nameOf, on, rememberName, store, titleOf } from "./store.js";

const MAX_TILES = 49;
const GATHER_MS = 3000;
const NO_ICE_SERVERS = { iceServers: [] };

const STRINGS = {
  ru: {
    call: "Позвонить",
    meeting: "Совещание",
    meetingWith: "Совещание с {name}",
    incoming: "Входящий звонок: {name}",
    invited: "{name} приглашает на совещание",
    back: "Вы в звонке. Вернуться?",
    accept: "Ответить",
    decline: "Отклонить",
    rejoin: "Вернуться",
    leave: "Завершить",
    calling: "Вызов…",
    active: "Идёт разговор",
    meetingActive: "Идёт совещание",
    mic: "Микрофон",
    cam: "Камера",
    screen: "Показать экран",
    screenStop: "Остановить показ",
    invite: "Пригласить",
    inviteWho: "Логины через запятую",
    you: "Вы",
    screenOf: "Экран: {name}",
    pausedTile: "{name} — видео приостановлено: слабый канал",
    mute: "Выключить микрофон",
    remove: "Удалить",
    moderator: "ведущий",
    ringing: "вызов…",
    joined: "в звонке",
    declined: "отклонил(а)",
    busy: "занят(а)",
    missed: "не ответил(а)",
    left: "вышел(а)",
    removed: "удалён(а)",
    heldByModerator: "Ведущий выключил ваш микрофон",
    removedByModerator: "Ведущий удалил вас из совещания",
    missedFrom: "Пропущенный звонок: {name}",
    isBusy: "{name} занят(а) в другом звонке",
    isUnreachable: "Нет связи с площадкой, где работает {name}: звонок не доставлен",
    didDecline: "{name} отклоняет звонок",
    noAnswer: "{name} не отвечает",
    ended: "Звонок завершён",
    noMedia: "Нет доступа к камере или микрофону: {message}",
    dismiss: "Закрыть",
    people: "Участники",
    guestLink: "Ссылка для гостей",
    guestLinkLabel: "Ссылка для гостей (действует сутки)",
    lobby: "Ждут входа",
    admit: "Впустить",
    turnAway: "Отказать",
    guest: "гость",
    record: "Записывать",
    recordStop: "Остановить запись",
    recording: "● Идёт запись",
    recordings: "Записи совещания",
    recordingItem: "Запись {n}: {duration}, {size}",
    unreachable: "нет связи с их площадкой",
    plantUnreachable: "Нет связи с площадкой {site}: {reason}",
  },
  en: {
    call: "Call",
    meeting: "Meeting",
    meetingWith: "Meeting with {name}",
    incoming: "Incoming call: {name}",
    invited: "{name} invites you to a meeting",
    back: "You are in a call. Go back?",
    accept: "Answer",
    decline: "Decline",
    rejoin: "Go back",
    leave: "Hang up",
    calling: "Calling…",
    active: "In a call",
    meetingActive: "Meeting in progress",
    mic: "Microphone",
    cam: "Camera",
    screen: "Share screen",
    screenStop: "Stop sharing",
    invite: "Invite",
    inviteWho: "Logins, separated by commas",
    you: "You",
    screenOf: "Screen: {name}",
    pausedTile: "{name} — video paused: weak link",
    mute: "Mute",
    remove: "Remove",
    moderator: "host",
    ringing: "ringing…",
    joined: "in the call",
    declined: "declined",
    busy: "busy",
    missed: "did not answer",
    left: "left",
    removed: "removed",
    heldByModerator: "The host turned your microphone off",
    removedByModerator: "The host removed you from the meeting",
    missedFrom: "Missed call: {name}",
    isBusy: "{name} is in another call",
    isUnreachable: "{name}'s plant cannot be reached: the call was not delivered",
    didDecline: "{name} declined the call",
    noAnswer: "{name} does not answer",
    ended: "The call has ended",
    noMedia: "No access to the camera or microphone: {message}",
    dismiss: "Close",
    people: "People",
    guestLink: "Guest link",
    guestLinkLabel: "Guest link (valid for a day)",
    lobby: "Waiting to join",
    admit: "Let in",
    turnAway: "Turn away",
    guest: "guest",
    record: "Record",
    recordStop: "Stop recording",
    recording: "● Recording",
    recordings: "Recordings of the meeting",
    recordingItem: "Recording {n}: {duration}, {size}",
    unreachable: "no connection to their plant",
    plantUnreachable: "No connection to plant {site}: {reason}",
  },
};

function tr(key, vars = {}) {
  const text = (STRINGS[lang] || STRINGS.en)[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

const callPath = (id, rest = "") => path("/api/calls/", id, rest);

/** Resolves once the connection has gathered its host candidates (or after GATHER_MS). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    }, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

/** The media of the call this page is in: publish, screen share, subscribe. ``route(rest)``
 * is where its requests go (a guest's page: /api/guest/…). ``epoch`` is the call's
 * ``media_epoch`` when the page joined: when it grows, the SFU worker that held the call's
 * media died and the media is elsewhere now (moved()). */
export class Media {
  constructor(callId, onChange, route = (rest) => callPath(callId, rest), epoch = 0) {
    this.callId = callId;
    this.onChange = onChange;
    this.route = route;
    this.epoch = epoch;
    this.chain = Promise.resolve(); // start() and moved(), one after the other
    this.local = null; // MediaStream: microphone and camera
    this.screen = null; // {stream, pc}
    this.publisher = null;
    this.subscriber = null;
    this.slots = new Map(); // mid -> publication | null
    this.syncing = false;
    this.again = false;
    this.closed = false;
  }

  serial(op) {
    const run = this.chain.then(op, op);
    this.chain = run.catch(() => {});
    return run;
  }

  start() {
    return this.serial(async () => {
      this.local = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 } },
      });
      this.onChange();
      this.publisher = await this.publish(this.local, "camera");
    });
  }

  /** The call's media moved to another SFU worker (THREATS C1; the call's media_epoch
   * grew): every connection here is dead. Join again (media afresh, on the edge's side),
   * publish the same camera and screen again; the caller subscribes again after. */
  moved(epoch) {
    if (this.closed || !(epoch > this.epoch)) return Promise.resolve();
    this.epoch = epoch;
    return this.serial(async () => {
      if (this.closed || this.epoch !== epoch || !this.local) return; // a later move follows
      this.publisher?.close();
      this.publisher = null;
      this.subscriber?.close();
      this.subscriber = null;
      this.slots.clear();
      const screen = this.screen;
      screen?.pc.close();
      this.onChange();
      await post(this.route("/join"), {});
      this.publisher = await this.publish(this.local, "camera");
      if (screen && this.screen === screen && !this.closed) {
        screen.pc = await this.publish(screen.stream, "screen");
      }
      this.onChange();
    });
  }

  async publish(stream, source) {
    const pc = new RTCPeerConnection(NO_ICE_SERVERS);
    for (const track of stream.getTracks()) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    }
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const answer = await post(this.route("/publish"), {
        sdp: pc.localDescription.sdp,
        source,
      });
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (e) {
      pc.close();
      throw e;
    }
    return pc;
  }

  async shareScreen() {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const pc = await this.publish(stream, "screen").catch((e) => {
      for (const track of stream.getTracks()) track.stop();
      throw e;
    });
    this.screen = { stream, pc };
    stream.getVideoTracks()[0]?.addEventListener("ended", () => this.stopScreen(true));
  }

  async stopScreen(tell = true) {
    const screen = this.screen;
    if (!screen) return;
    this.screen = null;
    for (const track of screen.stream.getTracks()) track.stop();
    screen.pc.close();
    this.onChange();
    if (tell && !this.closed) await del(this.route("/screen")).catch(() => {});
  }

  setEnabled(kind, on) {
    for (const track of this.local?.getTracks() || []) if (track.kind === kind) track.enabled = on;
  }

  /** True if the call lists a publication of someone else that no slot shows. */
  lacks(call, me) {
    const shown = new Set([...this.slots.values()].filter(Boolean).map((p) => p.id));
    return (call.publications || []).some((p) => p.login !== me && !shown.has(p.id));
  }

  /** Ask the SFU for slots until every publication of the others has one (serialized). */
  async sync() {
    if (this.closed) return;
    if (this.syncing) {
      this.again = true;
      return;
    }
    this.syncing = true;
    try {
      do {
        this.again = false;
        const epoch = this.epoch;
        try {
          const offer = await post(this.route("/subscribe"), {});
          const slots = offer.sdp ? await this.answer(offer.sdp) : offer.slots;
          this.applySlots(slots);
        } catch (e) {
          if (this.epoch === epoch) throw e;
          return; // the media moved meanwhile: moved() is on it, subscribing follows
        }
      } while (this.again && !this.closed);
    } finally {
      this.syncing = false;
    }
  }

  async answer(sdp) {
    if (!this.subscriber) {
      this.subscriber = new RTCPeerConnection(NO_ICE_SERVERS);
      this.subscriber.addEventListener("track", () => this.onChange());
    }
    const pc = this.subscriber;
    try {
      await pc.setRemoteDescription({ type: "offer", sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      const result = await post(this.route("/answer"), {
        sdp: pc.localDescription.sdp,
      });
      return result.slots;
    } catch (e) {
      // the SFU closed the subscribe connection: start the next one afresh
      pc.close();
      this.subscriber = null;
      this.slots.clear();
      throw e;
    }
  }

  applySlots(slots) {
    this.slots = new Map((slots || []).map((s) => [s.mid, s.publication]));
    this.onChange();
  }

  /** login/source -> {login, source, video, audio, mid} from the slots that have a track. */
  remote() {
    const groups = new Map();
    for (const t of this.subscriber?.getTransceivers() || []) {
      const pub = this.slots.get(t.mid);
      if (!pub || !t.receiver.track) continue;
      const key = `${pub.login}/${pub.source}`;
      const group = groups.get(key) || { login: pub.login, source: pub.source, mid: null };
      group[pub.kind] = t.receiver.track;
      if (pub.kind === "video") group.mid = t.mid;
      groups.set(key, group);
    }
    return groups;
  }

  close() {
    this.closed = true;
    for (const track of this.local?.getTracks() || []) track.stop();
    if (this.screen) {
      for (const track of this.screen.stream.getTracks()) track.stop();
      this.screen.pc.close();
      this.screen = null;
    }
    this.publisher?.close();
    this.subscriber?.close();
  }
}

/**
 * The video tiles of a call view (the meeting page and the guest page): one <figure> per
 * stream, made once per key and reused; show() keeps exactly the tiles asked for, in that
 * order, hides those past ``max`` and sets the grid's column count.
 */
export class TileGrid {
  constructor(max = Infinity) {
    this.max = max;
    this.root = h("div", { class: "call-grid", id: "call-grid", dataset: { cols: 1 } });
    this.tiles = new Map(); // key (login/source) -> tile element
  }

  tile(key, login, source) {
    let el = this.tiles.get(key);
    if (!el) {
      el = h(
        "figure",
        { class: "tile", dataset: { login, source } },
        h("video", { autoplay: true, playsinline: true }),
        h("figcaption", {}),
      );
      this.tiles.set(key, el);
    }
    return el;
  }

  show(wanted) {
    const grid = this.root;
    for (const [key, el] of this.tiles) {
      if (!wanted.includes(el)) {
        el.querySelector("video").srcObject = null;
        el.remove();
        this.tiles.delete(key);
      }
    }
    wanted.forEach((el, i) => {
      el.hidden = i >= this.max;
      if (grid.children[i] !== el) grid.insertBefore(el, grid.children[i] || null);
    });
    const shown = Math.min(wanted.length, this.max);
    grid.dataset.cols = String(Math.min(7, Math.max(1, Math.ceil(Math.sqrt(shown)))));
    grid.dataset.count = String(wanted.length);
  }

  clear() {
    for (const el of this.tiles.values()) el.remove();
    this.tiles.clear();
  }
}

export function tileVideo(tile, tracks, muted) {
  const video = tile.querySelector("video");
  const before = video.srcObject ? video.srcObject.getTracks() : [];
  const same = before.length === tracks.length && tracks.every((t) => before.includes(t));
  if (!same) {
    video.srcObject = tracks.length ? new MediaStream(tracks) : null;
    video.muted = muted;
    video.play().catch(() => {});
  }
}

export function createCalls({ push }) {
  const calls = new Map(); // id -> the latest Call from the edge
  let active = null; // {id, media, audioMuted, videoMuted}
  let offered = null; // id of the call shown in the incoming bar
  const pausedMids = new Set(); // videos the edge paused for this page's weak link

  const notice = h("p", { class: "call-notice", id: "call-notice", role: "status" });
  const incomingText = h("span", { id: "incoming-text" });
  const incoming = h(
    "div",
    { class: "incoming-call", id: "incoming-call", role: "alertdialog", hidden: true },
    incomingText,
    h("button", { type: "button", class: "primary", id: "call-accept", onclick: () => accept() }),
    h("button", { type: "button", class: "danger", id: "call-decline", onclick: () => refuse() }),
  );
  const title = h("h2", { id: "call-title" });
  const status = h("p", { class: "muted", id: "call-status", "aria-live": "polite" });
  const grid = new TileGrid(MAX_TILES);
  const peopleList = h("ul", { class: "call-people", id: "call-people" });
  const micButton = h("button", { type: "button", id: "call-mic", text: tr("mic") });
  const camButton = h("button", { type: "button", id: "call-cam", text: tr("cam") });
  const screenButton = h("button", { type: "button", id: "call-screen", text: tr("screen") });
  const inviteInput = h("input", {
    type: "text",
    id: "call-invite-logins",
    placeholder: tr("inviteWho"),
    "aria-label": tr("inviteWho"),
    autocomplete: "off",
  });
  const inviteForm = h(
    "form",
    { class: "call-invite", id: "call-invite", hidden: true },
    inviteInput,
    h("button", { type: "submit", text: tr("invite") }),
  );
  const guestLinkButton = h("button", {
    type: "button",
    id: "call-guest-link",
    text: tr("guestLink"),
    hidden: true,
  });
  const guestLinkOut = h("input", {
    type: "text",
    id: "guest-link",
    readonly: true,
    hidden: true,
    "aria-label": tr("guestLinkLabel"),
  });
  const lobbyList = h("ul", { class: "call-lobby", id: "call-lobby", "aria-label": tr("lobby") });
  const lobbyBox = h(
    "div",
    { class: "call-lobby-box", id: "call-lobby-box", hidden: true },
    h("h3", { text: tr("lobby") }),
    lobbyList,
  );
  let lobby = []; // guests waiting in the lobby of the meeting I moderate
  // plants of the active call whose bridge leg cannot connect (the relay refused it, …):
  // site -> the logins of the call's people there (frame "call_plant")
  const unreachable = new Map();
  // the latest "call_plant" frame per call and plant, for a call not entered yet (the
  // frame may come before the answer to "join" does)
  const plantFrames = new Map(); // call id -> Map(site -> frame)
  const recordButton = h("button", {
    type: "button",
    id: "call-record",
    text: tr("record"),
    hidden: true,
  });
  const recordingMark = h("p", {
    class: "call-recording",
    id: "call-recording",
    role: "status",
    text: tr("recording"),
    hidden: true,
  });
  const recordingsBox = h("section", {
    class: "call-recordings",
    id: "call-recordings",
    "aria-label": tr("recordings"),
    hidden: true,
  });
  const leaveButton = h("button", {
    type: "button",
    class: "danger",
    id: "call-leave",
    text: tr("leave"),
  });
  const view = h(
    "section",
    { class: "call-view", id: "call-view", hidden: true, "aria-labelledby": "call-title" },
    h("header", { class: "call-header" }, title, status, recordingMark),
    grid.root,
    h(
      "div",
      { class: "call-controls", role: "toolbar" },
      micButton,
      camButton,
      screenButton,
      recordButton,
      leaveButton,
    ),
    h(
      "aside",
      { class: "call-side", "aria-label": tr("people") },
      h("h3", { text: tr("people") }),
      peopleList,
      inviteForm,
      guestLinkButton,
      guestLinkOut,
      lobbyBox,
    ),
  );
  const root = h("div", { class: "calls", id: "calls" }, notice, recordingsBox, incoming, view);

  const me = () => store.me?.login;
  const myState = (call) => call.members.find((m) => m.login === me())?.state;
  const member = (call, login) => call.members.find((m) => m.login === login);
  function remember(call) {
    for (const m of call.members) rememberName(m.login, m.name);
    calls.set(call.id, call);
  }
  function say(text) {
    const dismiss = { type: "button", class: "link", text: tr("dismiss"), onclick: () => say("") };
    replace(notice, h("span", { text }), text ? h("button", dismiss) : null);
  }
  function fail(e) {
    say(e instanceof ApiError || e instanceof Error ? e.message : String(e));
  }
  function callTitle(call) {
    if (call.kind === "direct") {
      const other = call.members.find((m) => m.login !== me());
      return other ? nameOf(other.login) : tr("call");
    }
    const conv = call.conversation ? conversation(call.conversation) : null;
    return conv ? titleOf(conv) : tr("meeting");
  }

  // Ringing

  function showIncoming(call) {
    const state = myState(call);
    offered = call.id;
    const from = nameOf(call.moderator);
    if (state === "joined") incomingText.textContent = tr("back");
    else if (call.kind === "direct") incomingText.textContent = tr("incoming", { name: from });
    else incomingText.textContent = tr("invited", { name: from });
    byId("call-accept").textContent = state === "joined" ? tr("rejoin") : tr("accept");
    byId("call-decline").textContent = state === "joined" ? tr("leave") : tr("decline");
    incoming.dataset.call = call.id;
    incoming.hidden = false;
  }
  function hideIncoming(id = null) {
    if (id !== null && offered !== id) return;
    offered = null;
    incoming.hidden = true;
    delete incoming.dataset.call;
  }
  async function accept() {
    const id = offered;
    if (!id) return;
    hideIncoming();
    try {
      if (active && active.id !== id) await leave(); // one call at a time
      await enter(await post(callPath(id, "/join"), {}));
    } catch (e) {
      fail(e);
    }
  }
  async function refuse() {
    const id = offered;
    if (!id) return;
    const call = calls.get(id);
    hideIncoming();
    try {
      const action = call && myState(call) === "joined" ? "/leave" : "/decline";
      remember(await post(callPath(id, action), {}));
    } catch (e) {
      fail(e);
    }
  }

  // Starting and leaving

  async function start(body) {
    try {
      const call = await post("/api/calls", body);
      remember(call);
      if (call.state === "ended") return ended(call);
      await enter(call);
    } catch (e) {
      fail(e);
    }
  }

  async function enter(call) {
    if (active && active.id !== call.id) await leave();
    remember(call);
    if (active) return draw();
    say("");
    active = { id: call.id, media: null, audioMuted: false, videoMuted: false };
    pausedMids.clear();
    for (const frame of plantFrames.get(call.id)?.values() || []) plantStatus(frame);
    const media = new Media(call.id, () => draw(), undefined, call.media_epoch || 0);
    active.media = media;
    view.hidden = false;
    document.body.classList.add("in-call");
    draw();
    try {
      await media.start();
    } catch (e) {
      if (active?.media !== media) return; // the call ended meanwhile: that was said
      say(e instanceof DOMException ? tr("noMedia", { message: e.message }) : e.message);
      await leave();
      return;
    }
    if (active?.media !== media) {
      media.close(); // ended while the camera started
      return;
    }
    synchronize();
  }

  function synchronize() {
    const call = active && calls.get(active.id);
    const media = active?.media;
    if (!call || !media || !media.publisher || !media.lacks(call, me())) return;
    media.sync().catch((e) => {
      if (active?.media === media) fail(e); // else the call ended meanwhile: that was said
    });
  }

  function close() {
    if (!active) return;
    active.media?.close();
    active = null;
    view.hidden = true;
    document.body.classList.remove("in-call");
    grid.clear();
    replace(peopleList);
    lobby = [];
    unreachable.clear();
    guestLinkOut.value = "";
    guestLinkOut.hidden = true;
  }

  async function leave() {
    const current = active;
    if (!current) return;
    close();
    try {
      remember(await post(callPath(current.id, "/leave"), {}));
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) fail(e);
    }
  }

  function ended(call) {
    calls.delete(call.id);
    plantFrames.delete(call.id);
    hideIncoming(call.id);
    const wasActive = active?.id === call.id;
    if (wasActive) close();
    const mine = myState(call);
    const other = call.members.find((m) => m.login !== me());
    const name = other ? nameOf(other.login) : "";
    if (call.kind === "direct" && call.moderator === me()) {
      const reasons = {
        busy: "isBusy",
        declined: "didDecline",
        missed: "noAnswer",
        unreachable: "isUnreachable",
      };
      if (reasons[call.reason]) return say(tr(reasons[call.reason], { name }));
    }
    if (mine === "missed") return say(tr("missedFrom", { name: nameOf(call.moderator) }));
    if (wasActive) say(tr("ended"));
    if (wasActive && call.kind === "meeting") showRecordings(call.id);
  }

  // Recordings (issue 7): the moderator starts and stops; everyone sees that it records;
  // after the meeting, who was in it while it recorded finds the downloads here.

  recordButton.addEventListener("click", async () => {
    const call = active && calls.get(active.id);
    if (!call) return;
    try {
      remember(await post(callPath(call.id, "/recording"), { recording: !call.recording }));
      draw();
    } catch (e) {
      fail(e);
    }
  });

  function drawRecording(call) {
    const moderating = call.kind === "meeting" && call.moderator === me();
    recordButton.hidden = !moderating;
    recordButton.textContent = call.recording ? tr("recordStop") : tr("record");
    recordButton.setAttribute("aria-pressed", String(Boolean(call.recording)));
    recordingMark.hidden = !call.recording;
  }

  async function showRecordings(id) {
    let found = [];
    try {
      found = (await get(callPath(id, "/recordings"))).recordings || [];
    } catch {
      return; // not mine, or the edge is away: nothing to offer
    }
    if (found.length === 0) return;
    const seconds = (ms) => {
      const s = Math.round(ms / 1000);
      return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    };
    const size = (n) => `${(n / 1048576).toFixed(1)} MB`;
    replace(
      recordingsBox,
      h("h3", { text: tr("recordings") }),
      h(
        "ul",
        {},
        found.map((r, i) =>
          h(
            "li",
            { dataset: { recording: r.id } },
            h("a", {
              href: path("/api/calls/", id, "/recordings/", r.id),
              download: "",
              text: tr("recordingItem", {
                n: i + 1,
                duration: seconds(r.duration_ms),
                size: size(r.size),
              }),
            }),
          ),
        ),
      ),
      h("button", {
        type: "button",
        text: tr("dismiss"),
        onclick: () => {
          recordingsBox.hidden = true;
        },
      }),
    );
    recordingsBox.hidden = false;
  }

  // Frames

  function onCall(call) {
    const before = calls.get(call.id);
    remember(call);
    if (call.state === "ended") return ended(call);
    const mine = myState(call);
    if (active?.id === call.id) {
      if (mine !== "joined") {
        close();
        if (mine === "removed") say(tr("removedByModerator"));
        return;
      }
      const self = member(call, me());
      if (self.held && !member(before || call, me())?.held) {
        active.audioMuted = true;
        active.media?.setEnabled("audio", false);
        say(tr("heldByModerator"));
      }
      const media = active.media;
      if (media && call.media_epoch > media.epoch) {
        // the SFU worker holding this call died; the call goes on elsewhere (C1)
        pausedMids.clear(); // new connections, new slots: nothing is paused there yet
        media
          .moved(call.media_epoch)
          .then(() => synchronize())
          .catch((e) => {
            if (active?.media === media) fail(e);
          });
      }
      draw();
      synchronize();
      return;
    }
    if (mine === "ringing") showIncoming(call);
    else hideIncoming(call.id);
  }

  push.addEventListener("frame", (e) => {
    const frame = e.detail;
    if (frame.type === "call" && frame.call && typeof frame.call.id === "string") {
      onCall(frame.call);
    } else if (frame.type === "call_slots" && active?.id === frame.call && active.media) {
      active.media.applySlots(frame.slots);
      synchronize();
    } else if (frame.type === "call_lobby" && active?.id === frame.call) {
      lobby = Array.isArray(frame.guests) ? frame.guests : [];
      draw();
    } else if (frame.type === "call_plant" && typeof frame.call === "string") {
      if (!plantFrames.has(frame.call)) plantFrames.set(frame.call, new Map());
      plantFrames.get(frame.call).set(String(frame.site), frame);
      if (active?.id === frame.call) plantStatus(frame);
    } else if (frame.type === "call_paused" && active?.id === frame.call) {
      // adaptive quality: the edge stopped (or resumed) this video for our weak link
      if (frame.paused) pausedMids.add(String(frame.mid));
      else pausedMids.delete(String(frame.mid));
      draw();
    } else if (frame.type === "call_speaker" && calls.has(frame.call)) {
      calls.get(frame.call).speaker = frame.login;
      if (active?.id === frame.call) draw();
    }
  });

  // A plant of the call that this one cannot reach for media: said once, its people marked.
  function plantStatus(frame) {
    const site = String(frame.site);
    if (frame.state === "retrying") {
      const first = !unreachable.has(site);
      unreachable.set(site, Array.isArray(frame.logins) ? frame.logins : []);
      if (first) say(tr("plantUnreachable", { site, reason: String(frame.reason || "") }));
    } else if (unreachable.delete(site) && unreachable.size === 0) {
      say("");
    }
    draw();
  }

  async function catchUp() {
    try {
      const { calls: mine } = await get("/api/calls");
      for (const call of mine) {
        remember(call);
        if (active?.id === call.id) continue;
        showIncoming(call); // ringing, or joined elsewhere (a reloaded page): go back?
      }
    } catch {
      // the next reconnection tries again
    }
  }
  push.addEventListener("state", (e) => {
    if (e.detail.state === "open") catchUp();
  });

  // A page that goes away (closed, reloaded, navigated) hangs up: a request that outlives
  // the page (keepalive) with the session's CSRF token. A page that dies without this is
  // taken out when its connections close or fail (ICE consent, about 30 s).
  listen(window, "pagehide", () => {
    if (!active || !store.me) return;
    fetch(callPath(active.id, "/leave"), {
      method: "POST",
      keepalive: true,
      credentials: "same-origin",
      referrerPolicy: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": store.me.csrf_token },
      body: "{}",
    }).catch(() => {});
  });

  // Controls

  micButton.addEventListener("click", () => toggle("audio"));
  camButton.addEventListener("click", () => toggle("video"));
  async function toggle(kind) {
    if (!active) return;
    const key = kind === "audio" ? "audioMuted" : "videoMuted";
    active[key] = !active[key];
    active.media?.setEnabled(kind, !active[key]);
    draw();
    try {
      remember(
        await put(callPath(active.id, "/mute"), {
          audio: active.audioMuted,
          video: active.videoMuted,
        }),
      );
    } catch (e) {
      fail(e);
    }
  }
  screenButton.addEventListener("click", async () => {
    const media = active?.media;
    if (!media) return;
    try {
      if (media.screen) await media.stopScreen(true);
      else await media.shareScreen();
    } catch (e) {
      fail(e);
    }
    draw();
  });
  leaveButton.addEventListener("click", () => leave());
  guestLinkButton.addEventListener("click", async () => {
    if (!active) return;
    try {
      const link = await post(callPath(active.id, "/guest-links"), { expires_s: 86400 });
      guestLinkOut.value = new URL(link.path, location.origin).href;
      guestLinkOut.hidden = false;
      guestLinkOut.select();
    } catch (e) {
      fail(e);
    }
  });
  async function letIn(id, guestId, action) {
    try {
      const answer = await post(path("/api/calls/", id, "/lobby/", guestId, `/${action}`), {});
      if (action === "admit") remember(answer);
      lobby = lobby.filter((g) => g.id !== guestId);
      draw();
    } catch (e) {
      fail(e);
    }
  }
  inviteForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const logins = inviteInput.value.split(/[\s,;]+/).filter(Boolean);
    if (!active || !logins.length) return;
    try {
      remember(await post(callPath(active.id, "/invite"), { logins }));
      inviteInput.value = "";
      draw();
    } catch (err) {
      fail(err);
    }
  });

  // Drawing

  function draw() {
    const call = active && calls.get(active.id);
    if (!call) return;
    title.textContent = callTitle(call);
    if (call.state === "ringing") status.textContent = tr("calling");
    else status.textContent = call.kind === "meeting" ? tr("meetingActive") : tr("active");
    micButton.setAttribute("aria-pressed", String(active.audioMuted));
    camButton.setAttribute("aria-pressed", String(active.videoMuted));
    screenButton.textContent = active.media?.screen ? tr("screenStop") : tr("screen");
    screenButton.setAttribute("aria-pressed", String(Boolean(active.media?.screen)));
    inviteForm.hidden = call.kind !== "meeting";

    const wanted = [];
    if (active.media?.local) {
      const mine = grid.tile("me/camera", me(), "camera");
      mine.classList.add("mine");
      tileVideo(mine, active.media.local.getVideoTracks(), true);
      mine.querySelector("figcaption").textContent = tr("you");
      wanted.push(mine);
    }
    for (const [key, group] of active.media?.remote() || []) {
      const el = grid.tile(key, group.login, group.source);
      const tracks = [group.video, group.audio].filter(Boolean);
      tileVideo(el, tracks, false);
      if (group.mid) el.dataset.mid = group.mid;
      else delete el.dataset.mid;
      const paused = Boolean(group.mid && pausedMids.has(group.mid));
      el.classList.toggle("paused", paused);
      const name = nameOf(group.login);
      el.querySelector("figcaption").textContent = paused
        ? tr("pausedTile", { name })
        : group.source === "screen"
          ? tr("screenOf", { name })
          : name;
      const who = member(call, group.login);
      el.classList.toggle("muted", Boolean(who?.audio_muted));
      el.classList.toggle("speaking", call.speaker === group.login && group.source === "camera");
      wanted.push(el);
    }
    grid.show(wanted);
    drawPeople(call);
    drawLobby(call);
    drawRecording(call);
  }

  function drawLobby(call) {
    const moderating = call.kind === "meeting" && call.moderator === me();
    guestLinkButton.hidden = !moderating;
    lobbyBox.hidden = !moderating || lobby.length === 0;
    replace(
      lobbyList,
      (moderating ? lobby : []).map((g) =>
        h(
          "li",
          { dataset: { guest: g.id } },
          h("span", { class: "name", text: g.name }),
          h("button", {
            type: "button",
            class: "lobby-admit primary",
            text: tr("admit"),
            onclick: () => letIn(call.id, g.id, "admit"),
          }),
          h("button", {
            type: "button",
            class: "lobby-refuse",
            text: tr("turnAway"),
            onclick: () => letIn(call.id, g.id, "refuse"),
          }),
        ),
      ),
    );
  }

  const away = (login) => [...unreachable.values()].some((logins) => logins.includes(login));
  function drawPeople(call) {
    const moderating = call.kind === "meeting" && call.moderator === me();
    replace(
      peopleList,
      call.members
        .filter((m) => m.state === "joined" || m.state === "ringing")
        .map((m) =>
          h(
            "li",
            {
              dataset: { login: m.login, state: m.state },
              class:
                [m.audio_muted ? "muted" : "", away(m.login) ? "unreachable" : ""]
                  .join(" ")
                  .trim() || null,
            },
            h("span", {
              class: "name",
              text: m.login === me() ? `${m.name} (${tr("you")})` : m.name,
            }),
            m.login === call.moderator && call.kind === "meeting"
              ? h("span", { class: "muted", text: ` · ${tr("moderator")}` })
              : null,
            m.guest ? h("span", { class: "muted guest", text: ` · ${tr("guest")}` }) : null,
            h("span", { class: "muted state", text: ` · ${tr(m.state)}` }),
            away(m.login) ? h("span", { class: "away", text: ` · ${tr("unreachable")}` }) : null,
            moderating && m.login !== me() && m.state === "joined"
              ? [
                  h("button", {
                    type: "button",
                    class: "mod-mute",
                    text: tr("mute"),
                    disabled: m.held,
                    onclick: () => moderate(call.id, m.login, "mute"),
                  }),
                  h("button", {
                    type: "button",
                    class: "mod-remove danger",
                    text: tr("remove"),
                    onclick: () => moderate(call.id, m.login, "remove"),
                  }),
                ]
              : null,
          ),
        ),
    );
  }

  async function moderate(id, login, action) {
    try {
      const where = path("/api/calls/", id, "/participants/", login);
      remember(action === "mute" ? await post(`${where}/mute`, {}) : await del(where));
      draw();
    } catch (e) {
      fail(e);
    }
  }

  // Buttons elsewhere on the page

  function decorate(list) {
    for (const li of list.querySelectorAll("li.person[data-login]")) {
      const login = li.dataset.login;
      if (login === me() || li.querySelector(".call-buttons")) continue;
      li.append(
        h(
          "span",
          { class: "call-buttons" },
          h("button", {
            type: "button",
            class: "call",
            text: tr("call"),
            "aria-label": `${tr("call")}: ${nameOf(login)}`,
            onclick: () => start({ kind: "direct", invite: [login] }),
          }),
          h("button", {
            type: "button",
            class: "meet",
            text: tr("meeting"),
            "aria-label": tr("meetingWith", { name: nameOf(login) }),
            onclick: () => start({ kind: "meeting", invite: [login] }),
          }),
        ),
      );
    }
  }

  const convTools = h("div", { class: "call-tools", id: "call-tools" });
  function drawConvTools(id) {
    const conv = id ? conversation(id) : null;
    replace(
      convTools,
      conv
        ? h("button", {
            type: "button",
            id: "call-conversation",
            class: "call",
            text: conv.kind === "direct" ? tr("call") : tr("meeting"),
            onclick: () =>
              start({ kind: conv.kind === "direct" ? "direct" : "meeting", conversation: conv.id }),
          })
        : null,
    );
  }

  /** Attach to the page once it is drawn: directory entries and the conversation header. */
  function mount() {
    const list = byId("directory-results");
    if (list) {
      decorate(list);
      new MutationObserver(() => decorate(list)).observe(list, { childList: true });
    }
    const header = document.querySelector("#conversation .conv-header");
    if (header) header.append(convTools);
    on("opened", ({ id }) => drawConvTools(id));
    on("current-changed", () => drawConvTools(store.currentId));
    drawConvTools(store.currentId);
  }

  return { root, mount, start, leave, close };
}
