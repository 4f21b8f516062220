// The message box: "/" lists the slash commands the bot synced (subcommands included), arrow keys
// move through them, Enter or Tab picks one, which opens a form of its typed options (required
// ones first). Enter sends, Escape cancels. Text without "/" is posted as a plain message.
import { el } from "./render.js";

const TYPES = { 3: "text", 4: "whole number", 5: "true or false", 6: "user", 7: "channel", 8: "role", 9: "user or role", 10: "number", 11: "file" };

// Every runnable entry: a command, or one of its subcommands ("pool cap").
export function flattenCommands(commands) {
  const entries = [];
  for (const command of commands) {
    if (command.type !== 1) continue;
    const options = command.options || [];
    const subs = options.filter((o) => o.type === 1 || o.type === 2);
    if (!subs.length) {
      entries.push({ label: command.name, name: command.name, group: null, sub: null, description: command.description, options });
      continue;
    }
    for (const sub of subs) {
      if (sub.type === 1) {
        entries.push({ label: `${command.name} ${sub.name}`, name: command.name, group: null, sub: sub.name, description: sub.description, options: sub.options || [] });
      } else {
        for (const leaf of sub.options || []) {
          entries.push({ label: `${command.name} ${sub.name} ${leaf.name}`, name: command.name, group: sub.name, sub: leaf.name, description: leaf.description, options: leaf.options || [] });
        }
      }
    }
  }
  return entries.sort((a, b) => a.label.localeCompare(b.label));
}

function describe(option) {
  const parts = [option.description];
  if (option.min_value !== undefined || option.max_value !== undefined) {
    parts.push(`${option.min_value ?? "…"} to ${option.max_value ?? "…"}`);
  }
  if (option.min_length !== undefined || option.max_length !== undefined) {
    parts.push(`${option.min_length ?? 0} to ${option.max_length ?? "…"} characters`);
  }
  parts.push(TYPES[option.type] || "value");
  return parts.filter(Boolean).join(" · ");
}

function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// A listbox driven from a text input: arrow keys move, Enter/Tab pick, Escape closes.
class Listbox {
  constructor(input, list, onPick) {
    this.input = input;
    this.list = list;
    this.onPick = onPick;
    this.items = [];
    this.active = -1;
  }
  get open() { return !this.list.hidden && this.items.length > 0; }
  show(items, render) {
    this.items = items;
    this.active = items.length ? 0 : -1;
    this.list.replaceChildren(...items.map((item, i) => {
      const option = el("li", { id: `${this.list.id}-${i}`, role: "option", class: "suggestion", "aria-selected": "false" });
      render(option, item);
      option.addEventListener("mousedown", (e) => { e.preventDefault(); this.pick(i); });
      return option;
    }));
    this.list.hidden = !items.length;
    this.input.setAttribute("aria-expanded", String(!this.list.hidden));
    this.highlight();
  }
  hide() {
    this.items = [];
    this.active = -1;
    this.list.hidden = true;
    this.list.replaceChildren();
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }
  highlight() {
    [...this.list.children].forEach((node, i) => node.setAttribute("aria-selected", String(i === this.active)));
    if (this.active >= 0) {
      const node = this.list.children[this.active];
      this.input.setAttribute("aria-activedescendant", node.id);
      node.scrollIntoView({ block: "nearest" });
    }
  }
  pick(i) {
    const item = this.items[i];
    this.hide();
    if (item !== undefined) this.onPick(item);
  }
  // True when the key was for the list.
  key(event) {
    if (!this.open) return false;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.active = (this.active + step + this.items.length) % this.items.length;
      this.highlight();
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.pick(this.active);
    } else if (event.key === "Escape") {
      this.hide();
    } else {
      return false;
    }
    event.preventDefault();
    event.stopPropagation();
    return true;
  }
}

