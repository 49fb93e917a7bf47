// The edge's HTTP API as the page uses it.
//
// Every call is same-origin. State-changing calls carry the session's CSRF token
// (X-CSRF-Token), kept in memory only: the login answer and GET /api/me give it. The
// session cookie itself is HttpOnly and never seen here. Errors come back as ApiError with
// the server's own text ({"error": "..."}), which the screens show as it is.
//
// Each fetch asks for referrerPolicy "same-origin" (as the edge's Referrer-Policy header
// does): under no-referrer the Fetch standard lets a browser send "Origin: null" on a
// same-origin POST, and the edge refuses a state-changing request whose Origin is not its
// own. index.html's <meta name="referrer"> does the same for XMLHttpRequest (uploads).

import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrf(token) {
  csrfToken = token;
}

/** Called when a request other than a login answers 401: the session has ended. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function errorOf(status, statusText, data, retryAfter) {
  const message =
    (data && typeof data.error === "string" && data.error) ||
    (data && typeof data.message === "string" && data.message) ||
    `${status} ${statusText || ""}`.trim();
  return new ApiError(status, message, retryAfter);
}

export async function api(method, path, body, { signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      referrerPolicy: "same-origin",
      signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, t("error.network"));
  }
  let data = null;
  if ((response.headers.get("Content-Type") || "").includes("json")) {
    data = await response.json().catch(() => null);
  }
  if (!response.ok) {
    const error = errorOf(
      response.status,
      response.statusText,
      data,
      response.headers.get("Retry-After"),
    );
    if (response.status === 401 && !path.startsWith("/api/login")) onUnauthorized(error);
    throw error;
  }
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body, opts);
export const put = (path, body) => api("PUT", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** "/api/chat/conversations/" + encoded id + rest */
export function path(...parts) {
  return parts.map((p, i) => (i % 2 === 1 ? encodeURIComponent(p) : p)).join("");
}

export function query(base, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${base}?${s}` : base;
}

/**
 * Upload one file as the raw request body (POST /api/chat/uploads) with progress.
 * XMLHttpRequest, because fetch() reports no upload progress. Returns {promise, abort}.
 * A body over the cap is refused with 413 and the server's message; if the server closes
 * the connection before the browser has read the answer, the error says so.
 */
export function upload(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", "/api/chat/uploads");
    xhr.responseType = "json";
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("X-File-Name", encodeURIComponent(file.name));
    if (csrfToken) xhr.setRequestHeader("X-CSRF-Token", csrfToken);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.addEventListener("load", () => {
      const data = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300 && data) resolve(data);
      else {
        const error = errorOf(xhr.status, xhr.statusText, data, null);
        if (xhr.status === 401) onUnauthorized(error);
        reject(error);
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, t("upload.failed"))));
    xhr.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}
