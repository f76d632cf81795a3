// The dashboard's behaviour: live parts, actions through the JSON API, the submit form.
// Plain JavaScript, no build step; every request goes to this server.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function api(method, path, body) {
  const headers = {"Accept": "application/json", "X-CSRF-Token": csrf()};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, {method, headers, credentials: "same-origin",
                      body: body === undefined ? undefined : JSON.stringify(body)})
    .then(async (response) => {
      if (response.status === 401) { window.location.reload(); }
      let data = null;
      try { data = await response.json(); } catch (e) { /* an empty or non-JSON answer */ }
      return {status: response.status, ok: response.ok, data};
    });
}

function notice(text, isError) {
  const element = document.getElementById("notice");
  element.textContent = text;
  element.className = isError ? "error" : "ok";
  element.hidden = false;
}

// Times: the server writes UTC ([data-local] with a datetime or data-datetime, the exact UTC
// time in the title); the browser knows the reader's time zone, so it rewrites the text.
const pad = (n) => String(n).padStart(2, "0");

function localText(date, format) {
  const hm = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  if (format === "hm") return hm;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${hm}:${pad(date.getSeconds())}`;
}

function localizeTimes(root) {
  root.querySelectorAll("[data-local]").forEach((element) => {
    const date = new Date(element.getAttribute("datetime") || element.dataset.datetime);
    if (!Number.isNaN(date.getTime())) element.textContent = localText(date, element.dataset.local);
  });
}

// Live parts: each [data-live] element re-renders from its URL every data-every ms.
const refreshers = [];

// A part that renders [data-final] (a finished task, an ended workflow) stops polling; one
// that runs again (a retried workflow, refreshed after its Retry) starts polling again.
function startLive(element) {
  let busy = false, timer = null;
  const poll = () => {
    const final = element.querySelector("[data-final]") !== null;
    if (final && timer !== null) { clearInterval(timer); timer = null; }
    if (!final && timer === null) timer = setInterval(refresh, Number(element.dataset.every || 1000));
  };
  const refresh = () => {
    if (busy) return Promise.resolve();
    busy = true;
    return fetch(element.dataset.live, {credentials: "same-origin"})
      .then((response) => {
        if (response.redirected) { window.location.reload(); return null; }  // signed out
        return response.ok || response.status === 404 || response.status === 422 ? response.text() : null;
      })
      .then((html) => {
        if (html === null) return;
        element.innerHTML = html;
        localizeTimes(element);  // before the next paint: no flash of UTC
        poll();
      })
      .catch(() => { /* the server is restarting: try again on the next tick */ })
      .finally(() => { busy = false; });
  };
  refreshers.push(refresh);
  poll();
}

const refreshAll = () => Promise.all(refreshers.map((refresh) => refresh()));

// Confirmation that says how many tasks an action will change.
function confirmDialog(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
    dialog.showModal();
  });
}

async function taskAction(button) {
  const id = button.dataset.task, action = button.dataset.action;
  button.disabled = true;
  const answer = await api("POST", `/api/tasks/${id}/${action}`);
  if (answer.ok) {
    notice(action === "retry" ? `Task ${id} retried as task ${answer.data.id}.`
      : answer.status === 202 ? `Task ${id} was asked to stop.` : `Task ${id} cancelled.`);
  } else {
    notice(`Could not ${action} task ${id}: ${answer.data ? answer.data.message : answer.status}`, true);
  }
  await refreshAll();
}

// A workflow's Cancel and Retry are forms posting to the API; sent from here, the page stays.
async function workflowAction(form) {
  const id = form.dataset.workflow, action = form.dataset.workflowAction;
  form.querySelector("button").disabled = true;
  const answer = await api("POST", form.getAttribute("action"));
  if (answer.ok && action === "retry") {
    const started = answer.data.tasks.length;
    notice(`Workflow ${id} runs again: ${started} task${started === 1 ? "" : "s"} started.`);
  } else if (answer.ok) {
    notice(`Workflow ${id} cancelled.`);
  } else {
    notice(`Could not ${action} workflow ${id}: ${answer.data ? answer.data.message : answer.status}`, true);
  }
  await refreshAll();
}

async function queueAction(button) {
  const name = button.dataset.queueName, action = button.dataset.queueAction;
  button.disabled = true;
  const answer = await api("POST", `/api/queues/${encodeURIComponent(name)}/${action}`);
  if (answer.ok) {
    notice(action === "pause" ? `Queue ${name} paused: its tasks wait until it is resumed.` : `Queue ${name} resumed.`);
  } else {
    notice(`Could not ${action} queue ${name}: ${answer.data ? answer.data.message : answer.status}`, true);
  }
  await refreshAll();
}

async function bulkAction(button) {
  const action = button.dataset.bulk;
  const filter = {};
  if (button.dataset.status) filter.status = button.dataset.status;
  if (button.dataset.name) filter.name = button.dataset.name;
  const count = await api("POST", `/api/tasks/${action}`, {...filter, dry_run: true});
  if (!count.ok) { notice(`Could not count the tasks: ${count.data && count.data.message}`, true); return; }
  const matched = count.data.matched;
  const what = [filter.status || (action === "retry" ? "failed or cancelled" : "unfinished"),
                filter.name ? `${filter.name} ` : ""];
  if (!matched) { notice(`No ${what[1]}task is ${what[0]}: nothing to ${action}.`); return; }
  const verb = action === "retry" ? "Retry" : "Cancel";
  const sure = await confirmDialog(`${verb} ${matched} ${what[1]}task${matched === 1 ? "" : "s"} that ${matched === 1 ? "is" : "are"} ${what[0]}?`);
  if (!sure) return;
  const done = await api("POST", `/api/tasks/${action}`, {...filter, limit: 10000});
  if (done.ok) {
    notice(`${action === "retry" ? "Retried" : "Cancelled or stopped"} ${done.data.affected} of ${done.data.matched}.`);
  } else {
    notice(`Could not ${action}: ${done.data ? done.data.message : done.status}`, true);
  }
  await refreshAll();
}

// The submit form: errors go next to the field they are about.
function showErrors(form, errors) {
  form.querySelectorAll(".field-error").forEach((element) => { element.textContent = ""; });
  for (const [field, messages] of Object.entries(errors)) {
    const target = form.querySelector(`[data-error-for="${field}"]`) || form.querySelector('[data-error-for="_form"]');
    target.textContent = describe(messages);
  }
}

function describe(messages) {
  if (Array.isArray(messages)) return messages.join(" ");
  if (messages && typeof messages === "object") {
    return Object.entries(messages).map(([key, value]) => `${key}: ${describe(value)}`).join("; ");
  }
  return String(messages);
}

async function submitTask(event) {
  event.preventDefault();
  const form = event.target;
  const body = {name: form.elements.name.value};
  try {
    body.args = JSON.parse(form.elements.args.value || "{}");
  } catch (error) {
    showErrors(form, {args: [`Not valid JSON: ${error.message}`]});
    return;
  }
  if (form.elements.delay.value !== "") body.delay = Number(form.elements.delay.value);
  if (form.elements.priority.value !== "") body.priority = Number(form.elements.priority.value);
  const answer = await api("POST", "/api/tasks", body);
  if (answer.status === 202) {
    window.location.href = `/dashboard/tasks/${answer.data.id}`;
  } else if (answer.data && answer.data.details && answer.data.details.json) {
    showErrors(form, answer.data.details.json);
  } else {
    showErrors(form, {_form: [answer.data ? answer.data.message : `HTTP ${answer.status}`]});
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localizeTimes(document);
  document.querySelectorAll("[data-live]").forEach(startLive);
  document.addEventListener("click", (event) => {
    const action = event.target.closest("[data-action]");
    if (action) { taskAction(action); return; }
    const queue = event.target.closest("[data-queue-action]");
    if (queue) { queueAction(queue); return; }
    const bulk = event.target.closest("[data-bulk]");
    if (bulk) bulkAction(bulk);
  });
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-workflow-action]");
    if (form) { event.preventDefault(); workflowAction(form); }
  });
  const form = document.getElementById("submit-task");
  if (form) form.addEventListener("submit", submitTask);
});
