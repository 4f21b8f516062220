// Discord's message markdown, rendered safely: the text is escaped first, then a small set of
// rules (code, bold, italics, underline, strike, links, mentions, timestamps, quotes, subtext).

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const UNITS = [
  ["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
  ["hour", 3600], ["minute", 60], ["second", 1],
];

export function relativeTime(date, now = new Date()) {
  const seconds = Math.round((date.getTime() - now.getTime()) / 1000);
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return RELATIVE.format(Math.round(seconds / size), unit);
    }
  }
  return "";
}

function timestamp(seconds, style) {
  const date = new Date(Number(seconds) * 1000);
  const formats = {
    t: { timeStyle: "short" },
    T: { timeStyle: "medium" },
    d: { dateStyle: "short" },
    D: { dateStyle: "long" },
    f: { dateStyle: "long", timeStyle: "short" },
    F: { dateStyle: "full", timeStyle: "short" },
  };
  const full = date.toLocaleString("en", formats.F);
  const shown = style === "R" ? relativeTime(date) : date.toLocaleString("en", formats[style || "f"] || formats.f);
  return `<time class="ts" datetime="${date.toISOString()}" title="${escapeHtml(full)}">${escapeHtml(shown)}</time>`;
}

function inline(text, names) {
  const codes = [];
  let out = text.replace(/`([^`\n]+)`/g, (_, code) => {
    codes.push(`<code>${code}</code>`);
    return `\u0000${codes.length - 1}\u0000`;
  });
  out = out
    .replace(/&lt;t:(-?\d{1,13})(?::([tTdDfFR]))?&gt;/g, (_, s, style) => timestamp(s, style))
    .replace(/&lt;@!?(\d{1,20})&gt;/g, (_, id) => `<span class="mention">@${escapeHtml(names.users[id] || "unknown user")}</span>`)
    .replace(/&lt;@&amp;(\d{1,20})&gt;/g, (_, id) => `<span class="mention">@${escapeHtml(names.roles[id] || "unknown role")}</span>`)
    .replace(/&lt;#(\d{1,20})&gt;/g, (_, id) => `<span class="mention">#${escapeHtml(names.channels[id] || "unknown channel")}</span>`)
    .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g, (_, label, url) => `<a href="${url}" target="_blank" rel="noopener">${label}</a>`)
    .replace(/(^|[\s(])(https?:\/\/[^\s<)]+)/g, (_, pre, url) => `${pre}<a href="${url}" target="_blank" rel="noopener">${url}</a>`)
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/__([^_\n]+)__/g, "<u>$1</u>")
    .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\*)/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~([^~\n]+)~~/g, "<s>$1</s>");
  return out.replace(/\u0000(\d+)\u0000/g, (_, i) => codes[Number(i)]);
}

// HTML for a message's content or an embed's text.
export function renderMarkdown(text, names) {
  const blocks = [];
  const escaped = escapeHtml(text || "").replace(/```(?:[a-z]*\n)?([\s\S]*?)```/g, (_, code) => {
    blocks.push(`<pre><code>${code}</code></pre>`);
    return `\u0001${blocks.length - 1}\u0001`;
  });
  const lines = escaped.split("\n").map((line) => {
    if (line.startsWith("-# ")) return `<span class="subtext">${inline(line.slice(3), names)}</span>`;
    if (line.startsWith("&gt; ")) return `<blockquote>${inline(line.slice(5), names)}</blockquote>`;
    return inline(line, names);
  });
  return lines.join("\n").replace(/\u0001(\d+)\u0001/g, (_, i) => blocks[Number(i)]);
}
