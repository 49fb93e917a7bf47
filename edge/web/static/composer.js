// Writing a message: the text box, replies, edits, attachments, typing and @mentions.
//
// Keys: Enter sends (Shift+Enter is a new line), Escape cancels an edit or a reply (or
// closes the mention list), ArrowUp in an empty box edits my last message. Typing "@" and a
// few letters lists matching members; ArrowUp/ArrowDown choose, Enter or Tab insert.
//
// Files are uploaded as soon as they are chosen (POST /api/chat/uploads, with a progress
// bar each); the message is sent with their tokens once all are done. A refused upload (413
// over the cap) shows the server's message beside the file.
// Typing: {"typing": true} when typing starts and again every 4 s while it goes on,
// {"typing": false} 5 s after the last key or when the message is sent.

import { ApiError, path, post, upload } from "./api.js";
import { h, replace } from "./dom.js";
import { formatSize, t } from "./i18n.js";
import { nameOf, store } from "./store.js";

const TYPING_REPEAT_MS = 4000;
const TYPING_IDLE_MS = 5000;

export function createComposer({ send, save, editLast, members }) {
  let conversationId = null;
  let replyTo = null; // message
  let editing = null; // message
  let uploads = []; // {file, token, error, abort, row}
  let typingSince = 0;
  let typingTimer = null;
  let suggestions = [];
  let chosen = 0;

  const text = h("textarea", {
    id: "composer",
    rows: 2,
    placeholder: t("msg.placeholder"),
    "aria-label": t("msg.placeholder"),
    spellcheck: true,
  });
  const banner = h("div", { class: "composer-banner", id: "composer-banner", hidden: true });
  const files = h("ul", { class: "uploads", id: "uploads" });
  const error = h("p", { class: "error", role: "alert", id: "composer-error", hidden: true });
  const fileInput = h("input", {
    type: "file",
    id: "file-input",
    multiple: true,
    class: "visually-hidden",
    tabIndex: -1,
  });
  const attach = h("label", {
    htmlFor: "file-input",
    class: "button attach",
    tabIndex: 0,
    role: "button",
    text: t("msg.attach"),
  });
  const sendButton = h("button", {
    type: "submit",
    class: "primary",
    id: "send",
    text: t("msg.send"),
  });
  const mentionList = h("ul", {
    class: "mention-list",
    id: "mention-list",
    role: "listbox",
    "aria-label": t("msg.mentions"),
    hidden: true,
  });
  const form = h(
    "form",
    { class: "composer", id: "composer-form" },
    banner,
    files,
    error,
    mentionList,
    h(
      "div",
      { class: "composer-row" },
      text,
      h("div", { class: "composer-buttons" }, attach, fileInput, sendButton),
    ),
  );

  function showError(message) {
    error.textContent = message || "";
    error.hidden = !message;
  }

  function setBanner(label, message) {
    if (!label) {
      banner.hidden = true;
      banner.replaceChildren();
      return;
    }
    replace(
      banner,
      h("span", { class: "banner-label", text: label }),
      message ? h("span", { class: "banner-text", text: message.text.slice(0, 140) }) : null,
      h("button", { type: "button", class: "link", text: t("msg.cancel"), onclick: cancel }),
    );
    banner.hidden = false;
  }

  function cancel() {
    if (editing) text.value = "";
    editing = null;
    replyTo = null;
    setBanner(null);
    sendButton.textContent = t("msg.send");
    text.focus();
  }

  function stopTyping() {
    clearTimeout(typingTimer);
    if (typingSince && conversationId) {
      post(path("/api/chat/conversations/", conversationId, "/typing"), { typing: false }).catch(
        () => {},
      );
    }
    typingSince = 0;
  }

  function typing() {
    if (!conversationId || editing) return;
    const now = Date.now();
    if (now - typingSince > TYPING_REPEAT_MS) {
      typingSince = now;
      post(path("/api/chat/conversations/", conversationId, "/typing"), { typing: true }).catch(
        () => {},
      );
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  // @mentions
  function mentionQuery() {
    const upto = text.value.slice(0, text.selectionStart);
    const m = /(^|\s)@([\p{L}\p{N}._-]*)$/u.exec(upto);
    return m ? m[2] : null;
  }

  function closeMentions() {
    suggestions = [];
    mentionList.hidden = true;
    text.removeAttribute("aria-activedescendant");
  }

  function drawMentions() {
    replace(
      mentionList,
      suggestions.map((m, i) =>
        h(
          "li",
          {
            id: `mention-${i}`,
            role: "option",
            class: i === chosen ? "chosen" : null,
            "aria-selected": i === chosen ? "true" : "false",
            onmousedown: (e) => {
              e.preventDefault();
              insertMention(m.login);
            },
          },
          h("span", { class: "name", text: m.name || nameOf(m.login) }),
          h("span", { class: "muted", text: ` @${m.login}` }),
        ),
      ),
    );
    mentionList.hidden = suggestions.length === 0;
    if (suggestions.length) text.setAttribute("aria-activedescendant", `mention-${chosen}`);
  }

  function updateMentions() {
    const q = mentionQuery();
    if (q === null) return closeMentions();
    const needle = q.toLocaleLowerCase();
    suggestions = members()
      .filter((m) => m.login !== store.me?.login)
      .filter(
        (m) =>
          m.login.toLocaleLowerCase().startsWith(needle) ||
          (m.name || "").toLocaleLowerCase().includes(needle),
      )
      .slice(0, 8);
    chosen = 0;
    drawMentions();
  }

  function insertMention(login) {
    const at = text.selectionStart;
    const before = text.value.slice(0, at).replace(/@([\p{L}\p{N}._-]*)$/u, `@${login} `);
    text.value = before + text.value.slice(at);
    text.selectionStart = text.selectionEnd = before.length;
    closeMentions();
    text.focus();
  }

  // attachments
  function drawUpload(u) {
    const progress = h("progress", { max: 1, value: 0 });
    const status = h("span", { class: "muted", text: formatSize(u.file.size) });
    const remove = h("button", {
      type: "button",
      class: "link",
      text: "×",
      "aria-label": t("upload.remove", { name: u.file.name }),
      onclick: () => {
        u.abort?.();
        uploads = uploads.filter((x) => x !== u);
        u.row.remove();
      },
    });
    u.row = h(
      "li",
      { class: "upload", dataset: { name: u.file.name } },
      h("span", { class: "file-name", text: u.file.name }),
      progress,
      status,
      remove,
    );
    u.progress = progress;
    u.status = status;
    files.append(u.row);
  }

  function refuse(u, message) {
    u.error = message;
    u.row.classList.add("failed");
    u.progress.remove();
    u.status.textContent = message;
    u.status.setAttribute("role", "alert");
  }

  function addFiles(list) {
    // The cap, if the edge tells it (GET /api/me "attachment_bytes"): a file over it is
    // refused here, before a byte is sent. The edge refuses it anyway (413), but over
    // HTTP/1.1 its answer may be lost when it closes the connection mid-upload.
    const cap = store.me?.attachment_bytes;
    for (const file of list) {
      const u = { file, token: null, error: null };
      uploads.push(u);
      drawUpload(u);
      if (typeof cap === "number" && file.size > cap) {
        refuse(u, t("upload.too.large", { size: formatSize(file.size), cap: formatSize(cap) }));
        continue;
      }
      const started = upload(file, (loaded, total) => {
        u.progress.value = total ? loaded / total : 0;
      });
      u.abort = started.abort;
      u.done = started.promise.then(
        (answer) => {
          u.token = answer.token;
          u.progress.value = 1;
          u.row.classList.add("done");
          u.status.textContent = formatSize(answer.size);
        },
        (e) => {
          if (e && e.name === "AbortError") return;
          refuse(u, e instanceof ApiError ? e.message : String(e));
        },
      );
    }
  }

  fileInput.addEventListener("change", () => {
    addFiles(Array.from(fileInput.files || []));
    fileInput.value = "";
  });
  attach.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      fileInput.click();
    }
  });
  text.addEventListener("paste", (e) => {
    const pasted = Array.from(e.clipboardData?.files || []);
    if (pasted.length) {
      e.preventDefault();
      addFiles(pasted);
    }
  });
  form.addEventListener("dragover", (e) => {
    if (e.dataTransfer?.types?.includes("Files")) e.preventDefault();
  });
  form.addEventListener("drop", (e) => {
    const dropped = Array.from(e.dataTransfer?.files || []);
    if (dropped.length) {
      e.preventDefault();
      addFiles(dropped);
    }
  });

  async function submit() {
    showError(null);
    const value = text.value.replace(/\s+$/, "");
    if (editing) {
      if (!value.trim()) return;
      const message = editing;
      try {
        await save(message, value);
        cancel();
      } catch (e) {
        showError(e.message);
      }
      return;
    }
    if (uploads.some((u) => !u.token && !u.error)) {
      showError(t("upload.wait"));
      return;
    }
    const tokens = uploads.filter((u) => u.token).map((u) => u.token);
    if (!value.trim() && tokens.length === 0) return;
    sendButton.disabled = true;
    try {
      await send({ text: value, reply_to: replyTo?.id ?? null, attachments: tokens });
      text.value = "";
      uploads = [];
      files.replaceChildren();
      replyTo = null;
      setBanner(null);
      stopTyping();
    } catch (e) {
      showError(e.message);
    } finally {
      sendButton.disabled = false;
      text.focus();
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  text.addEventListener("input", () => {
    updateMentions();
    if (text.value) typing();
  });
  text.addEventListener("blur", () => setTimeout(closeMentions, 150));
  text.addEventListener("keydown", (e) => {
    if (!mentionList.hidden && suggestions.length) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        chosen =
          (chosen + (e.key === "ArrowDown" ? 1 : suggestions.length - 1)) % suggestions.length;
        drawMentions();
        return;
      }
      if (e.key === "Enter" || e.key === "Tab") {
        e.preventDefault();
        insertMention(suggestions[chosen].login);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        closeMentions();
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === "Escape" && (editing || replyTo)) {
      e.preventDefault();
      cancel();
    } else if (e.key === "ArrowUp" && !text.value && !editing) {
      if (editLast()) e.preventDefault();
    }
  });

  return {
    root: form,
    focus: () => text.focus(),
    setConversation(id) {
      if (id === conversationId) return;
      stopTyping();
      conversationId = id;
      editing = null;
      replyTo = null;
      text.value = "";
      for (const u of uploads) u.abort?.();
      uploads = [];
      files.replaceChildren();
      setBanner(null);
      showError(null);
      closeMentions();
    },
    reply(message) {
      editing = null;
      replyTo = message;
      setBanner(
        t("msg.replying", { name: message.author_name || nameOf(message.author) }),
        message,
      );
      text.focus();
    },
    edit(message) {
      replyTo = null;
      editing = message;
      text.value = message.text;
      setBanner(t("msg.editing"));
      sendButton.textContent = t("msg.save");
      text.focus();
      text.selectionStart = text.selectionEnd = text.value.length;
    },
    forget(messageId) {
      if (editing?.id === messageId || replyTo?.id === messageId) cancel();
    },
  };
}
