// Satchel dashboard. Plain script, no framework: polls the Message Batches API (and the
// backends' health) every second with the key from session storage, sent as a header only.
'use strict';

const KEY = 'satchel.apiKey';
const VERSION = '2023-06-01';
const POLL_MS = 1000;
const RATE_WINDOW_MS = 15000;
const ERROR_SCAN_BYTES = 8 * 1024 * 1024; // how much of a results file the error view reads
const SAMPLES_PER_TYPE = 5;

const $ = (id) => document.getElementById(id);
const samples = new Map(); // batch id -> [{t, done}], for rate and ETA
const errorGroups = new Map(); // ended batch id -> grouped errors (results never change)
let backendsBefore = null;
let openId = null;
let timer = null;

class Unauthorized extends Error {}

async function api(method, path) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, {
    method,
    headers: { 'x-api-key': key || '', 'anthropic-version': VERSION },
    cache: 'no-store',
    referrerPolicy: 'no-referrer',
  });
  if (response.status === 401) throw new Unauthorized('That key was not accepted.');
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function say(text) { $('status').textContent = text; }

function element(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const child of children) el.append(child);
  return el;
}

function when(ts) { return ts ? new Date(ts).toLocaleString() : '—'; }

function duration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return '—';
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

const PARTS = ['succeeded', 'errored', 'canceled', 'expired'];
function total(c) { return c.processing + c.succeeded + c.errored + c.canceled + c.expired; }
function done(c) { return total(c) - c.processing; }

/// Requests per second over the last seconds, from successive polls.
function rate(batch) {
  const now = Date.now();
  const list = samples.get(batch.id) || [];
  list.push({ t: now, done: done(batch.request_counts) });
  while (list.length > 2 && now - list[0].t > RATE_WINDOW_MS) list.shift();
  samples.set(batch.id, list);
  const first = list[0];
  const last = list[list.length - 1];
  if (last.t - first.t < 500) return null;
  return (last.done - first.done) / ((last.t - first.t) / 1000);
}

function progressBar(batch) {
  const c = batch.request_counts;
  const n = total(c) || 1;
  const bar = element('div', {
    class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(total(c)),
    'aria-valuenow': String(done(c)), 'aria-label': `Progress of ${batch.id}`,
    'data-testid': 'progress',
  });
  for (const part of PARTS) {
    const span = element('span', { class: part, title: `${c[part]} ${part}` });
    span.style.width = `${(100 * c[part]) / n}%`;
    bar.append(span);
  }
  const pct = Math.floor((100 * done(c)) / n);
  const text = element('div', { class: 'progress-text',
    text: `${done(c)} of ${total(c)} done (${pct}%)` + (c.errored ? `, ${c.errored} errored` : '') });
  return [bar, text];
}

function confirmThen(text, yesLabel, action) {
  const dialog = $('confirm');
  $('confirm-text').textContent = text;
  $('confirm-yes').textContent = yesLabel;
  dialog.returnValue = '';
  dialog.onclose = async () => {
    if (dialog.returnValue !== 'yes') return;
    try { await action(); } catch (e) { handle(e); }
    poll();
  };
  dialog.showModal();
  $('confirm-no').focus();
}

function actions(batch) {
  const cell = element('td');
  cell.append(element('button', { type: 'button', text: 'Open', 'aria-label': `Open ${batch.id}`,
    onclick: () => open(batch.id) }));
  if (batch.processing_status === 'in_progress') {
    cell.append(element('button', { type: 'button', class: 'danger', text: 'Cancel',
      'aria-label': `Cancel ${batch.id}`,
      onclick: () => confirmThen(`Cancel batch ${batch.id}? Requests not yet sent will not run.`,
        'Yes, cancel it', async () => {
          await api('POST', `/v1/messages/batches/${batch.id}/cancel`);
          say(`Canceling ${batch.id}.`);
        }) }));
  }
  if (batch.processing_status === 'ended') {
    cell.append(element('button', { type: 'button', class: 'danger', text: 'Delete',
      'aria-label': `Delete ${batch.id}`,
      onclick: () => confirmThen(`Delete batch ${batch.id} and its results? This cannot be undone.`,
        'Yes, delete it', async () => {
          await api('DELETE', `/v1/messages/batches/${batch.id}`);
          if (openId === batch.id) closeDetail();
          say(`Deleted ${batch.id}.`);
        }) }));
  }
  return cell;
}

