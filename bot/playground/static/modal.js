// A form the bot opened (a modal): its text fields and selects in a <dialog>, which keeps focus
// inside and closes on Escape. Submitting sends the values; a refusal is shown in the dialog.
import { el } from "./render.js";

function inputsOf(components) {
  const fields = [];
  for (const top of components || []) {
    if (top.type === 1) {
      for (const child of top.components || []) fields.push({ label: child.label, description: null, component: child });
    } else if (top.type === 18 && top.component) {
      fields.push({ label: top.label, description: top.description, component: top.component });
    } else if (top.type === 10) {
      fields.push({ text: top.content });
    }
  }
  return fields;
}

export class ModalView {
  constructor(ctx) {
    this.ctx = ctx; // { api, state, restoreFocus }
    this.dialog = document.getElementById("modal");
    this.form = document.getElementById("modal-form");
    this.title = document.getElementById("modal-title");
    this.fields = document.getElementById("modal-fields");
    this.error = document.getElementById("modal-error");
    this.current = null;
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
    document.getElementById("modal-cancel").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("close", () => { this.current = null; this.ctx.restoreFocus(); });
  }

  open(interactionId, modal) {
    this.current = { interactionId, modal };
    this.title.textContent = modal.title;
    this.error.hidden = true;
    const nodes = inputsOf(modal.components).map((field, i) => {
      if (field.text !== undefined) return el("p", { class: "muted", text: field.text });
      const c = field.component;
      const id = `modal-field-${i}`;
      const box = el("div", { class: "modal-field" });
      const required = c.required !== false;
      box.append(el("label", { for: id, text: `${field.label || c.custom_id}${required ? " *" : ""}` }));
      if (field.description) box.append(el("span", { class: "muted small", id: `${id}-hint`, text: field.description }));
      let control;
      if (c.type === 4) {
        const attrs = {
          id, "data-custom-id": c.custom_id, required, placeholder: c.placeholder,
          minlength: c.min_length, maxlength: c.max_length,
          "aria-describedby": field.description ? `${id}-hint` : undefined,
        };
        control = c.style === 2 ? el("textarea", attrs) : el("input", { ...attrs, type: "text" });
        control.value = c.value || "";
      } else {
        control = el("select", { id, "data-custom-id": c.custom_id, "data-select": "1", required });
        control.append(el("option", { value: "", text: c.placeholder || "Choose…" }));
        for (const o of c.options || []) control.append(el("option", { value: o.value, text: o.label, selected: Boolean(o.default) }));
      }
      box.append(control);
      return box;
    });
    this.fields.replaceChildren(...nodes);
    if (!this.dialog.open) this.dialog.showModal();
    const first = this.fields.querySelector("input, textarea, select");
    if (first) first.focus();
  }

  async submit() {
    if (!this.current) return;
    const values = {};
    for (const control of this.fields.querySelectorAll("[data-custom-id]")) {
      if (control.dataset.select) {
        if (control.value) values[control.dataset.customId] = [control.value];
      } else {
        values[control.dataset.customId] = control.value;
      }
    }
    try {
      await this.ctx.api.modal({
        person_id: this.ctx.state.personId,
        interaction_id: this.current.interactionId,
        custom_id: this.current.modal.custom_id,
        values,
      });
      this.dialog.close();
    } catch (error) {
      this.error.textContent = error.message;
      this.error.hidden = false;
    }
  }
}
