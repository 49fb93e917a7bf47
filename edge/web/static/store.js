// What the page knows: who I am, my conversations, the folders, what is open.
//
// The views read from here and listen with on() for changes; the frames from the edge and
// the answers to the page's own calls both go through upsertConversation / upsertMessage,
// so a message seen twice (the answer to my POST and the frame for it) is one message.

const handlers = new Map(); // type -> Set of functions
const undo = []; // how to remove what listen() added

export function emit(type, detail = {}) {
  for (const fn of [...(handlers.get(type) || [])]) fn(detail);
}

/** Call ``fn(detail)`` on every emit(type) until reset(). */
export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(fn);
}

/** addEventListener on ``target`` (window, document) until reset(). */
export function listen(target, type, fn, options) {
  target.addEventListener(type, fn, options);
  undo.push(() => target.removeEventListener(type, fn, options));
}

/** Forget the session: data, handlers and listeners (logout, a session that ended). */
export function reset() {
  handlers.clear();
  while (undo.length) undo.pop()();
  store.me = null;
  store.conversations.clear();
  store.archived.clear();
  store.folders = [];
  store.currentId = null;
  store.names.clear();
}

export const store = {
  me: null, // GET /api/me
  conversations: new Map(), // id -> Conversation
  archived: new Map(), // id -> Conversation (the archive view)
  folders: [],
  currentId: null,
  names: new Map(), // login -> display name (members, directory, authors)
};

export function rememberName(login, name) {
  if (login && name) store.names.set(login, name);
}

export function nameOf(login) {
  return store.names.get(login) || login;
}

export function isMine(message) {
  return store.me !== null && message.author === store.me.login;
}

/** Title of a conversation: the other person's name for a direct one. */
export function titleOf(conv) {
  if (conv.kind === "direct") {
    const other = (conv.members || []).find((m) => m.login !== store.me?.login);
    if (other) return other.name || nameOf(other.login);
  }
  return conv.name || conv.id;
}

export function otherLogin(conv) {
  if (conv.kind !== "direct") return null;
  return (conv.members || []).find((m) => m.login !== store.me?.login)?.login ?? null;
}

export function upsertConversation(conv) {
  for (const m of conv.members || []) rememberName(m.login, m.name);
  const target = conv.archived ? store.archived : store.conversations;
  const other = conv.archived ? store.conversations : store.archived;
  other.delete(conv.id);
  const before = target.get(conv.id);
  target.set(conv.id, { ...before, ...conv });
  emit("conversations");
  if (conv.id === store.currentId) emit("current-changed", { conversation: conv });
}

export function removeConversation(id) {
  store.conversations.delete(id);
  store.archived.delete(id);
  emit("conversations");
}

export function conversation(id) {
  return store.conversations.get(id) || store.archived.get(id) || null;
}

/** Conversations in order of latest activity. */
export function sorted(map) {
  const activity = (c) => c.last_message?.sent_ms ?? 0;
  return [...map.values()].sort((a, b) => activity(b) - activity(a));
}
