// Modal dialogs (<dialog>, so focus is trapped and Escape closes them): a new group, a new
// channel, the channels of this plant (join or open), adding members.

import { ApiError, get, patch, path, post } from "./api.js";
import { field, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { upsertConversation } from "./store.js";

function logins(text) {
  return text
    .split(/[\s,;]+/)
    .map((s) => s.replace(/^@/, "").trim())
    .filter(Boolean);
}

export function createDialogs({ onCreated }) {
  const dialog = h("dialog", { id: "dialog", class: "dialog", "aria-labelledby": "dialog-title" });
  dialog.addEventListener("close", () => dialog.replaceChildren());

  function show(titleText, ...content) {
    replace(
      dialog,
      h("h2", { id: "dialog-title", text: titleText }),
      content,
      h(
        "form",
        { method: "dialog", class: "dialog-close" },
        h("button", { class: "link", "aria-label": t("dialog.close"), text: "×" }),
      ),
    );
    if (!dialog.open) dialog.showModal();
    dialog.querySelector("input, select, textarea, button")?.focus();
  }

  function form(fields, submitText, action) {
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const submit = h("button", { type: "submit", class: "primary", text: submitText });
    const el = h(
      "form",
      { class: "dialog-form", novalidate: true },
      fields,
      error,
      h(
        "div",
        { class: "actions" },
        submit,
        h("button", { type: "button", text: t("dialog.cancel"), onclick: () => dialog.close() }),
      ),
    );
    el.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.hidden = true;
      submit.disabled = true;
      try {
        await action();
        dialog.close();
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.message : String(err);
        error.hidden = false;
      } finally {
        submit.disabled = false;
      }
    });
    return el;
  }

  function group() {
    const name = h("input", { id: "group-name", required: true, maxlength: "200" });
    const members = h("input", { id: "group-members", autocomplete: "off" });
    const topic = h("input", { id: "group-topic", maxlength: "500" });
    show(
      t("conv.new.group"),
      form(
        [
          field(t("dialog.name"), name),
          field(t("dialog.members"), members),
          field(t("dialog.topic"), topic),
        ],
        t("dialog.create"),
        async () => {
          const conv = await post("/api/chat/groups", {
            name: name.value.trim(),
            members: logins(members.value),
            ...(topic.value.trim() ? { topic: topic.value.trim() } : {}),
          });
          upsertConversation(conv);
          onCreated(conv.id);
        },
      ),
    );
  }

  function channel() {
    const name = h("input", { id: "channel-name", required: true, maxlength: "200" });
    const topic = h("input", { id: "channel-topic", maxlength: "500" });
    show(
      t("conv.new.channel"),
      form(
        [field(t("dialog.name"), name), field(t("dialog.topic"), topic)],
        t("dialog.create"),
        async () => {
          const conv = await post("/api/chat/channels", {
            name: name.value.trim(),
            ...(topic.value.trim() ? { topic: topic.value.trim() } : {}),
          });
          upsertConversation(conv);
          onCreated(conv.id);
        },
      ),
    );
  }

  async function channels() {
    const status = h("p", { class: "muted", role: "status" });
    const list = h("ul", { class: "channel-list", id: "channel-list" });
    show(t("conv.channels"), status, list);
    try {
      const answer = await get("/api/chat/channels");
      if (!answer.channels.length) status.textContent = t("dialog.no.channels");
      replace(
        list,
        answer.channels.map((c) =>
          h(
            "li",
            { class: "channel", dataset: { channel: c.id } },
            h(
              "div",
              { class: "who" },
              h("span", { class: "name", text: c.name }),
              c.topic ? h("span", { class: "muted", text: c.topic }) : null,
              h("span", { class: "muted", text: t("dialog.channel.members", { n: c.members }) }),
            ),
            h("button", {
              type: "button",
              class: c.joined ? null : "primary",
              text: c.joined ? t("dialog.open") : t("dialog.join"),
              onclick: async () => {
                try {
                  const conv = c.joined
                    ? await get(path("/api/chat/conversations/", c.id))
                    : await post(path("/api/chat/channels/", c.id, "/join"), {});
                  upsertConversation(conv);
                  dialog.close();
                  onCreated(conv.id);
                } catch (e) {
                  status.textContent = e.message;
                }
              },
            }),
          ),
        ),
      );
    } catch (e) {
      status.textContent = e.message;
    }
  }

  function members(conv) {
    const input = h("input", { id: "add-members", required: true, autocomplete: "off" });
    show(
      t("conv.add.members"),
      form([field(t("dialog.members"), input)], t("dialog.add"), async () => {
        upsertConversation(
          await post(path("/api/chat/conversations/", conv.id, "/members"), {
            logins: logins(input.value),
          }),
        );
      }),
    );
  }

  function details(conv) {
    const name = h("input", {
      id: "details-name",
      required: true,
      maxlength: "200",
      value: conv.name || "",
    });
    const topic = h("input", { id: "details-topic", maxlength: "500", value: conv.topic || "" });
    show(
      t("conv.details"),
      form(
        [field(t("dialog.name"), name), field(t("dialog.topic"), topic)],
        t("msg.save"),
        async () => {
          upsertConversation(
            await patch(path("/api/chat/conversations/", conv.id), {
              name: name.value.trim(),
              topic: topic.value.trim(),
            }),
          );
        },
      ),
    );
  }

  return {
    root: dialog,
    open(kind, arg) {
      if (kind === "group") group();
      else if (kind === "channel") channel();
      else if (kind === "channels") channels();
      else if (kind === "members") members(arg);
      else if (kind === "details") details(arg);
    },
  };
}
