// The list of my conversations: newest activity first, unread and mention badges, presence
// of the other person in a direct one, folders (a filter, and new/delete), the archive.
//
// GET /api/chat/conversations (and ?archived=1 for the archive), GET /api/chat/folders;
// frames keep the store current and the list is redrawn from it, keeping the focus on the
// conversation that had it.

import { del, get, path, post } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import * as presence from "./presence.js";
import { emit, on, otherLogin, sorted, store, titleOf, upsertConversation } from "./store.js";

export async function loadConversations() {
  const [active, archived, folders] = await Promise.all([
    get("/api/chat/conversations?archived=0"),
    get("/api/chat/conversations?archived=1"),
    get("/api/chat/folders"),
  ]);
  store.conversations.clear();
  store.archived.clear();
  store.folders = folders.folders || [];
  for (const c of [...active.conversations, ...archived.conversations]) upsertConversation(c);
  emit("folders");
  emit("conversations");
}

function snippet(conv) {
  const m = conv.last_message;
  if (!m) return "";
  if (m.deleted) return t("msg.deleted");
  const who = m.author === store.me?.login ? t("conv.you") : m.author_name || m.author;
  const text = m.text || (m.attachments?.length ? m.attachments.map((a) => a.name).join(", ") : "");
  return `${who}: ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`;
}

export function createConversationList({ onOpen, openDialog }) {
  let showArchive = false;
  let folderFilter = ""; // "" all, a folder id

  const list = h("ul", { class: "conversations", id: "conversation-list" });
  const folder = h("select", { id: "folder-filter", "aria-label": t("conv.folders") });
  const archiveToggle = h("button", {
    type: "button",
    id: "archive-toggle",
    class: "link",
    "aria-pressed": "false",
    onclick: () => {
      showArchive = !showArchive;
      archiveToggle.setAttribute("aria-pressed", String(showArchive));
      draw();
    },
  });
  const deleteFolder = h("button", {
    type: "button",
    class: "link",
    id: "folder-delete",
    text: t("conv.folder.delete"),
    hidden: true,
    onclick: async () => {
      const id = folderFilter;
      await del(path("/api/chat/folders/", id));
      store.folders = store.folders.filter((f) => f.id !== id);
      folderFilter = "";
      emit("folders");
      await loadConversations();
    },
  });
  const newFolder = h("button", {
    type: "button",
    class: "link",
    id: "folder-new",
    text: t("conv.folder.new"),
    onclick: async () => {
      const name = window.prompt(t("conv.folder.name"));
      if (!name || !name.trim()) return;
      const created = await post("/api/chat/folders", { name: name.trim() });
      store.folders = [...store.folders, created];
      folderFilter = created.id;
      emit("folders");
    },
  });
  const root = h(
    "section",
    { class: "panel chats", id: "chats", "aria-label": t("nav.chats") },
    h(
      "div",
      { class: "toolbar" },
      h("button", {
        type: "button",
        id: "new-group",
        text: t("conv.new.group"),
        onclick: () => openDialog("group"),
      }),
      h("button", {
        type: "button",
        id: "new-channel",
        text: t("conv.new.channel"),
        onclick: () => openDialog("channel"),
      }),
      h("button", {
        type: "button",
        id: "browse-channels",
        text: t("conv.channels"),
        onclick: () => openDialog("channels"),
      }),
    ),
    h("div", { class: "toolbar folders" }, folder, newFolder, deleteFolder, archiveToggle),
    list,
  );

  function drawFolders() {
    if (folderFilter && !store.folders.some((f) => f.id === folderFilter)) folderFilter = "";
    replace(
      folder,
      h("option", { value: "", text: t("conv.folder.all") }),
      store.folders.map((f) =>
        h("option", { value: f.id, text: f.name, selected: f.id === folderFilter }),
      ),
    );
    deleteFolder.hidden = !folderFilter;
  }

  function item(conv) {
    const other = otherLogin(conv);
    const current = conv.id === store.currentId;
    return h(
      "li",
      { class: ["conv", current && "current", conv.unread && "has-unread"] },
      h(
        "button",
        {
          type: "button",
          class: "conv-button",
          dataset: { conversation: conv.id, kind: conv.kind },
          "aria-current": current ? "true" : null,
          onclick: () => onOpen(conv.id),
        },
        other
          ? presence.dot(other)
          : h("span", { class: `kind-icon ${conv.kind}`, "aria-hidden": "true" }),
        h(
          "span",
          { class: "conv-text" },
          h("span", { class: "conv-name", text: titleOf(conv) }),
          h("span", { class: "conv-last muted", text: snippet(conv) }),
        ),
        conv.mentions
          ? h("span", {
              class: "badge mention",
              title: t("conv.mentions", { n: conv.mentions }),
              "aria-label": t("conv.mentions", { n: conv.mentions }),
              text: "@",
            })
          : null,
        conv.unread
          ? h("span", {
              class: "badge unread",
              title: t("conv.unread", { n: conv.unread }),
              "aria-label": t("conv.unread", { n: conv.unread }),
              text: conv.unread > 99 ? "99+" : String(conv.unread),
            })
          : null,
      ),
    );
  }

  function draw() {
    archiveToggle.textContent = showArchive ? t("conv.archive.hide") : t("conv.archive.show");
    folder.disabled = showArchive;
    const focused = document.activeElement?.dataset?.conversation;
    let convs = sorted(showArchive ? store.archived : store.conversations);
    if (!showArchive && folderFilter) convs = convs.filter((c) => c.folder_id === folderFilter);
    replace(
      list,
      convs.length
        ? convs.map(item)
        : h("li", {
            class: "empty muted",
            text: showArchive ? t("conv.empty.archive") : t("conv.empty"),
          }),
    );
    if (focused) list.querySelector(`[data-conversation="${CSS.escape(focused)}"]`)?.focus();
    const unread = sorted(store.conversations).reduce((n, c) => n + (c.unread || 0), 0);
    document.title = unread ? `(${unread}) ${t("app.title")}` : t("app.title");
  }

  folder.addEventListener("change", () => {
    folderFilter = folder.value;
    deleteFolder.hidden = !folderFilter;
    draw();
  });
  let pending = false;
  const later = () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      draw();
    });
  };
  on("conversations", later);
  on("opened", later);
  on("folders", () => {
    drawFolders();
    later();
  });
  drawFolders();
  draw();
  return { root, draw };
}
