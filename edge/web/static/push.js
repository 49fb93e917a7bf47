// The page's WebSocket to /api/ws: frames in as "frame" events, reconnection with backoff.
//
// The edge subscribes each connection to user:<login> and site by itself; topics the page
// asked for with subscribe() are asked for again after every reconnection. A connection
// that drops is reopened after 1, 2, 4 … 30 s (with jitter, so a restarted edge is not hit
// by every page at once), at once when the browser comes back online or the tab becomes
// visible. Close code 4401 means the session ended: no reconnection, an "ended" event.
// A ping every 25 s keeps idle connections open through firewalls and finds dead ones.
// activity() sends {"type":"activity"} at most every ACTIVITY_MS (presence: not away).
// postMessage() posts a chat message as a "post" frame (no HTTP request per message): the
// edge answers on this connection with "posted" (the message) or "post_failed" (the status
// and error the POST would give).

import { ApiError } from "./api.js";

const PING_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const ACTIVITY_MS = 20_000;
const MAX_DELAY_MS = 30_000;
const POST_TIMEOUT_MS = 15_000;
export const CLOSE_SESSION_ENDED = 4401;

/** The connection ended before the edge answered a post: it may or may not have been written. */
export class PostUnsure extends Error {
  constructor() {
    super("the connection to the edge was lost while sending; check whether the message arrived");
    this.unsure = true;
  }
}

export class Push extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.topics = new Set();
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.lastActivity = 0;
    this.opened = 0;
    this.activitySupported = true;
    this.posts = new Map(); // request id -> {resolve, reject, timer}
    this.postCounter = 0;
    this.wake = () => {
      if (!this.stopped && (!this.ws || this.ws.readyState === WebSocket.CLOSED)) {
        clearTimeout(this.timer);
        this.connect();
      }
    };
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", this.wake);
    this.connect();
  }

  /**
   * Close for good; resolves once the socket has closed (at most ``waitMs`` later). Logout
   * waits for this before it ends the session, so that the close is the page's own and not
   * one the server starts: Hypercorn 0.18 drops the whole HTTP/2 connection (and every
   * request on it) when a close frame arrives for a WebSocket stream it has already ended.
   */
  stop(waitMs = 1000) {
    this.stopped = true;
    window.removeEventListener("online", this.wake);
    document.removeEventListener("visibilitychange", this.wake);
    clearTimeout(this.timer);
    this.stopPing();
    const ws = this.ws;
    this.ws = null;
    if (!ws || ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      ws.addEventListener("close", () => {
        clearTimeout(timer);
        resolve();
      });
      if (ws.readyState === WebSocket.CONNECTING) {
        ws.addEventListener("open", () => ws.close(1000, "bye"));
      } else {
        ws.close(1000, "bye");
      }
    });
  }

  connect() {
    this.emit("state", { state: "connecting" });
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.opened += 1;
      for (const topic of this.topics) this.send({ type: "subscribe", topic });
      this.startPing();
      this.emit("state", { state: "open", reconnected: this.opened > 1 });
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws || typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== "object" || typeof frame.type !== "string") return;
      if (frame.type === "pong") {
        clearTimeout(this.pongTimer);
        return;
      }
      if (frame.type === "posted" || frame.type === "post_failed") {
        this.answered(frame);
        return;
      }
      this.emit("frame", frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.stopPing();
      this.ws = null;
      this.dropPosts();
      if (
        event.code === 1008 &&
        /unknown frame type/.test(event.reason) &&
        /activity/.test(event.reason)
      ) {
        this.activitySupported = false; // an edge without presence: stop sending it
      }
      if (this.stopped) return;
      if (event.code === CLOSE_SESSION_ENDED) {
        this.stopped = true;
        this.emit("ended", { reason: event.reason });
        return;
      }
      this.emit("state", { state: "closed", code: event.code });
      const delay = Math.min(MAX_DELAY_MS, 1000 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt = Math.min(this.attempt + 1, 10);
      this.timer = setTimeout(() => this.connect(), delay);
    });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  send(frame) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Post a chat message ({text, reply_to?, attachments?}) to a conversation over the socket.
   * Resolves with the message; rejects with an ApiError (the status the POST would give),
   * or with a PostUnsure error when the connection ended before the answer (the message may
   * or may not have been written: the history fetched after reconnecting shows which).
   * Not connected: resolves with null at once, nothing sent (post over HTTP instead).
   */
  postMessage(conversation, body) {
    if (!this.connected) return Promise.resolve(null);
    this.postCounter += 1;
    const id = `p${this.postCounter}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.posts.delete(id);
        reject(new PostUnsure());
      }, POST_TIMEOUT_MS);
      this.posts.set(id, { resolve, reject, timer });
      this.send({ type: "post", id, conversation, ...body });
    });
  }

  answered(frame) {
    const waiting = this.posts.get(frame.id);
    if (!waiting) return;
    this.posts.delete(frame.id);
    clearTimeout(waiting.timer);
    if (frame.type === "posted") waiting.resolve(frame.message);
    else waiting.reject(new ApiError(frame.status, frame.error));
  }

  dropPosts() {
    for (const waiting of this.posts.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new PostUnsure());
    }
    this.posts.clear();
  }

  subscribe(topic) {
    this.topics.add(topic);
    this.send({ type: "subscribe", topic });
  }

  unsubscribe(topic) {
    if (this.topics.delete(topic)) this.send({ type: "unsubscribe", topic });
  }

  /** The user did something (key, pointer, focus): tell the edge, at most every 20 s. */
  activity() {
    const now = Date.now();
    if (!this.activitySupported || now - this.lastActivity < ACTIVITY_MS) return;
    if (this.send({ type: "activity" })) this.lastActivity = now;
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.send({ type: "ping", id: String(Date.now()) })) return;
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => {
        if (this.ws) this.ws.close(4000, "no pong");
      }, PONG_TIMEOUT_MS);
    }, PING_MS);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}
