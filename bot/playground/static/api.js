// The playground's JSON API and its event stream.

export class ApiError extends Error {}

async function request(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError((data && data.error) || `${response.status} ${response.statusText}`);
  }
  return data;
}

export const api = {
  world: () => request("GET", "/api/world"),
  commands: (guildId, personId) =>
    request("GET", `/api/commands?guild_id=${guildId}&person_id=${personId}`),
  messages: (channelId, personId) =>
    request("GET", `/api/channels/${channelId}/messages?person_id=${personId}`),
  invoke: (body) => request("POST", "/api/invoke", body),
  autocomplete: (body) => request("POST", "/api/autocomplete", body),
  click: (body) => request("POST", "/api/click", body),
  modal: (body) => request("POST", "/api/modal", body),
  messageCommand: (body) => request("POST", "/api/message_command", body),
  post: (body) => request("POST", "/api/post", body),
};

// Server-sent events for one person; `handlers` maps event names to callbacks.
export function subscribe(personId, handlers, onState) {
  const source = new EventSource(`/api/events?person_id=${personId}`);
  for (const [event, handler] of Object.entries(handlers)) {
    source.addEventListener(event, (e) => handler(JSON.parse(e.data)));
  }
  source.onopen = () => onState(true);
  source.onerror = () => onState(false);
  return () => source.close();
}
