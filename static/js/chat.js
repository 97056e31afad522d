// The chat page: send, stream, stop, regenerate, copy, rename, delete, search.
// Plain JavaScript, no build step. Model output is only ever inserted as text, or
// as the server's sanitized HTML: about once a second while a reply streams
// (`render` events, the reply so far), and in full at the end.
"use strict";

(function () {
  const root = document.getElementById("chat");
  if (!root) return;

  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const keysUrl = root.dataset.keysUrl;
  const messages = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-input");
  const sendButton = document.getElementById("send-button");
  const stopButton = document.getElementById("stop-button");
  const picker = document.getElementById("model-picker");
  const systemPrompt = document.getElementById("system-prompt");
  const banner = document.getElementById("banner");
  const title = document.getElementById("chat-title");
  const total = document.getElementById("conversation-total");
  const actions = document.getElementById("chat-actions");
  const list = document.getElementById("conversation-list");
  const search = document.getElementById("conversation-search");

  let conversationId = root.dataset.conversation ? Number(root.dataset.conversation) : null;
  let searching = false; // the list shows search results, not the groups
  let controller = null;
  // Stop pressed before the server named the reply: sent as soon as it does.
  let stopWanted = false;
  // Stop takes Send's place; it ignores clicks for a moment, so that the second
  // click of a double-click on Send does not stop the reply it just sent.
  const STOP_ARMS_AFTER_MS = 600;
  let stopArmTimer = null;

  const KEY_ERRORS = new Set(["no_key", "invalid_key", "key_unreadable", "permission_denied"]);

  function showBanner(message, code) {
    banner.replaceChildren(document.createTextNode(message + " "));
    if (KEY_ERRORS.has(code)) {
      const link = document.createElement("a");
      link.href = keysUrl;
      link.textContent = "Go to your API keys";
      banner.appendChild(link);
    }
    banner.hidden = false;
  }

  function hideBanner() {
    banner.hidden = true;
    banner.replaceChildren();
  }

  // A JSON call to the API that changes something: its answer, or null after
  // showing why it was refused.
  async function callApi(url, method, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: body ? JSON.stringify(body) : undefined,
    });
    const answer = await response.json();
    if (!response.ok) {
      showBanner(answer.error.message, answer.error.code);
      return null;
    }
    hideBanner();
    return answer;
  }

  // Money as the whole site shows it (llmchat/money.py): to the micro-dollar, trailing
  // zeros dropped but never fewer than two places, thousands grouped. The API's
  // amounts are decimal strings, already to the micro-dollar: never via floats.
  function money(value) {
    if (value === null || value === undefined || value === "") return "—";
    let text = String(value);
    let sign = "";
    if (text.startsWith("-")) {
      sign = "-";
      text = text.slice(1);
    }
    let [whole, places = ""] = text.split(".");
    places = places.replace(/0+$/, "").padEnd(2, "0");
    whole = whole.replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    if (/^[0,]*$/.test(whole) && /^0*$/.test(places)) sign = "";
    return sign + "$" + whole + "." + places;
  }

  function number(n) {
    return Number(n).toLocaleString("en-US");
  }

  function badge(text, kind, tooltip) {
    const span = document.createElement("span");
    span.className = "badge" + (kind ? " badge-" + kind : "");
    span.textContent = text;
    if (tooltip) span.title = tooltip;
    return span;
  }

  function actionButton(action, label) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button";
    button.dataset.action = action;
    button.textContent = label;
    return button;
  }

  function userBubble(text) {
    const li = document.createElement("li");
    li.className = "message message-user status-complete";
    li.dataset.role = "user";
    const body = document.createElement("div");
    body.className = "message-body user-text";
    body.dir = "auto";
    body.textContent = text;
    li.appendChild(body);
    return li;
  }

  function assistantBubble(model) {
    const li = document.createElement("li");
    li.className = "message message-assistant status-generating";
    li.dataset.role = "assistant";
    const body = document.createElement("div");
    body.className = "message-body markdown streaming";
    body.dir = "auto";
    const meta = document.createElement("div");
    meta.className = "message-meta";
    const name = document.createElement("span");
    name.className = "meta-model";
    name.textContent = model;
    meta.append(name, badge("generating…"));
    const raw = document.createElement("template");
    raw.className = "raw-content";
    li.append(body, meta, raw);
    return li;
  }

  // Each code block of a finished reply gets a bar with its language and a Copy
  // button (made here, not taken from the reply: model output never adds controls).
  function enhanceCode(container) {
    for (const pre of container.querySelectorAll("pre.highlight")) {
      if (pre.previousElementSibling && pre.previousElementSibling.classList.contains("code-bar")) continue;
      const bar = document.createElement("div");
      bar.className = "code-bar";
      const lang = document.createElement("span");
      lang.className = "code-lang";
      const code = pre.querySelector("code");
      const named = code && Array.from(code.classList).find((c) => c.startsWith("language-"));
      lang.textContent = named ? named.slice("language-".length) : "text";
      bar.append(lang, actionButton("copy-code", "Copy code"));
      pre.before(bar);
    }
  }

  // Fill a bubble from the API's message object (done / error events, or a reload).
  function settle(li, m) {
    li.dataset.id = m.id;
    li.className = "message message-assistant status-" + m.status;
    const body = li.querySelector(".message-body");
    body.classList.remove("streaming", "rendered");
    if (m.html) {
      body.innerHTML = m.html; // sanitized on the server (nh3 allow-list)
      enhanceCode(body);
    } else {
      body.textContent = m.content;
    }
    li.querySelector(".raw-content").content.replaceChildren(document.createTextNode(m.content));
    // Why a reply failed stays with it (as the server renders it on a reload).
    let note = li.querySelector(".message-error");
    if (m.error_message && m.status !== "complete") {
      if (!note) {
        note = document.createElement("p");
        note.className = "message-error";
        note.setAttribute("role", "note");
        body.after(note);
      }
      note.textContent = m.error_message;
    } else if (note) {
      note.remove();
    }
    const meta = li.querySelector(".message-meta");
    const name = document.createElement("span");
    name.className = "meta-model";
    name.textContent = m.model;
    const parts = [name];
    if (m.parameters && Object.keys(m.parameters).length) {
      const p = document.createElement("span");
      p.className = "meta-parameters";
      p.title = "The parameters this reply was made with";
      p.textContent = parameterText(m.parameters);
      parts.push(p);
    }
    if (m.status !== "generating") {
      let tokens = number(m.input_tokens) + " in";
      if (m.cached_tokens) tokens += " (" + number(m.cached_tokens) + " cached)";
      tokens += " · " + number(m.output_tokens) + " out";
      if (m.reasoning_tokens) tokens += " (" + number(m.reasoning_tokens) + " reasoning)";
      const t = document.createElement("span");
      t.className = "meta-tokens";
      t.textContent = tokens;
      parts.push(t);
      if (m.cost === null) {
        parts.push(badge("unpriced", "warn", "No price is known for this model"));
      } else {
        const c = document.createElement("span");
        c.className = "meta-cost";
        c.textContent = money(m.cost);
        parts.push(c);
        if (m.fallback_price) {
          parts.push(badge("fallback price", "", "Priced at the provider's fallback price: the model has no price of its own"));
        }
      }
      if (m.usage_estimated) {
        parts.push(badge("estimated", "", "The provider did not report usage; estimated from the text"));
      }
    }
    if (m.status === "partial" || m.status === "error") {
      parts.push(badge(m.status + (m.error_code ? ": " + m.error_code : ""), "error", m.error_message));
    }
    if (m.status === "stopped") parts.push(badge("stopped"));
    if (m.content) parts.push(actionButton("copy", "Copy"));
    parts.push(actionButton("regenerate", "Regenerate"));
    meta.replaceChildren(...parts);
  }

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
    input.disabled = busy;
    picker.disabled = busy;
    clearTimeout(stopArmTimer);
    stopWanted = false;
    stopButton.disabled = busy;
    if (busy) stopArmTimer = setTimeout(() => (stopButton.disabled = false), STOP_ARMS_AFTER_MS);
  }

  // The messages pane follows a reply as it grows, unless the reader has
  // scrolled up to read something else.
  function nearBottom() {
    return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  }

  function toBottom() {
    messages.scrollTop = messages.scrollHeight;
  }

  const customModel = document.getElementById("custom-model");

  // The model parameters: the fields the selected model's provider takes are shown
  // and sent; empty ones are left to the provider's defaults.
  const parameterPanel = document.getElementById("parameters");
  function showParameters() {
    const { provider } = selectedModel();
    for (const label of parameterPanel.querySelectorAll("label[data-for]")) {
      label.hidden = !label.dataset.for.split(" ").includes(provider);
    }
  }
  function parameters() {
    const out = {};
    for (const field of parameterPanel.querySelectorAll("input, select")) {
      if (field.closest("label").hidden || field.value === "") continue;
      out[field.name] = field.tagName === "SELECT" ? field.value : Number(field.value);
    }
    return out;
  }

  function parameterText(p) {
    const parts = [];
    if (p.temperature !== undefined && p.temperature !== null) parts.push("temp " + p.temperature);
    if (p.max_output_tokens) parts.push("max " + number(p.max_output_tokens));
    if (p.reasoning_effort) parts.push("effort " + p.reasoning_effort);
    if (p.thinking_budget !== undefined && p.thinking_budget !== null) parts.push("thinking " + number(p.thinking_budget));
    return parts.join(" ");
  }

  function selectedModel() {
    const [provider, ...rest] = (picker.value || "").split("|");
    let model = rest.join("|");
    // The OpenAI-compatible server's models are typed in, not listed.
    if (provider === "compatible" && !model) model = customModel.value.trim();
    return { provider, model };
  }

  // What each provider lists for the user's key beyond the price table, added to
  // its group: unpriced (unusable where a call must be priced) or at a fallback price.
  async function addListedModels() {
    for (const group of picker.querySelectorAll("optgroup[data-listable]")) {
      const provider = group.dataset.provider;
      let listed;
      try {
        const response = await fetch("/api/models/" + encodeURIComponent(provider) + "/listed");
        if (!response.ok) continue;
        listed = await response.json();
      } catch (err) {
        continue;
      }
      const offered = new Set(Array.from(group.querySelectorAll("option"), (o) => o.value));
      const typed = group.querySelector('option[value="compatible|"]');
      for (const m of listed) {
        const value = provider + "|" + m.model;
        if (m.pricing === "own" || offered.has(value)) continue;
        const option = document.createElement("option");
        option.value = value;
        if (m.pricing === "fallback") {
          option.textContent = m.model + " — fallback price " + money(m.input_per_mtok) + " in / " +
            money(m.output_per_mtok) + " out per 1M";
        } else {
          option.textContent = m.model + " — unpriced" + (m.usable ? "" : " (needs a price)");
        }
        option.disabled = !m.usable;
        if (m.reason) option.title = m.reason;
        group.insertBefore(option, typed);
      }
    }
  }
  addListedModels();

  // Presets: a saved model, system prompt and parameters to start from.
  const presetPicker = document.getElementById("preset-picker");
  const presetDefault = document.getElementById("preset-default");
  const presetDelete = document.getElementById("preset-delete");

  function selectedPreset() {
    const option = presetPicker.selectedOptions[0];
    return option && option.dataset.preset ? JSON.parse(option.dataset.preset) : null;
  }

  function presetButtons() {
    const preset = selectedPreset();
    presetDelete.hidden = !preset;
    presetDefault.hidden = !preset || preset.default;
  }

  function applyPreset(preset) {
    const value = preset.provider + "|" + (preset.provider === "compatible" ? "" : preset.model);
    if (Array.from(picker.options).some((o) => o.value === value && !o.disabled)) picker.value = value;
    customModel.hidden = !picker.value.startsWith("compatible|");
    if (preset.provider === "compatible") customModel.value = preset.model;
    systemPrompt.value = preset.system_prompt;
    if (preset.system_prompt) systemPrompt.closest("details").open = true;
    for (const field of parameterPanel.querySelectorAll("input, select")) {
      const set = preset.parameters[field.name];
      field.value = set === undefined || set === null ? "" : String(set);
    }
    parameterPanel.open = Object.keys(preset.parameters).length > 0;
    showParameters();
  }

  function presetBody(name, isDefault) {
    const { provider, model } = selectedModel();
    return { name, provider, model, system_prompt: systemPrompt.value, parameters: parameters(), default: isDefault };
  }

  function presetOption(preset) {
    let option = presetPicker.querySelector('option[value="' + preset.id + '"]');
    if (!option) {
      option = document.createElement("option");
      option.value = String(preset.id);
      presetPicker.appendChild(option);
    }
    option.dataset.preset = JSON.stringify(preset);
    option.textContent = preset.name + (preset.default ? " (default)" : "");
    return option;
  }

  presetPicker.addEventListener("change", () => {
    const preset = selectedPreset();
    if (preset) applyPreset(preset);
    presetButtons();
  });
  document.getElementById("preset-save").addEventListener("click", async () => {
    const name = window.prompt("Name this preset (model, system prompt and parameters)");
    if (!name) return;
    const preset = await callApi("/api/presets", "POST", presetBody(name, false));
    if (preset) presetOption(preset).selected = true;
    presetButtons();
  });
  presetDefault.addEventListener("click", async () => {
    const chosen = selectedPreset();
    const preset = await callApi("/api/presets/" + chosen.id, "PUT", { ...chosen, default: true });
    if (!preset) return;
    for (const option of presetPicker.querySelectorAll("option[data-preset]")) {
      presetOption({ ...JSON.parse(option.dataset.preset), default: false });
    }
    presetOption(preset);
    presetButtons();
  });
  presetDelete.addEventListener("click", async () => {
    const chosen = selectedPreset();
    if (!window.confirm('Delete the preset "' + chosen.name + '"? Conversations keep their settings.')) return;
    if (await callApi("/api/presets/" + chosen.id, "DELETE")) {
      presetPicker.selectedOptions[0].remove();
      presetPicker.value = "";
    }
    presetButtons();
  });
  presetButtons();

  // Finding a model: options that do not match what is typed are hidden.
  const modelSearch = document.getElementById("model-search");
  modelSearch.addEventListener("input", () => {
    const words = modelSearch.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const group of picker.querySelectorAll("optgroup")) {
      let shown = 0;
      for (const option of group.querySelectorAll("option")) {
        const text = (option.textContent + " " + group.label).toLowerCase();
        option.hidden = !words.every((w) => text.includes(w));
        if (!option.hidden) shown++;
      }
      group.hidden = shown === 0 || (group.dataset.favourites !== undefined && !group.children.length);
    }
    // The first match that may be used is chosen, so Enter-free typing works.
    const current = picker.selectedOptions[0];
    if (!current || current.hidden) {
      const first = Array.from(picker.options).find((o) => !o.hidden && !o.disabled);
      if (first) {
        picker.value = first.value;
        picker.dispatchEvent(new Event("change"));
      }
    }
  });

  // Favourites: listed first, in a group of their own.
  const favouriteButton = document.getElementById("model-favourite");
  const favourites = picker.querySelector("optgroup[data-favourites]");
  function isFavourite(value) {
    return Array.from(favourites.children).some((o) => o.value === value);
  }
  function showFavourite() {
    const { provider, model } = selectedModel();
    const starred = isFavourite(picker.value);
    favouriteButton.hidden = !provider || !model || provider === "compatible";
    favouriteButton.setAttribute("aria-pressed", String(starred));
    favouriteButton.textContent = starred ? "★ Favourite" : "☆ Favourite";
  }
  favouriteButton.addEventListener("click", async () => {
    const { provider, model } = selectedModel();
    const value = picker.value;
    const favourite = !isFavourite(value);
    if (!(await callApi("/api/models/favourites", "POST", { provider, model, favourite }))) return;
    if (favourite) {
      const copy = picker.selectedOptions[0].cloneNode(true);
      favourites.appendChild(copy);
      picker.value = value;
    } else {
      for (const o of Array.from(favourites.children)) if (o.value === value) o.remove();
      picker.value = value;
    }
    favourites.hidden = favourites.children.length === 0;
    showFavourite();
  });
  showFavourite();

  showParameters();
  picker.addEventListener("change", () => {
    showFavourite();
    showParameters();
    customModel.hidden = !picker.value.startsWith("compatible|");
    if (!customModel.hidden) customModel.focus();
  });

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return String(Date.now()) + "-" + String(Math.random()).slice(2);
  }

  // Read a text/event-stream body, calling onEvent(name, data) for each event.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        let id = null;
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("id: ")) id = line.slice(4);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")), id);
      }
    }
  }

  async function refreshConversation() {
    if (!conversationId) return;
    const response = await fetch("/api/conversations/" + conversationId, {
      headers: { Accept: "application/json" },
    });
    if (!response.ok) return;
    const c = await response.json();
    title.textContent = c.title || "Conversation";
    document.title = (c.title || "Conversation") + " · " + document.title.split(" · ").pop();
    total.replaceChildren(document.createTextNode("Conversation total: "));
    const strong = document.createElement("strong");
    strong.textContent = money(c.total_cost);
    total.appendChild(strong);
    if (c.unpriced_calls) {
      total.appendChild(
        document.createTextNode(" · " + c.unpriced_calls + " unpriced call" + (c.unpriced_calls > 1 ? "s" : "")),
      );
    }
    upsertSidebar(c);
    return c;
  }

  function sidebarItem(c) {
    let li = document.querySelector('.chat-sidebar li[data-id="' + c.id + '"]');
    if (!li) {
      li = document.createElement("li");
      li.dataset.id = c.id;
      const a = document.createElement("a");
      a.href = "/c/" + c.id + "/";
      const t = document.createElement("span");
      t.className = "conversation-title";
      t.dir = "auto";
      const cost = document.createElement("span");
      cost.className = "conversation-cost";
      a.append(t, cost);
      li.appendChild(a);
    }
    const t = li.querySelector(".conversation-title");
    t.textContent = c.title || "New conversation";
    if (c.pinned) {
      const mark = document.createElement("span");
      mark.className = "pin-mark";
      mark.setAttribute("aria-label", "pinned");
      mark.textContent = "📌";
      t.prepend(mark, " ");
    }
    li.querySelector(".conversation-cost").textContent = money(c.total_cost);
    li.dataset.updated = c.updated_at;
    if (c.pinned) li.dataset.pinned = "";
    else delete li.dataset.pinned;
    return li;
  }

  // The heading of a group of the list (Pinned, Today...), made if missing.
  function groupLabel(slug, text, before) {
    let label = list.querySelector('li.group-label[data-group="' + slug + '"]');
    if (!label) {
      label = document.createElement("li");
      label.className = "group-label";
      label.dataset.group = slug;
      label.textContent = text;
      list.insertBefore(label, before);
    }
    return label;
  }

  // The server groups the list by its own time zone; the reader's days are those of
  // their browser, so the groups are laid out again here.
  const GROUPS = [["pinned", "Pinned"], ["today", "Today"], ["yesterday", "Yesterday"], ["previous-7-days", "Previous 7 days"], ["older", "Older"]];
  function dayNumber(date) {
    return Math.floor((date.getTime() - date.getTimezoneOffset() * 60000) / 86400000);
  }
  function regroup() {
    const items = Array.from(list.querySelectorAll("li[data-id]"));
    if (!items.length || searching) return;
    const today = dayNumber(new Date());
    const byGroup = new Map(GROUPS.map(([slug]) => [slug, []]));
    for (const li of items) {
      const age = li.dataset.updated ? today - dayNumber(new Date(li.dataset.updated)) : 0;
      const slug = li.dataset.pinned !== undefined ? "pinned" : age <= 0 ? "today" : age === 1 ? "yesterday" : age <= 7 ? "previous-7-days" : "older";
      byGroup.get(slug).push(li);
    }
    const laid = [];
    for (const [slug, text] of GROUPS) {
      const members = byGroup.get(slug);
      if (!members.length) continue;
      const label = document.createElement("li");
      label.className = "group-label";
      label.dataset.group = slug;
      label.textContent = text;
      laid.push(label, ...members);
    }
    list.replaceChildren(...laid);
  }

  // A conversation just written in goes to the top of Today (or stays in Pinned).
  function upsertSidebar(c) {
    const li = sidebarItem(c);
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    document.querySelectorAll(".chat-sidebar li.current").forEach((el) => el.classList.remove("current"));
    li.classList.add("current");
    if (searching || c.archived) return; // an archived one stays under Archived
    let label;
    if (c.pinned) {
      label = groupLabel("pinned", "Pinned", list.firstChild);
    } else {
      const afterPinned = Array.from(list.querySelectorAll("li.group-label")).find(
        (el) => el.dataset.group !== "pinned",
      );
      label = groupLabel("today", "Today", afterPinned || null);
    }
    label.after(li);
    // A heading left with nothing under it goes.
    for (const heading of list.querySelectorAll("li.group-label")) {
      const next = heading.nextElementSibling;
      if (!next || next.classList.contains("group-label")) heading.remove();
    }
  }

  async function send({ text, regenerate }) {
    hideBanner();
    const { provider, model } = selectedModel();
    if (!provider || !model) {
      showBanner("Pick a model first.", provider ? "" : "no_key");
      if (!regenerate) input.value = text;
      return;
    }
    const empty = document.getElementById("empty-state");
    let userLi = null;
    if (!regenerate) {
      userLi = userBubble(text);
      messages.appendChild(userLi);
    } else {
      const last = messages.querySelector("li.message:last-child");
      if (last && last.dataset.role === "assistant") last.remove();
    }
    const bubble = assistantBubble(model);
    messages.appendChild(bubble);
    if (empty) empty.hidden = true;
    toBottom();

    const body = {
      conversation: conversationId,
      provider,
      model,
      message: regenerate ? "" : text,
      system_prompt: systemPrompt.value,
      client_message_id: newId(),
      regenerate: Boolean(regenerate),
      render: true,
      parameters: parameters(),
    };
    controller = new AbortController();
    setBusy(true);
    const follower = newFollower(bubble);
    try {
      const response = await fetch("/api/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        let error = { code: "error", message: "The request failed (" + response.status + ")." };
        try {
          error = (await response.json()).error || error;
        } catch (e) {
          /* not JSON */
        }
        bubble.remove();
        if (userLi) userLi.remove();
        if (!regenerate) input.value = text; // nothing was sent: nothing is lost
        showBanner(error.message, error.code);
        return;
      }
      await readEvents(response, (name, data, id) => {
        if (name === "start") {
          if (!conversationId) {
            conversationId = data.conversation;
            root.dataset.conversation = String(conversationId);
            history.replaceState(null, "", "/c/" + conversationId + "/");
            actions.hidden = false;
            document.getElementById("export-md").href = "/api/conversations/" + conversationId + "/export?format=md";
          }
          if (userLi && data.user_message) userLi.dataset.id = data.user_message;
          bubble.dataset.id = data.message;
          if (stopWanted) requestStop(bubble);
          if (data.title) title.textContent = data.title;
        } else {
          onReplyEvent(follower, name, data, id);
        }
      });
      // The connection dropped mid-reply: the reply goes on on the server.
      if (!follower.settled && bubble.dataset.id) await reattach(follower);
    } catch (err) {
      if (err.name !== "AbortError" && bubble.dataset.id) await reattach(follower);
      else if (err.name !== "AbortError") showBanner("The connection was lost.", "network");
    } finally {
      controller = null;
      setBusy(false);
      input.focus();
    }
    await refreshConversation();
  }

  function newFollower(bubble) {
    // raw: the reply's text so far; tail: where text after the last rendering goes.
    return { bubble, cursor: "0", settled: false, raw: "", tail: null };
  }

  // A reply's events after `start`, on the first stream or on a reattached one.
  function onReplyEvent(follower, name, data, id) {
    const streamed = follower.bubble.querySelector(".message-body");
    if (id !== null) follower.cursor = id;
    const follow = nearBottom();
    if (name === "delta") {
      follower.raw += data.text;
      (follower.tail || streamed).appendChild(document.createTextNode(data.text));
    } else if (name === "render") {
      // Offsets count characters (code points), as the server does.
      const rest = Array.from(follower.raw).slice(data.offset).join("");
      streamed.innerHTML = data.html; // sanitized on the server (nh3 allow-list)
      streamed.classList.add("rendered");
      follower.tail = document.createElement("span");
      follower.tail.className = "stream-tail";
      follower.tail.textContent = rest;
      streamed.appendChild(follower.tail);
    } else if (name === "done") {
      settle(follower.bubble, data);
      follower.settled = true;
    } else if (name === "error") {
      if (data.status) settle(follower.bubble, data);
      follower.settled = true;
      showBanner(data.message, data.code);
    }
    if (follow) toBottom();
  }

  // Follow a reply from where this page left it (a dropped connection, a reload):
  // the server keeps generating it whatever happens to the page.
  async function reattach(follower) {
    for (let attempt = 0; attempt < 30 && !follower.settled; attempt++) {
      try {
        const response = await fetch("/api/chat/" + follower.bubble.dataset.id + "/events?render=1", {
          headers: { Accept: "text/event-stream", "Last-Event-ID": follower.cursor },
        });
        if (response.status === 404) break;
        if (response.ok) {
          await readEvents(response, (name, data, id) => onReplyEvent(follower, name, data, id));
          continue;
        }
      } catch (e) {
        /* offline for now: try again */
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(500 * (attempt + 1), 5000)));
    }
    if (!follower.settled) showBanner("The connection was lost. Reload the page to see the reply.", "network");
  }

  // A reply still being written when the page loads (a reload, another tab): follow it.
  async function resumeGenerating() {
    const last = messages.querySelector("li.message:last-child.status-generating");
    if (!last || !last.dataset.id) return;
    const body = last.querySelector(".message-body");
    body.textContent = "";
    body.classList.add("streaming");
    controller = new AbortController();
    setBusy(true);
    try {
      await reattach(newFollower(last));
    } finally {
      controller = null;
      setBusy(false);
    }
    await refreshConversation();
  }

  // What the next message's input will cost, estimated as the user types (never
  // recorded: the reply shows what the provider reports).
  const estimateLine = document.getElementById("cost-estimate");
  let estimateTimer = null;
  let estimateSeq = 0;
  function estimateSoon() {
    clearTimeout(estimateTimer);
    estimateTimer = setTimeout(estimate, 400);
  }
  async function estimate() {
    const { provider, model } = selectedModel();
    const text = input.value;
    if (!provider || !model || !text.trim()) {
      estimateLine.hidden = true;
      return;
    }
    const seq = ++estimateSeq;
    let answer;
    try {
      const response = await fetch("/api/chat/estimate", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ conversation: conversationId, provider, model, message: text, system_prompt: systemPrompt.value }),
      });
      if (!response.ok) return;
      answer = await response.json();
    } catch (err) {
      return;
    }
    if (seq !== estimateSeq) return; // a newer one is on its way
    let line = "Estimate: ~" + number(answer.input_tokens) + " input tokens";
    line += answer.method === "counted" ? " (counted by the provider)" : " (about 4 characters a token)";
    line += answer.input_cost === null ? ", model unpriced" : " ≈ " + money(answer.input_cost) + " before the reply";
    if (answer.budget_left !== null) line += " · " + money(answer.budget_left) + " left this month";
    estimateLine.textContent = line;
    estimateLine.hidden = false;
  }
  input.addEventListener("input", estimateSoon);
  systemPrompt.addEventListener("input", estimateSoon);
  picker.addEventListener("change", estimateSoon);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = "";
    send({ text });
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  // Stop is asked of the server, which ends the reply for every tab following it.
  function requestStop(bubble) {
    stopWanted = false;
    return fetch("/api/chat/" + bubble.dataset.id + "/stop", {
      method: "POST",
      headers: { "X-CSRFToken": csrf },
    });
  }

  stopButton.addEventListener("click", async (event) => {
    // The second click of a double-click on Send lands here: it is not a Stop.
    if (event.detail > 1) return;
    const current = messages.querySelector("li.message-assistant.status-generating:last-child");
    if (!current) return;
    if (!current.dataset.id) {
      stopWanted = true;
      return;
    }
    await requestStop(current);
  });

  messages.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const li = button.closest("li.message");
    if (button.dataset.action === "copy" || button.dataset.action === "copy-code") {
      const text =
        button.dataset.action === "copy"
          ? li.querySelector(".raw-content").content.textContent
          : button.closest(".code-bar").nextElementSibling.textContent;
      const label = button.textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (e) {
        button.textContent = "Copy failed";
      }
      setTimeout(() => (button.textContent = label), 1500);
    } else if (button.dataset.action === "regenerate" && !controller) {
      send({ regenerate: true });
    }
  });

  actions.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || !conversationId) return;
    if (button.dataset.action === "pin" || button.dataset.action === "archive") {
      const change =
        button.dataset.action === "pin"
          ? { pinned: button.getAttribute("aria-pressed") !== "true" }
          : { archived: button.textContent.trim() === "Archive" };
      if (!(await callApi("/api/conversations/" + conversationId, "PATCH", change))) return;
      // The header's buttons and the list (Pinned, Archived) are laid out anew.
      window.location.reload();
    } else if (button.dataset.action === "rename") {
      const name = window.prompt("Rename conversation", title.textContent);
      if (!name) return;
      if (!(await callApi("/api/conversations/" + conversationId, "PATCH", { title: name }))) return;
      await refreshConversation();
    } else if (button.dataset.action === "delete") {
      if (!window.confirm("Delete this conversation? Its cost stays in your usage.")) return;
      const response = await fetch("/api/conversations/" + conversationId, {
        method: "DELETE",
        headers: { "X-CSRFToken": csrf },
      });
      if (response.ok) window.location.href = "/";
    }
  });

  // Searching shows the matches (archived ones too) as one flat list; clearing the
  // search brings the grouped list back as it was.
  let searchTimer = null;
  let grouped = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(async () => {
      const q = search.value.trim();
      if (!q) {
        if (grouped) list.replaceChildren(...grouped);
        grouped = null;
        searching = false;
        return;
      }
      const response = await fetch("/api/conversations?q=" + encodeURIComponent(q));
      if (!response.ok) return;
      const found = await response.json();
      if (!grouped) grouped = Array.from(list.children);
      searching = true;
      list.replaceChildren(...found.map((c) => sidebarItem(c).cloneNode(true)));
      const current = list.querySelector('li[data-id="' + conversationId + '"]');
      if (current) current.classList.add("current");
    }, 250);
  });

  // On a phone the chat's settings fold away behind a button.
  const settingsToggle = document.getElementById("settings-toggle");
  settingsToggle.addEventListener("click", () => {
    const open = root.classList.toggle("settings-open");
    settingsToggle.setAttribute("aria-expanded", String(open));
  });

  // On a phone the conversations are a drawer.
  const layout = root.parentElement;
  const sidebarToggle = document.getElementById("sidebar-toggle");
  function showSidebar(open) {
    layout.classList.toggle("sidebar-open", open);
    sidebarToggle.setAttribute("aria-expanded", String(open));
    if (open) search.focus();
  }
  sidebarToggle.addEventListener("click", () => showSidebar(!layout.classList.contains("sidebar-open")));
  document.getElementById("sidebar-backdrop").addEventListener("click", () => showSidebar(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && layout.classList.contains("sidebar-open")) showSidebar(false);
  });

  // Keyboard: Ctrl+Shift+O a new chat, Shift+Esc or / the message box, Esc stops a
  // reply being written, ? lists these.
  const help = document.getElementById("shortcuts");
  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }
  document.addEventListener("keydown", (event) => {
    if (help.open || event.isComposing) return; // the dialog closes itself on Esc
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && event.shiftKey && key.toLowerCase() === "o") {
      event.preventDefault();
      window.location.href = "/";
    } else if (key === "Escape" && event.shiftKey) {
      event.preventDefault();
      input.focus();
    } else if (key === "Escape" && !stopButton.hidden && !stopButton.disabled && !layout.classList.contains("sidebar-open")) {
      event.preventDefault();
      stopButton.click();
    } else if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    } else if (key === "/") {
      event.preventDefault();
      input.focus();
    } else if (key === "?") {
      event.preventDefault();
      help.showModal();
    }
  });
  document.getElementById("shortcuts-close").addEventListener("click", () => help.close());
  document.getElementById("shortcuts-button").addEventListener("click", () => help.showModal());

  regroup();
  // Code blocks of the replies on the page get their bar.
  enhanceCode(messages);
  // A conversation opens at its newest message.
  toBottom();
  resumeGenerating();
})();
