// Messages as DOM: author, the command that made them, content, embeds, components, attachments.
import { escapeHtml, renderMarkdown } from "./markdown.js";

const EYE = '<svg width="16" height="16" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M1 12s4-7 11-7 11 7 11 7-4 7-11 7S1 12 1 12z"/><circle cx="12" cy="12" r="3"/></svg>';
const BUTTON_STYLES = { 1: "primary", 2: "secondary", 3: "success", 4: "danger", 5: "secondary" };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "html") node.innerHTML = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}
export { el };

export function formatSize(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(2)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

function colour(value) {
  return typeof value === "number" ? `#${value.toString(16).padStart(6, "0")}` : null;
}

function renderEmbed(embed, names) {
  const box = el("section", { class: "embed", "aria-label": embed.title ? `Embed: ${embed.title}` : "Embed" });
  const bar = colour(embed.color);
  if (bar) box.style.borderLeftColor = bar;
  if (embed.author && embed.author.name) box.append(el("div", { class: "embed-footer", text: embed.author.name }));
  if (embed.title) {
    const title = el("h3", { class: "embed-title", html: renderMarkdown(embed.title, names) });
    box.append(title);
  }
  if (embed.description) box.append(el("div", { class: "embed-description", html: renderMarkdown(embed.description, names) }));
  if (embed.fields && embed.fields.length) {
    const list = el("dl", { class: "embed-fields" });
    for (const field of embed.fields) {
      list.append(
        el("div", { class: `embed-field${field.inline ? " inline" : ""}` },
          el("dt", { html: renderMarkdown(field.name, names) }),
          el("dd", { html: renderMarkdown(field.value, names) })),
      );
    }
    box.append(list);
  }
  if (embed.image && embed.image.url) box.append(el("img", { src: embed.image.url, alt: "" }));
  const footer = [embed.footer && embed.footer.text, embed.timestamp && new Date(embed.timestamp).toLocaleString()].filter(Boolean);
  if (footer.length) box.append(el("div", { class: "embed-footer", text: footer.join(" · ") }));
  return box;
}

function renderComponent(message, component, actions) {
  if (component.type === 2) {
    const label = [component.emoji && component.emoji.name, component.label].filter(Boolean).join(" ");
    if (component.style === 5) {
      return el("a", { class: "button secondary", href: component.url, target: "_blank", rel: "noopener", text: `${label} ↗` });
    }
    return el("button", {
      type: "button",
      class: `button ${BUTTON_STYLES[component.style] || "secondary"}`,
      disabled: Boolean(component.disabled),
      "data-custom-id": component.custom_id,
      text: label || component.custom_id,
      onclick: () => actions.click(message, component.custom_id),
    });
  }
  if (component.type === 3) {
    const multiple = (component.max_values || 1) > 1;
    const id = `select-${message.id}-${component.custom_id}`;
    const select = el("select", {
      class: "select",
      id,
      multiple,
      disabled: Boolean(component.disabled),
      "data-custom-id": component.custom_id,
      "aria-label": component.placeholder || "Choose an option",
    });
    if (!multiple) select.append(el("option", { value: "", text: component.placeholder || "Choose…" }));
    for (const option of component.options || []) {
      select.append(el("option", { value: option.value, text: option.label, title: option.description || undefined }));
    }
    const send = () => {
      const values = [...select.selectedOptions].map((o) => o.value).filter((v) => v !== "");
      if (values.length) actions.click(message, component.custom_id, values);
    };
    if (!multiple) {
      select.addEventListener("change", send);
      return select;
    }
    return el("span", {}, select, el("button", { type: "button", class: "button secondary", text: "Apply", onclick: send }));
  }
  return null;
}

function renderComponents(message, actions) {
  const box = el("div", { class: "components" });
  for (const row of message.components || []) {
    const children = row.type === 1 ? row.components || [] : [row];
    const line = el("div", { class: "action-row" });
    for (const component of children) {
      const node = renderComponent(message, component, actions);
      if (node) line.append(node);
    }
    if (line.childElementCount) box.append(line);
  }
  return box.childElementCount ? box : null;
}

function renderAttachment(attachment, personId) {
  const url = `${attachment.url}?person_id=${personId}`;
  const meta = el("div", { class: "attachment-meta" },
    el("a", { href: url, download: attachment.filename, text: attachment.filename }),
    ` · ${formatSize(attachment.size)}`);
  const type = attachment.content_type || "";
  if (type.startsWith("video/")) {
    const video = el("video", {
      controls: true,
      preload: "metadata",
      src: url,
      "aria-label": `Video ${attachment.filename}`,
      "data-size": String(attachment.size),
    });
    return el("figure", { class: "attachment", style: "margin:0" }, video, meta);
  }
  if (type.startsWith("image/")) {
    return el("figure", { class: "attachment", style: "margin:0" }, el("img", { src: url, alt: attachment.filename }), meta);
  }
  return el("div", { class: "attachment" }, meta);
}

// One message as a list item; `actions` has click(message, customId, values), dismiss(message)
// and the message commands the person may run (appsFor(message)).
export function renderMessage(message, ctx) {
  const { names, personId, actions } = ctx;
  const item = el("li", {
    class: `message${message.ephemeral ? " ephemeral" : ""}`,
    "data-message-id": message.id,
    "data-edit-count": String(message.edit_count),
    "data-author": message.author.name,
    "aria-label": `${message.author.name}${message.ephemeral ? ", only you can see this" : ""}`,
    tabindex: "-1",
  });
  if (message.interaction) {
    const used = message.interaction.name ? `/${message.interaction.name}` : "an interaction";
    item.append(el("div", { class: "message-used", text: `${message.interaction.user_name} used ${used}` }));
  } else if (message.reference) {
    item.append(el("div", { class: "reference", text: `↪ replying to ${message.reference.author}: ${message.reference.content}` }));
  }
  const time = new Date(message.timestamp);
  item.append(el("div", { class: "message-head" },
    el("span", { class: "author", text: message.author.name }),
    message.author.bot ? el("span", { class: "bot-tag", text: "APP" }) : null,
    el("time", { class: "timestamp", datetime: message.timestamp, text: time.toLocaleTimeString() }),
    message.edited ? el("span", { class: "edited", text: "(edited)" }) : null));
  if (message.loading) {
    item.append(el("div", { class: "thinking", role: "status", text: `${message.author.name} is thinking…` }));
  }
  if (message.content) item.append(el("div", { class: "content", html: renderMarkdown(message.content, names) }));
  for (const embed of message.embeds || []) item.append(renderEmbed(embed, names));
  if ((message.attachments || []).length) {
    const box = el("div", { class: "attachments" });
    for (const attachment of message.attachments) box.append(renderAttachment(attachment, personId));
    item.append(box);
  }
  const components = renderComponents(message, actions);
  if (components) item.append(components);
  if (message.ephemeral) {
    item.append(el("div", { class: "only-you" },
      el("span", { class: "eye", "aria-hidden": "true", html: EYE }),
      el("span", { class: "only-you-text", text: "Only you can see this" }),
      "·",
      el("button", { type: "button", class: "link-button", text: "Dismiss message", onclick: () => actions.dismiss(message) })));
  }
  const apps = actions.appsFor(message);
  if (apps.length) {
    const menuId = `apps-${message.id}`;
    const toggle = el("button", {
      type: "button", class: "icon-button", "aria-haspopup": "menu", "aria-expanded": "false",
      "aria-controls": menuId, "aria-label": `Apps for this message by ${message.author.name}`, text: "Apps",
    });
    const menu = el("ul", { class: "apps-menu", id: menuId, role: "menu", hidden: true });
    const close = () => { menu.hidden = true; toggle.setAttribute("aria-expanded", "false"); toggle.focus(); };
    for (const name of apps) {
      menu.append(el("li", { role: "none" }, el("button", {
        type: "button", role: "menuitem", class: "link-button", text: name,
        onclick: () => { close(); actions.messageCommand(message, name); },
      })));
    }
    menu.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.stopPropagation(); close(); } });
    toggle.addEventListener("click", () => {
      menu.hidden = !menu.hidden;
      toggle.setAttribute("aria-expanded", String(!menu.hidden));
      if (!menu.hidden) menu.querySelector("button").focus();
    });
    item.append(el("div", { class: "message-actions" }, toggle, menu));
  }
  return item;
}

export function renderNotice(text) {
  return el("li", { class: "notice", role: "status", text });
}

export { escapeHtml };