export class Composer {
  constructor(ctx) {
    this.ctx = ctx; // { api, state, showError, clearError }
    this.form = document.getElementById("composer");
    this.input = document.getElementById("composer-input");
    this.fieldset = document.getElementById("options");
    this.legend = document.getElementById("options-legend");
    this.fields = document.getElementById("option-fields");
    this.entries = [];
    this.selected = null;
    this.listbox = new Listbox(this.input, document.getElementById("suggestions"), (entry) => this.choose(entry));
    this.input.addEventListener("input", () => this.onInput());
    this.input.addEventListener("keydown", (e) => this.onKey(e));
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.send(); });
    this.fieldset.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { e.preventDefault(); this.cancel(); }
      if (e.key === "Enter" && e.target.tagName === "SELECT") { e.preventDefault(); this.send(); }
    });
  }

  setCommands(commands) {
    this.entries = flattenCommands(commands);
    if (this.selected && !this.entries.some((e) => e.label === this.selected.label)) this.cancel();
    this.onInput();
  }

  onInput() {
    const text = this.input.value;
    if (this.selected && text.trim() !== `/${this.selected.label}`) this.clearCommand();
    if (this.selected || !text.startsWith("/")) {
      this.listbox.hide();
      return;
    }
    const query = text.slice(1).trim().toLowerCase();
    const starts = this.entries.filter((e) => e.label.startsWith(query));
    const contains = this.entries.filter((e) => !e.label.startsWith(query) && e.label.includes(query));
    this.listbox.show([...starts, ...contains].slice(0, 25), (node, entry) => {
      node.append(el("span", { class: "suggestion-name", text: `/${entry.label}` }),
        el("span", { class: "suggestion-description", text: entry.description }));
    });
  }

  onKey(event) {
    if (this.listbox.key(event)) return;
    if (event.key === "Escape" && this.selected) {
      event.preventDefault();
      this.cancel();
    }
  }

  choose(entry) {
    this.selected = entry;
    this.input.value = `/${entry.label}`;
    this.ctx.clearError();
    this.legend.textContent = `/${entry.label}: ${entry.description}`;
    const required = entry.options.filter((o) => o.required);
    const optional = entry.options.filter((o) => !o.required);
    this.fields.replaceChildren(...required.map((option) => this.field(option)));
    if (optional.length) {
      const more = el("details", { class: "optional-options" },
        el("summary", { text: `Optional options (${optional.length}): ${optional.map((o) => o.name).join(", ")}` }),
        el("div", { class: "option-fields" }, ...optional.map((option) => this.field(option))));
      if (!required.length) more.open = true;
      this.fields.append(more);
    }
    this.fieldset.hidden = false;
    const first = this.fields.querySelector("input, select, textarea");
    (first || this.input).focus();
  }

  field(option) {
    const id = `opt-${option.name}`;
    const hintId = `${id}-hint`;
    const box = el("div", { class: "option-field" });
    box.append(el("label", { for: id, text: `${option.name}${option.required ? " *" : ""}` }));
    const common = { id, name: option.name, "data-option": option.name, "aria-describedby": hintId, required: Boolean(option.required) };
    const { state } = this.ctx;
    let control;
    const choices = option.choices || [];
    if (choices.length || option.type === 5 || [6, 7, 8, 9].includes(option.type)) {
      control = el("select", common);
      control.append(el("option", { value: "", text: option.required ? "Choose…" : "(not set)" }));
      let values = choices.map((c) => [String(c.value), c.name]);
      if (option.type === 5) values = [["true", "True"], ["false", "False"]];
      if (option.type === 6 || option.type === 9) values = state.guild.members.filter((m) => !m.bot).map((m) => [m.id, `@${m.name}`]);
      if (option.type === 8 || option.type === 9) values = [...values, ...state.guild.roles.map((r) => [r.id, `@${r.name}`])];
      if (option.type === 7) values = state.guild.channels.map((c) => [c.id, `#${c.name}`]);
      for (const [value, label] of values) control.append(el("option", { value, text: label }));
    } else if (option.type === 11) {
      control = el("input", { ...common, type: "file" });
    } else if (option.type === 4 || option.type === 10) {
      control = el("input", {
        ...common, type: "number", inputmode: option.type === 4 ? "numeric" : "decimal",
        step: option.type === 4 ? "1" : "any", min: option.min_value, max: option.max_value,
      });
    } else {
      control = el("input", { ...common, type: "text", minlength: option.min_length, maxlength: option.max_length });
      if ((option.max_length || 6000) > 200) box.classList.add("wide");
    }
    box.append(control);
    box.append(el("span", { class: "hint", id: hintId, text: describe(option) }));
    if (option.autocomplete) this.autocomplete(option, control, box);
    return box;
  }

  autocomplete(option, input, box) {
    const list = el("ul", { id: `${input.id}-choices`, class: "suggestions", role: "listbox", "aria-label": `Suggestions for ${option.name}`, hidden: true });
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    box.append(list);
    const listbox = new Listbox(input, list, (choice) => { input.value = String(choice.value); });
    let timer = null;
    let asked = 0;
    const ask = async () => {
      const mine = ++asked;
      const { options } = await this.collect(false);
      try {
        const answer = await this.ctx.api.autocomplete({ ...this.place(), focused: option.name, options: { ...options, [option.name]: input.value } });
        if (mine !== asked || document.activeElement !== input) return;
        listbox.show(answer.choices, (node, choice) => node.append(el("span", { text: choice.name })));
      } catch (error) {
        this.ctx.showError(error.message);
      }
    };
    input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(ask, 200); });
    input.addEventListener("focus", () => { clearTimeout(timer); timer = setTimeout(ask, 0); });
    input.addEventListener("blur", () => listbox.hide());
    input.addEventListener("keydown", (e) => listbox.key(e));
  }

  place() {
    const { state } = this.ctx;
    const entry = this.selected;
    return { person_id: state.personId, guild_id: state.guild.id, channel_id: state.channel.id, name: entry.name, group: entry.group, sub: entry.sub };
  }

  async collect(withFiles) {
    const options = {};
    const files = {};
    for (const control of this.fields.querySelectorAll("[data-option]")) {
      const name = control.dataset.option;
      if (control.type === "file") {
        if (withFiles && control.files.length) {
          const file = control.files[0];
          files[name] = { filename: file.name, data_b64: await fileToBase64(file) };
        }
      } else if (control.value !== "") {
        options[name] = control.value;
      }
    }
    return { options, files };
  }

  async send() {
    this.ctx.clearError();
    if (this.listbox.open) return;
    const text = this.input.value;
    try {
      if (this.selected) {
        const { options, files } = await this.collect(true);
        await this.ctx.api.invoke({ ...this.place(), options, files });
        this.cancel();
      } else if (text.startsWith("/")) {
        this.ctx.showError(`No command ${text.trim()} here. Type / to see the commands you can use.`);
      } else if (text.trim()) {
        const { state } = this.ctx;
        await this.ctx.api.post({ person_id: state.personId, channel_id: state.channel.id, content: text });
        this.input.value = "";
      }
    } catch (error) {
      this.ctx.showError(error.message);
    }
  }

  clearCommand() {
    this.selected = null;
    this.fieldset.hidden = true;
    this.fields.replaceChildren();
  }

  cancel() {
    this.clearCommand();
    this.input.value = "";
    this.listbox.hide();
    this.input.focus();
  }
}