function statusCell(batch) {
  const s = batch.processing_status;
  return element('td', {}, [element('span', { class: `status ${s}`, text: s.replace('_', ' ') })]);
}

function row(batch) {
  const r = rate(batch);
  const c = batch.request_counts;
  const running = batch.processing_status !== 'ended';
  const tr = element('tr', { 'data-id': batch.id, 'data-status': batch.processing_status });
  tr.append(
    element('td', {}, [element('code', { text: batch.id })]),
    statusCell(batch),
    element('td', {}, progressBar(batch)),
    element('td', { class: 'num', text: running && r !== null ? `${r.toFixed(1)}/s` : '—' }),
    element('td', { class: 'num', text: running && r ? duration(c.processing / r) : '—' }),
    element('td', { text: when(batch.created_at) }),
    element('td', { text: when(batch.ended_at) }),
    actions(batch),
  );
  return tr;
}

/// Replaces a row only when it changed, and keeps the focused button focused.
function renderBatches(batches) {
  const body = $('batches').querySelector('tbody');
  const focused = document.activeElement && body.contains(document.activeElement)
    ? document.activeElement.getAttribute('aria-label') : null;
  const old = new Map([...body.children].map((tr) => [tr.dataset.id, tr]));
  const rows = batches.map(row);
  body.replaceChildren(...rows);
  for (const tr of rows) {
    const before = old.get(tr.dataset.id);
    if (before && before.dataset.status !== tr.dataset.status) {
      say(`${tr.dataset.id} is now ${tr.dataset.status.replace('_', ' ')}.`);
    }
  }
  if (focused) {
    const again = [...body.querySelectorAll('button')].find((b) => b.getAttribute('aria-label') === focused);
    if (again) again.focus();
  }
  $('no-batches').hidden = batches.length > 0;
}

function renderBackends(list) {
  const body = $('backends').querySelector('tbody');
  const before = backendsBefore || new Map();
  backendsBefore = new Map(list.map((b) => [b.name, b]));
  body.replaceChildren(...list.map((b) => {
    const prev = before.get(b.name);
    const attempts = prev ? b.attempts - prev.attempts : 0;
    const latency = attempts > 0
      ? (b.attempt_seconds - prev.attempt_seconds) / attempts
      : (b.attempts ? b.attempt_seconds / b.attempts : null);
    return element('tr', {}, [
      element('td', { text: b.name }),
      element('td', { text: b.paused ? '⚠ paused (unreachable)' : '✓ up' }),
      element('td', { class: 'num', text: String(b.in_flight) }),
      element('td', { class: 'num', text: `${b.concurrency_limit} of ${b.max_concurrency}` }),
      element('td', { class: 'num', text: String(b.attempts) }),
      element('td', { class: 'num', text: String(b.throttles) }),
      element('td', { class: 'num', text: String(b.retries) }),
      element('td', { class: 'num', text: String(b.failures) }),
      element('td', { class: 'num', text: latency === null ? '—' : `${Math.round(latency * 1000)} ms` }),
    ]);
  }));
}

