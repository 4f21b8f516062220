// The playground page: servers, channels, members, the person the page acts as, the channel's
// messages kept live by server-sent events, the message box and the bot's forms.
import { api, subscribe } from "./api.js";
import { Composer } from "./composer.js";
import { ModalView } from "./modal.js";
import { el, formatSize, renderMessage, renderNotice } from "./render.js";

const state = {
  world: null,
  guild: null,
  channel: null,
  personId: null,
  commands: [],
  messages: new Map(), // id -> message, for the current channel
  dismissed: new Set(),
  unsubscribe: null,
};

const $ = (id) => document.getElementById(id);
const errorBox = $("composer-error");

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = false;
}
function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

function names() {
  const roles = {};
  const channels = {};
  for (const guild of state.world.guilds) {
    for (const role of guild.roles) roles[role.id] = role.name;
    for (const channel of guild.channels) channels[channel.id] = channel.name;
  }
  return { users: state.world.users, roles, channels };
}

const actions = {
  async click(message, customId, values) {
    clearError();
    try {
      await api.click({ person_id: state.personId, message_id: message.id, custom_id: customId, values });
    } catch (error) {
      showError(error.message);
    }
  },
  async messageCommand(message, name) {
    clearError();
    try {
      await api.messageCommand({ person_id: state.personId, message_id: message.id, name });
    } catch (error) {
      showError(error.message);
    }
  },
  dismiss(message) {
    state.dismissed.add(message.id);
    state.messages.delete(message.id);
    document.querySelector(`[data-message-id="${message.id}"]`)?.remove();
    $("composer-input").focus();
  },
  appsFor(message) {
    if (message.ephemeral || message.loading) return [];
    return state.commands.filter((c) => c.type === 3).map((c) => c.name);
  },
};

function renderOne(message) {
  return renderMessage(message, { names: names(), personId: state.personId, actions });
}

function upsert(message) {
  if (state.dismissed.has(message.id)) return;
  const list = $("messages");
  const existing = list.querySelector(`[data-message-id="${message.id}"]`);
  if (message.deleted === undefined || message.author === undefined) {
    // a deletion: {id, channel_id}
    state.messages.delete(message.id);
    existing?.remove();
    return;
  }
  const known = state.messages.get(message.id);
  if (known && known.edit_count > message.edit_count) return; // an older copy
  state.messages.set(message.id, message);
  const node = renderOne(message);
  if (existing) {
    const focused = existing.contains(document.activeElement) ? document.activeElement : null;
    const customId = focused?.dataset?.customId;
    existing.replaceWith(node);
    if (focused) (customId && node.querySelector(`[data-custom-id="${customId}"]`) || node).focus();
    return;
  }
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const after = [...list.children].find((child) => child.dataset.messageId && BigInt(child.dataset.messageId) > BigInt(message.id));
  list.insertBefore(node, after || null);
  if (stick) list.scrollTop = list.scrollHeight;
}

async function loadMessages() {
  const messages = await api.messages(state.channel.id, state.personId);
  state.messages.clear();
  $("messages").replaceChildren();
  for (const message of messages) upsert(message);
  $("messages").scrollTop = $("messages").scrollHeight;
}

async function loadCommands() {
  state.commands = await api.commands(state.guild.id, state.personId);
  composer.setCommands(state.commands);
}

function onMessage(message) {
  if (message.channel_id === state.channel.id) {
    upsert(message);
  } else if (message.author && !message.deleted) {
    document.querySelector(`[data-channel-id="${message.channel_id}"]`)?.classList.add("unread");
  }
}

function onFailed(failure) {
  $("messages").append(renderNotice(`/${failure.name}: This interaction failed (${failure.reason}).`));
}

function connect() {
  if (state.unsubscribe) state.unsubscribe();
  let opened = false;
  state.unsubscribe = subscribe(
    state.personId,
    {
      message: onMessage,
      modal: (data) => modal.open(data.interaction_id, data.modal),
      failed: onFailed,
      commands: () => loadCommands().catch((e) => showError(e.message)),
    },
    (live) => {
      $("connection").textContent = live ? "Live" : "Reconnecting…";
      $("connection").dataset.live = String(live);
      if (live && opened) loadMessages().catch((e) => showError(e.message)); // caught up after a gap
      if (live) opened = true;
    },
  );
}