/// Reads the start of an ended batch's results and groups its errored lines by type.
async function groupErrors(id) {
  const response = await api('GET', `/v1/messages/batches/${id}/results`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const groups = new Map();
  let rest = '';
  let read = 0;
  let complete = true;
  const take = (line) => {
    if (!line) return;
    const parsed = JSON.parse(line);
    if (parsed.result.type !== 'errored') return;
    const error = (parsed.result.error && parsed.result.error.error) || {};
    const type = error.type || 'unknown';
    const group = groups.get(type) || { count: 0, samples: [] };
    group.count += 1;
    if (group.samples.length < SAMPLES_PER_TYPE) group.samples.push({ id: parsed.custom_id, message: error.message || '' });
    groups.set(type, group);
  };
  for (;;) {
    const { value, done: finished } = await reader.read();
    if (finished) break;
    read += value.length;
    rest += decoder.decode(value, { stream: true });
    const lines = rest.split('\n');
    rest = lines.pop();
    lines.forEach(take);
    if (read > ERROR_SCAN_BYTES) { complete = false; await reader.cancel(); break; }
  }
  if (complete) take(rest);
  return { groups, complete };
}

function renderErrors(batch, found) {
  const box = $('detail-errors');
  if (batch.processing_status !== 'ended') {
    box.replaceChildren(element('p', { text: `${batch.request_counts.errored} errored so far; their lines can be read once the batch has ended.` }));
    return;
  }
  if (!found) { box.replaceChildren(element('p', { text: 'Reading results…' })); return; }
  if (found.groups.size === 0) { box.replaceChildren(element('p', { text: 'No errored requests.' })); return; }
  const parts = [...found.groups.entries()].sort((a, b) => b[1].count - a[1].count).map(([type, g]) =>
    element('div', { class: 'group', 'data-error-type': type }, [
      element('h4', { text: `${type}: ${g.count}` }),
      element('ul', {}, g.samples.map((s) => element('li', {}, [element('code', { text: s.id }), ` — ${s.message}`]))),
    ]));
  if (!found.complete) parts.push(element('p', { text: 'From the first 8 MB of results.' }));
  box.replaceChildren(...parts);
}

async function renderDetail() {
  if (!openId) return;
  const batch = await (await api('GET', `/v1/messages/batches/${openId}`)).json();
  $('detail-title').textContent = `Batch ${batch.id}`;
  const c = batch.request_counts;
  const facts = [['Status', batch.processing_status.replace('_', ' ')],
    ['Requests', String(total(c))],
    ...['processing', ...PARTS].map((k) => [k[0].toUpperCase() + k.slice(1), String(c[k])]),
    ['Created', when(batch.created_at)], ['Expires', when(batch.expires_at)],
    ['Cancel asked', when(batch.cancel_initiated_at)], ['Ended', when(batch.ended_at)]];
  $('detail-facts').replaceChildren(...facts.flatMap(([k, v]) => [element('dt', { text: k }), element('dd', { text: v })]));
  if (batch.processing_status === 'ended' && c.errored > 0 && !errorGroups.has(batch.id)) {
    renderErrors(batch, null);
    errorGroups.set(batch.id, await groupErrors(batch.id));
  }
  const found = c.errored === 0 ? { groups: new Map(), complete: true } : errorGroups.get(batch.id);
  renderErrors(batch, found);
}

async function open(id) {
  openId = id;
  $('detail').hidden = false;
  await renderDetail().catch(handle);
  $('detail').focus();
}

function closeDetail() {
  openId = null;
  $('detail').hidden = true;
}

function handle(e) {
  if (e instanceof Unauthorized) { signOut(e.message); return; }
  say(`Error: ${e.message}`);
}

async function poll() {
  clearTimeout(timer);
  try {
    const page = await (await api('GET', '/v1/messages/batches?limit=100')).json();
    renderBatches(page.data);
    $('more-batches').hidden = !page.has_more;
    const backends = await (await api('GET', '/dashboard/api/backends')).json();
    renderBackends(backends.backends);
    await renderDetail();
  } catch (e) {
    handle(e);
    if (e instanceof Unauthorized) return;
  }
  timer = setTimeout(poll, POLL_MS);
}

function showApp(signedIn) {
  $('signin-view').hidden = signedIn;
  $('app-view').hidden = !signedIn;
  $('whoami').hidden = !signedIn;
}

function signOut(reason) {
  clearTimeout(timer);
  sessionStorage.removeItem(KEY);
  samples.clear();
  errorGroups.clear();
  closeDetail();
  showApp(false);
  $('signin-error').textContent = reason || '';
  $('key').focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $('key').value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  $('key').value = '';
  try {
    await api('GET', '/v1/messages/batches?limit=1');
  } catch (e) {
    signOut(e instanceof Unauthorized ? e.message : `Could not sign in: ${e.message}`);
    return;
  }
  $('signin-error').textContent = '';
  showApp(true);
  say('Signed in.');
  poll();
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin').addEventListener('submit', signIn);
  $('signout').addEventListener('click', () => { signOut('Signed out.'); });
  $('detail-close').addEventListener('click', closeDetail);
  if (sessionStorage.getItem(KEY)) { showApp(true); poll(); } else { $('key').focus(); }
});