function renderServers() {
  const list = $("server-list");
  list.replaceChildren(...state.world.guilds.map((guild) => {
    const initials = guild.name.split(/\s+/).map((w) => w[0]).join("").slice(0, 3).toUpperCase();
    return el("li", {}, el("button", {
      type: "button", class: "server-button", "aria-label": guild.name, title: guild.name,
      "aria-current": guild.id === state.guild.id ? "page" : undefined,
      "data-guild-id": guild.id, text: initials,
      onclick: () => selectGuild(guild.id),
    }));
  }));
  $("server-name").textContent = state.guild.name;
}

function renderChannels() {
  $("channel-list").replaceChildren(...state.guild.channels.map((channel) => {
    const notes = [];
    if (channel.upload_limit_bytes < 10 * 1024 * 1024) notes.push(`uploads up to ${formatSize(channel.upload_limit_bytes)}`);
    if (!channel.bot_can_post) notes.push("the bot may not post");
    return el("li", {}, el("button", {
      type: "button", class: "channel-button", "data-channel-id": channel.id,
      "aria-current": channel.id === state.channel.id ? "page" : undefined,
      onclick: () => selectChannel(channel.id),
    }, `# ${channel.name}`, notes.length ? el("span", { class: "channel-note", text: notes.join(" · ") }) : null));
  }));
  $("channel-title").textContent = `# ${state.channel.name}`;
  const notes = [state.channel.topic, `Files up to ${formatSize(state.channel.upload_limit_bytes)}`];
  if (!state.channel.bot_can_post) notes.push("the bot may not post here");
  $("channel-topic").textContent = notes.filter(Boolean).join(" · ");
}

function renderPeople() {
  const select = $("person-select");
  select.replaceChildren(...state.world.people.map((p) =>
    el("option", { value: p.id, selected: p.id === state.personId, text: `${p.name} (${p.role})` })));
  const me = state.guild.members.find((m) => m.id === state.personId);
  $("person-summary").textContent = me ? `${me.owner ? "Server owner" : me.roles.join(", ") || "No roles"} · ${me.permission_names.join(", ") || "no special permissions"}` : "";
  const people = new Map(state.world.people.map((p) => [p.id, p]));
  $("member-list").replaceChildren(...state.guild.members.map((m) => {
    const person = people.get(m.id);
    const detail = [m.bot ? "app" : null, m.owner ? "owner" : null, ...m.roles, person ? person.role : null].filter(Boolean);
    return el("li", { class: `member${m.id === state.personId ? " acting-now" : ""}`, "data-member-id": m.id },
      el("div", { class: "member-name", text: m.name }),
      el("div", { class: "member-detail", text: [...new Set(detail)].join(" · ") }),
      el("div", { class: "member-detail", text: m.permission_names.join(", ") }),
      person && m.id !== state.personId
        ? el("button", { type: "button", class: "link-button", text: `Act as ${m.name}`, onclick: () => selectPerson(m.id) })
        : null);
  }));
}

async function selectGuild(guildId) {
  state.guild = state.world.guilds.find((g) => g.id === guildId);
  state.channel = state.guild.channels[0];
  renderServers();
  renderChannels();
  renderPeople();
  await Promise.all([loadCommands(), loadMessages()]);
}

async function selectChannel(channelId) {
  state.channel = state.guild.channels.find((c) => c.id === channelId);
  document.querySelector(`[data-channel-id="${channelId}"]`)?.classList.remove("unread");
  renderChannels();
  composer.cancel();
  await loadMessages();
}

async function selectPerson(personId) {
  state.personId = personId;
  renderPeople();
  connect();
  composer.cancel();
  await Promise.all([loadCommands(), loadMessages()]);
}

const composer = new Composer({ api, state, showError, clearError });
const modal = new ModalView({ api, state, restoreFocus: () => $("composer-input").focus() });

async function start() {
  state.world = await api.world();
  state.personId = state.world.default_person_id;
  state.guild = state.world.guilds[0];
  state.channel = state.guild.channels[0];
  $("person-select").addEventListener("change", (e) => selectPerson(e.target.value).catch((err) => showError(err.message)));
  renderServers();
  renderChannels();
  renderPeople();
  connect();
  await Promise.all([loadCommands(), loadMessages()]);
  document.body.dataset.ready = "true";
}

start().catch((error) => showError(`The playground could not start: ${error.message}`));
