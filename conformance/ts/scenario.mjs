// Satchel conformance scenario for the official TypeScript SDK (@anthropic-ai/sdk, pinned in package.json).
//
//   SATCHEL_BASE_URL=http://127.0.0.1:PORT node conformance/ts/scenario.mjs
//
// The server must have the keys sk-conf-a (workspace team-a) and sk-conf-b (workspace team-b) and
// emulate ~1 s of latency per request. Prints one line per check; exits 1 on the first failed check.
// The TS SDK does no response validation, so the wire shape is checked here on every object.

import Anthropic from '@anthropic-ai/sdk';
import { VERSION } from '@anthropic-ai/sdk/version';

const BASE_URL = process.env.SATCHEL_BASE_URL.replace(/\/+$/, '');
const KEY_A = 'sk-conf-a';
const KEY_B = 'sk-conf-b';
const SDK = `ts @anthropic-ai/sdk@${VERSION}`;
const MODEL = 'claude-test-1';
const BATCH_KEYS = ['archived_at', 'cancel_initiated_at', 'created_at', 'ended_at', 'expires_at', 'id',
  'processing_status', 'request_counts', 'results_url', 'type'];
const COUNT_KEYS = ['canceled', 'errored', 'expired', 'processing', 'succeeded'];
const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
const POLL_TIMEOUT_MS = 60_000;

let passed = 0;

class CheckFailed extends Error {}

function check(name, cond, detail = '') {
  if (!cond) {
    const d = typeof detail === 'string' ? detail : JSON.stringify(detail);
    throw new CheckFailed(d ? `${name}: ${d}` : name);
  }
  passed += 1;
  console.log(`  ok  ${name}`);
}

const section = (title) => console.log(`--- ${title}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sortedKeys = (o) => Object.keys(o).sort();
const sameList = (a, b) => JSON.stringify(a) === JSON.stringify(b);
// JSON with object keys sorted, to compare objects whatever their key order.
const canon = (v) => JSON.stringify(v, (_, x) =>
  x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort()) : x);

// Every request the SDK sends goes through this fetch, so the scenario can see what was sent.
const sent = [];
function recordingFetch(url, init = {}) {
  sent.push({ url: String(url), method: init.method, headers: new Headers(init.headers), body: init.body });
  return fetch(url, init);
}

const OTHER_BASE_URL = (process.env.SATCHEL_OTHER_BASE_URL || '').replace(/\/+$/, '');

// Several nodes sharing one store, seen as one client: each call (each property taken from
// the client, as in `c.messages.batches.retrieve(...)`) goes to the next node.
const makeClient = (apiKey = KEY_A) => {
  const clients = [BASE_URL, ...(OTHER_BASE_URL ? [OTHER_BASE_URL] : [])]
    .map((baseURL) => new Anthropic({ apiKey, baseURL, maxRetries: 0, fetch: recordingFetch }));
  if (clients.length === 1) return clients[0];
  let next = 0;
  return new Proxy(clients[0], {
    get: (_, prop) => {
      const c = clients[next++ % clients.length];
      const value = c[prop];
      // Methods keep their own client as `this` (they read its private fields).
      return typeof value === 'function' ? value.bind(c) : value;
    },
  });
};

const params = (text = 'Hello, world', maxTokens = 64) => {
  const p = { model: MODEL, messages: [{ role: 'user', content: text }] };
  if (maxTokens !== null) p.max_tokens = maxTokens;
  return p;
};

async function http(method, url, headers = {}, auth = true) {
  if (!url.startsWith('http')) url = BASE_URL + url;
  const h = auth ? { 'x-api-key': KEY_A, 'anthropic-version': '2023-06-01' } : {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === null) delete h[k];
    else h[k] = v;
  }
  const resp = await fetch(url, { method, headers: h });
  return { status: resp.status, headers: resp.headers, body: await resp.text() };
}

function checkRawError(name, r, wantStatus, wantType, wantMessage = null) {
  check(`${name}: HTTP ${wantStatus}`, r.status === wantStatus, `got ${r.status}: ${r.body.slice(0, 300)}`);
  const doc = JSON.parse(r.body);
  check(`${name}: error envelope`, doc.type === 'error' && typeof doc.error === 'object', doc);
  check(`${name}: error.type ${wantType}`, doc.error.type === wantType, doc);
  if (wantMessage !== null) {
    check(`${name}: message`, doc.error.message === wantMessage, `want ${wantMessage}, got ${doc.error.message}`);
  }
  const rid = r.headers.get('request-id') ?? '';
  check(`${name}: request-id header`, rid.startsWith('req_'), rid);
  check(`${name}: body request_id == header`, doc.request_id === rid, `${doc.request_id} vs ${rid}`);
}

async function expectError(name, ErrorClass, status, type, message, fn) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  if (err === null) throw new CheckFailed(`${name}: expected ${ErrorClass.name}, but the call succeeded`);
  if (!(err instanceof ErrorClass)) {
    throw new CheckFailed(`${name}: expected ${ErrorClass.name}, got ${err?.constructor?.name}: ${err?.message}`);
  }
  check(`${name}: throws ${ErrorClass.name}`, true);
  check(`${name}: status ${status}`, err.status === status, err.status);
  const body = err.error ?? {};
  check(`${name}: error.type ${type}`, body.error?.type === type, body);
  if (message !== null) {
    check(`${name}: message`, body.error?.message === message, `want ${message}, got ${body.error?.message}`);
  }
  check(`${name}: request-id`, (err.requestID ?? '').startsWith('req_') && body.request_id === err.requestID,
    `header ${err.requestID}, body ${body.request_id}`);
  return err;
}

function checkBatchShape(name, b) {
  check(`${name}: exactly the ten MessageBatch keys`, sameList(sortedKeys(b), BATCH_KEYS), sortedKeys(b));
  check(`${name}: request_counts keys`, sameList(sortedKeys(b.request_counts), COUNT_KEYS), sortedKeys(b.request_counts));
  check(`${name}: counts are integers`, Object.values(b.request_counts).every(Number.isInteger), b.request_counts);
  for (const k of ['created_at', 'expires_at', 'ended_at', 'cancel_initiated_at', 'archived_at']) {
    if (b[k] !== null) check(`${name}: ${k} format`, TIMESTAMP.test(b[k]), b[k]);
  }
}

// Timestamps carry microseconds, which a JS Date cannot hold: compare whole seconds and the fraction apart.
function plus24h(created, expires) {
  const [cs, cf] = created.split('.');
  const [es, ef] = expires.split('.');
  return cf === ef && Date.parse(`${es}Z`) - Date.parse(`${cs}Z`) === 24 * 3600 * 1000;
}

const sum = (c) => c.processing + c.succeeded + c.errored + c.canceled + c.expired;

async function waitEnded(client, id, total) {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  let polls = 0;
  let lastProcessing = total;
  for (;;) {
    const b = await client.messages.batches.retrieve(id);
    polls += 1;
    const c = b.request_counts;
    if (sum(c) !== total) throw new CheckFailed(`poll ${id}: counts ${JSON.stringify(c)} do not sum to ${total}`);
    if (c.processing > lastProcessing) throw new CheckFailed(`poll ${id}: processing went up`);
    lastProcessing = c.processing;
    if (b.processing_status === 'ended') {
      check(`batch ended after ${polls} polls`, true);
      return b;
    }
    if (!['in_progress', 'canceling'].includes(b.processing_status)) {
      throw new CheckFailed(`poll ${id}: bad processing_status ${b.processing_status}`);
    }
    if (b.results_url !== null) throw new CheckFailed(`poll ${id}: results_url set before ended`);
    if (Date.now() > deadline) throw new CheckFailed(`batch ${id} did not end within 60s (${JSON.stringify(c)})`);
    await sleep(200);
  }
}

async function collect(asyncIterable) {
  const out = [];
  for await (const x of asyncIterable) out.push(x);
  return out;
}

// ---------------------------------------------------------------------------------------------

async function main() {
  console.log(`=== ${SDK} against ${BASE_URL}${OTHER_BASE_URL ? ` and ${OTHER_BASE_URL}, alternating` : ''}`);
  const a = makeClient();
  const created = [];

  // ---- create ----------------------------------------------------------------------------
  section('create');
  const longText = 'Please write a long answer about batches. '.repeat(20);
  const requests = [
    { custom_id: 'req-ok', params: params() },
    { custom_id: 'req-bad', params: params('Hello, world', null) }, // missing max_tokens
    { custom_id: 'req-short', params: params(longText, 1) },
  ];
  const { data: b, response: createResp } = await a.messages.batches.create({ requests }).withResponse();
  const id = b.id;
  created.push(id);
  console.log(`      batch ${id}`);
  checkBatchShape('create', b);
  check('create: content-type application/json', (createResp.headers.get('content-type') ?? '').startsWith('application/json'));
  check('id starts msgbatch_', id.startsWith('msgbatch_'), id);
  check('type message_batch', b.type === 'message_batch', b.type);
  check('processing_status in_progress', b.processing_status === 'in_progress', b.processing_status);
  check('request_counts processing=3, others 0',
    canon(b.request_counts) === canon({ processing: 3, succeeded: 0, errored: 0, canceled: 0, expired: 0 }),
    b.request_counts);
  check('results_url, ended_at, cancel_initiated_at, archived_at null',
    b.results_url === null && b.ended_at === null && b.cancel_initiated_at === null && b.archived_at === null, b);
  check('expires_at == created_at + 24h', plus24h(b.created_at, b.expires_at), `${b.created_at} -> ${b.expires_at}`);
  const createReq = sent.at(-1);
  console.log(`      SDK sent: authorization=${createReq.headers.get('authorization') ? 'Bearer …' : null}` +
    ` x-api-key=${createReq.headers.get('x-api-key') ? 'set' : null} anthropic-version=${createReq.headers.get('anthropic-version')}`);
  if (Number(VERSION.split('.')[0]) >= 1) {
    check('SDK authenticated with Authorization: Bearer',
      createReq.headers.get('authorization') === `Bearer ${KEY_A}` && !createReq.headers.has('x-api-key'));
    check('SDK sent anthropic-version 2026-10-21', createReq.headers.get('anthropic-version') === '2026-10-21',
      createReq.headers.get('anthropic-version'));
  } else {
    check('SDK authenticated with x-api-key',
      createReq.headers.get('x-api-key') === KEY_A && !createReq.headers.has('authorization'));
    check('SDK sent anthropic-version 2023-06-01', createReq.headers.get('anthropic-version') === '2023-06-01',
      createReq.headers.get('anthropic-version'));
  }

  // ---- while in progress (~1 s per request on the server) ----------------------------------
  section('in progress');
  await expectError('delete in_progress', Anthropic.BadRequestError, 400, 'invalid_request_error',
    'In progress batches cannot be deleted. Consider canceling the batch instead.',
    () => a.messages.batches.delete(id));
  try {
    await a.messages.batches.results(id);
    throw new CheckFailed('results() of an in-progress batch: expected AnthropicError (no results_url)');
  } catch (e) {
    if (e instanceof CheckFailed) throw e;
    check('SDK results() refuses without results_url',
      e instanceof Anthropic.AnthropicError && !(e instanceof Anthropic.APIError) && e.message.includes('results_url'),
      `${e?.constructor?.name}: ${e?.message}`);
  }
  checkRawError('raw results before end', await http('GET', `/v1/messages/batches/${id}/results`), 404,
    'not_found_error', `Message Batch ${id} has no available results.`);

  // ---- raw retrieve ---------------------------------------------------------------------------
  section('raw retrieve');
  const resp = await a.messages.batches.retrieve(id).asResponse();
  check('retrieve: HTTP 200', resp.status === 200, resp.status);
  const ctype = resp.headers.get('content-type') ?? '';
  check('retrieve: content-type application/json', ctype.split(';')[0].trim() === 'application/json', ctype);
  check('retrieve: request-id req_', (resp.headers.get('request-id') ?? '').startsWith('req_'), resp.headers.get('request-id'));
  const doc = await resp.json();
  checkBatchShape('retrieve', doc);
  check('retrieve: id echoes', doc.id === id, doc.id);
  const wr = await a.messages.batches.retrieve(id).withResponse();
  check('withResponse: request_id matches header', wr.request_id === wr.response.headers.get('request-id'), wr.request_id);

  // ---- poll until ended -----------------------------------------------------------------------
  section('poll until ended');
  const done = await waitEnded(a, id, 3);
  checkBatchShape('ended', done);
  check('counts succeeded=2 errored=1 (sum 3)',
    done.request_counts.succeeded === 2 && done.request_counts.errored === 1 && sum(done.request_counts) === 3,
    done.request_counts);
  check('ended_at set', done.ended_at !== null && done.ended_at >= done.created_at, done.ended_at);
  check('results_url absolute', /^https?:\/\/[^/]+\//.test(done.results_url ?? ''), done.results_url);
  check('results_url ends /v1/messages/batches/<id>/results',
    (done.results_url ?? '').endsWith(`/v1/messages/batches/${id}/results`), done.results_url);

  // ---- results through the SDK ----------------------------------------------------------------
  section('results (SDK)');
  const lines = await collect(await a.messages.batches.results(id));
  const resultsReq = sent.at(-1);
  console.log(`      results fetched from ${resultsReq.url} with Accept: ${resultsReq.headers.get('accept')}`);
  if (OTHER_BASE_URL) {
    // Two nodes: the SDK follows the results_url of the retrieve it just made, on either.
    const fetched = new URL(resultsReq.url);
    check('SDK fetched a results_url of one of the nodes',
      fetched.pathname === new URL(done.results_url).pathname && [BASE_URL, OTHER_BASE_URL].includes(fetched.origin),
      resultsReq.url);
  } else {
    check('SDK fetched results_url verbatim', resultsReq.url === done.results_url, resultsReq.url);
  }
  check('results: exactly 3 lines', lines.length === 3, lines.length);
  check('results: submission order', sameList(lines.map((r) => r.custom_id), ['req-ok', 'req-bad', 'req-short']),
    lines.map((r) => r.custom_id));
  const [ok, bad, short] = lines;
  for (const r of lines) check(`results: ${r.custom_id} keys custom_id,result`, sameList(sortedKeys(r), ['custom_id', 'result']));
  check('req-ok: succeeded', ok.result.type === 'succeeded', ok.result.type);
  const m = ok.result.message;
  check('req-ok: message.id msg_', m.id.startsWith('msg_'), m.id);
  check('req-ok: type message, role assistant', m.type === 'message' && m.role === 'assistant');
  check('req-ok: model echoed', m.model === MODEL, m.model);
  check('req-ok: stop_reason end_turn', m.stop_reason === 'end_turn', m.stop_reason);
  check('req-ok: stop_sequence null', m.stop_sequence === null, m.stop_sequence);
  check('req-ok: content[0] is text', m.content[0]?.type === 'text' && m.content[0].text.length > 0, m.content);
  check('req-ok: usage tokens', Number.isInteger(m.usage.input_tokens) && m.usage.output_tokens >= 1, m.usage);
  check('req-bad: errored', bad.result.type === 'errored', bad.result.type);
  check('req-bad: error envelope type error', bad.result.error.type === 'error', bad.result.error);
  check('req-bad: invalid_request_error', bad.result.error.error.type === 'invalid_request_error', bad.result.error);
  check("req-bad: message 'max_tokens: Field required'",
    bad.result.error.error.message === 'max_tokens: Field required', bad.result.error.error.message);
  check('req-short: succeeded', short.result.type === 'succeeded', short.result.type);
  check('req-short: stop_reason max_tokens', short.result.message.stop_reason === 'max_tokens', short.result.message.stop_reason);
  check('req-short: usage.output_tokens == 1', short.result.message.usage.output_tokens === 1, short.result.message.usage);
  check('req-short: model echoed', short.result.message.model === MODEL, short.result.message.model);

  // ---- results raw ----------------------------------------------------------------------------
  section('results (raw)');
  const rr = await http('GET', done.results_url);
  check('raw results: 200', rr.status === 200, `${rr.status} ${rr.body.slice(0, 300)}`);
  check('raw results: content-type application/x-jsonl',
    (rr.headers.get('content-type') ?? '').startsWith('application/x-jsonl'), rr.headers.get('content-type'));
  check('raw results: ends with newline, no CR', rr.body.endsWith('\n') && !rr.body.includes('\r'));
  const rawLines = rr.body.slice(0, -1).split('\n');
  check('raw results: 3 lines, no blank line', rawLines.length === 3 && rawLines.every((l) => l.trim() !== ''), rawLines);
  for (const l of rawLines) {
    const o = JSON.parse(l);
    check(`raw results: ${o.custom_id} keys custom_id,result`, sameList(sortedKeys(o), ['custom_id', 'result']), sortedKeys(o));
  }

  // ---- list and pagination --------------------------------------------------------------------
  section('list');
  for (let i = 0; i < 4; i++) {
    await sleep(10); // distinct creation instants
    const nb = await a.messages.batches.create({ requests: [{ custom_id: `list-${i}`, params: params(`list ${i}`) }] });
    created.push(nb.id);
  }
  const all = await collect(a.messages.batches.list({ limit: 2 }));
  const seen = all.map((x) => x.id);
  check('auto-pagination: all created ids present', created.every((x) => seen.includes(x)), created.filter((x) => !seen.includes(x)));
  check('auto-pagination: no duplicates', new Set(seen).size === seen.length, seen);
  check('auto-pagination: ids strictly descending (newest first)', sameList(seen, [...seen].sort().reverse()), seen);
  check('auto-pagination: my batches newest first', sameList(seen.filter((x) => created.includes(x)), [...created].reverse()));
  check('list: created_at non-increasing', all.every((x, i) => i === 0 || all[i - 1].created_at >= x.created_at));
  for (const x of all) checkBatchShape(`list item ${x.id}`, x);
  const page1 = await a.messages.batches.list({ limit: 2 });
  const ids1 = page1.data.map((x) => x.id);
  check('page 1: 2 items', ids1.length === 2, ids1);
  check('page 1: has_more true', page1.has_more === true, page1.has_more);
  check('page 1: first_id/last_id match data', page1.first_id === ids1[0] && page1.last_id === ids1[1],
    [page1.first_id, page1.last_id, ids1]);
  check('page 1: is the newest', sameList(ids1, seen.slice(0, 2)));
  check('page 1: hasNextPage()', page1.hasNextPage());
  const page2 = await page1.getNextPage();
  const ids2 = page2.data.map((x) => x.id);
  check('getNextPage(): the next older ids', sameList(ids2, seen.slice(2, 4)), [ids2, seen.slice(2, 4)]);
  check('next page request used after_id', new URL(sent.at(-1).url).searchParams.get('after_id') === page1.last_id, sent.at(-1).url);
  const back = await a.messages.batches.list({ limit: 2, before_id: page2.first_id });
  check('before_id page: returns the newer page', sameList(back.data.map((x) => x.id), ids1), back.data.map((x) => x.id));
  check('before_id page: has_more false at the newest end', back.has_more === false, back.has_more);
  const mid = await a.messages.batches.list({ limit: 2, before_id: seen[4] });
  check('before_id page: the 2 batches just newer than the cursor', sameList(mid.data.map((x) => x.id), seen.slice(2, 4)),
    [mid.data.map((x) => x.id), seen.slice(2, 4)]);
  check('before_id page: has_more true when newer ones remain', mid.has_more === true, mid.has_more);
  const prev = await mid.getNextPage();
  check('SDK previous-page paging follows before_id', sameList(prev.data.map((x) => x.id), seen.slice(0, 2)) &&
    new URL(sent.at(-1).url).searchParams.get('before_id') === mid.first_id, sent.at(-1).url);
  const listResp = await a.messages.batches.list({ limit: 2 }).asResponse();
  const env = await listResp.json();
  check('raw list: exactly data,has_more,first_id,last_id', sameList(sortedKeys(env), ['data', 'first_id', 'has_more', 'last_id']),
    sortedKeys(env));
  await expectError('list limit=0', Anthropic.BadRequestError, 400, 'invalid_request_error', null,
    () => a.messages.batches.list({ limit: 0 }));
  await expectError('list limit=1001', Anthropic.BadRequestError, 400, 'invalid_request_error', null,
    () => a.messages.batches.list({ limit: 1001 }));

  // ---- workspace isolation --------------------------------------------------------------------
  section('workspace isolation');
  const bcl = makeClient(KEY_B);
  const notFound = (x) => `Message Batch ${x} not found.`;
  await expectError('team-b retrieve of team-a batch', Anthropic.NotFoundError, 404, 'not_found_error', notFound(id),
    () => bcl.messages.batches.retrieve(id));
  await expectError('team-b cancel of team-a batch', Anthropic.NotFoundError, 404, 'not_found_error', notFound(id),
    () => bcl.messages.batches.cancel(id));
  await expectError('team-b delete of team-a batch', Anthropic.NotFoundError, 404, 'not_found_error', notFound(id),
    () => bcl.messages.batches.delete(id));
  const bIds = (await collect(bcl.messages.batches.list({ limit: 1000 }))).map((x) => x.id);
  check("team-b list has none of team-a's batches", !bIds.some((x) => seen.includes(x)));
  check('team-a batch unaffected', (await a.messages.batches.retrieve(id)).processing_status === 'ended');

  // ---- beta resource --------------------------------------------------------------------------
  section('beta resource');
  const bb = await a.beta.messages.batches.retrieve(id);
  check('beta retrieve', bb.id === id && bb.processing_status === 'ended', bb);
  const bb2 = await a.beta.messages.batches.retrieve(id, { betas: ['message-batches-2024-09-24'] });
  const betaReq = sent.at(-1);
  console.log(`      beta request: ${betaReq.url} anthropic-beta=${betaReq.headers.get('anthropic-beta')}`);
  check('beta retrieve with anthropic-beta header', bb2.id === id && betaReq.headers.get('anthropic-beta') !== null);
  checkBatchShape('beta retrieve', bb2);
  const bl = await a.beta.messages.batches.list({ limit: 2 });
  check('beta list', sameList(bl.data.map((x) => x.id), ids1), bl.data.map((x) => x.id));
  const betaLines = await collect(await a.beta.messages.batches.results(id));
  check('beta results', sameList(betaLines.map((r) => r.custom_id), ['req-ok', 'req-bad', 'req-short']));

  // ---- cancel ---------------------------------------------------------------------------------
  section('cancel');
  const big = Array.from({ length: 3000 }, (_, i) => ({ custom_id: `big-${String(i).padStart(4, '0')}`, params: params(`item ${i}`, 8) }));
  const cb = await a.messages.batches.create({ requests: big });
  const cid = cb.id;
  created.push(cid);
  check('3000-request batch: processing=3000', cb.request_counts.processing === 3000, cb.request_counts);
  const c1 = await a.messages.batches.cancel(cid);
  const cancelReq = sent.at(-1);
  console.log(`      cancel sent content-type=${cancelReq.headers.get('content-type')} body=${JSON.stringify(cancelReq.body ?? null)}`);
  checkBatchShape('cancel', c1);
  check('cancel: status canceling (or ended)', ['canceling', 'ended'].includes(c1.processing_status), c1.processing_status);
  check('cancel: cancel_initiated_at set', c1.cancel_initiated_at !== null);
  check('cancel: counts still sum to 3000', sum(c1.request_counts) === 3000, c1.request_counts);
  const ended = await waitEnded(a, cid, 3000);
  const n = ended.request_counts;
  console.log(`      counts after cancel: ${JSON.stringify(n)}`);
  check('canceled batch: sum 3000, nothing processing', sum(n) === 3000 && n.processing === 0, n);
  check('canceled batch: canceled > 0', n.canceled > 0, n);
  check('canceled batch: cancel_initiated_at kept', ended.cancel_initiated_at === c1.cancel_initiated_at);
  const bigLines = await collect(await a.messages.batches.results(cid));
  check('canceled batch: 3000 result lines', bigLines.length === 3000, bigLines.length);
  check('canceled batch: lines in submission order', sameList(bigLines.map((r) => r.custom_id), big.map((r) => r.custom_id)));
  const kinds = {};
  for (const r of bigLines) kinds[r.result.type] = (kinds[r.result.type] ?? 0) + 1;
  check('canceled batch: canceled lines present', (kinds.canceled ?? 0) > 0, kinds);
  check('canceled batch: line kinds match counts',
    ['succeeded', 'errored', 'canceled', 'expired'].every((k) => (kinds[k] ?? 0) === n[k]), [kinds, n]);
  const again = await a.messages.batches.cancel(cid);
  check('cancel again: 200, unchanged', canon(again) === canon(ended), [again, ended]);

  // ---- delete ---------------------------------------------------------------------------------
  section('delete');
  const d = await a.messages.batches.delete(cid);
  check('delete: exactly id,type', sameList(sortedKeys(d), ['id', 'type']), d);
  check('delete: id', d.id === cid, d);
  check('delete: type message_batch_deleted', d.type === 'message_batch_deleted', d.type);
  created.splice(created.indexOf(cid), 1);
  await expectError('retrieve deleted', Anthropic.NotFoundError, 404, 'not_found_error', notFound(cid),
    () => a.messages.batches.retrieve(cid));
  await expectError('results() of deleted', Anthropic.NotFoundError, 404, 'not_found_error', notFound(cid),
    async () => collect(await a.messages.batches.results(cid)));
  await expectError('cancel deleted', Anthropic.NotFoundError, 404, 'not_found_error', notFound(cid),
    () => a.messages.batches.cancel(cid));
  await expectError('delete deleted', Anthropic.NotFoundError, 404, 'not_found_error', notFound(cid),
    () => a.messages.batches.delete(cid));
  checkRawError('raw results of deleted', await http('GET', `/v1/messages/batches/${cid}/results`), 404,
    'not_found_error', notFound(cid));

  // ---- unknown ids and routes -----------------------------------------------------------------
  section('unknown ids and routes');
  for (const unknown of ['msgbatch_01doesnotexist', 'nope']) {
    await expectError(`retrieve ${unknown}`, Anthropic.NotFoundError, 404, 'not_found_error', notFound(unknown),
      () => a.messages.batches.retrieve(unknown));
    await expectError(`cancel ${unknown}`, Anthropic.NotFoundError, 404, 'not_found_error', notFound(unknown),
      () => a.messages.batches.cancel(unknown));
    await expectError(`delete ${unknown}`, Anthropic.NotFoundError, 404, 'not_found_error', notFound(unknown),
      () => a.messages.batches.delete(unknown));
  }
  await expectError('unknown route /_stainless_unknown_path', Anthropic.NotFoundError, 404, 'not_found_error', null,
    () => a.get('/_stainless_unknown_path'));
  await expectError('unknown route /v1/_stainless_unknown_path', Anthropic.NotFoundError, 404, 'not_found_error', null,
    () => a.get('/v1/_stainless_unknown_path'));
  checkRawError('raw unknown route', await http('GET', '/_stainless_unknown_path'), 404, 'not_found_error');

  // ---- create validation ----------------------------------------------------------------------
  section('create validation');
  const newestBefore = (await a.messages.batches.list({ limit: 1 })).first_id;
  const one = params();
  const cases = [
    ['duplicate custom_id', [{ custom_id: 'dup', params: one }, { custom_id: 'dup', params: one }],
      "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup"],
    ['custom_id bad characters', [{ custom_id: 'ok', params: one }, { custom_id: 'a.b', params: one }],
      "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"],
    ['custom_id 65 chars', [{ custom_id: 'x'.repeat(65), params: one }],
      'requests.0.custom_id: String should have at most 64 characters'],
    ['empty requests', [], 'requests: List should have at least 1 item after validation, not 0'],
  ];
  for (const [name, reqs, message] of cases) {
    await expectError(name, Anthropic.BadRequestError, 400, 'invalid_request_error', message,
      () => a.messages.batches.create({ requests: reqs }));
  }
  check('rejected creates made no batch', (await a.messages.batches.list({ limit: 1 })).first_id === newestBefore);

  // ---- auth ------------------------------------------------------------------------------------
  section('auth');
  await expectError('bad api key', Anthropic.AuthenticationError, 401, 'authentication_error', null,
    () => makeClient('sk-wrong').messages.batches.retrieve(id));
  await expectError('bad api key on list', Anthropic.AuthenticationError, 401, 'authentication_error', null,
    () => makeClient('sk-wrong').messages.batches.list());

  // ---- the emulator's reply shapes, created through the beta namespace -----------------------
  section('emulator reply shapes (beta create)');
  const tool = {
    name: 'get_weather', description: 'Weather by city',
    input_schema: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } },
      required: ['city', 'unit'] },
  };
  const shapes = await a.beta.messages.batches.create({
    betas: ['message-batches-2024-09-24'],
    requests: [
      { custom_id: 'forced-tool', params: { ...params('Oslo', 256), tools: [tool], tool_choice: { type: 'tool', name: 'get_weather' } } },
      { custom_id: 'structured', params: { ...params('Ann', 256), output_config: { format: { type: 'json_schema',
        schema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'], additionalProperties: false } } } } },
    ],
  });
  check('beta create', shapes.id.startsWith('msgbatch_'), shapes);
  created.push(shapes.id);
  await waitEnded(a, shapes.id, 2);
  const shaped = Object.fromEntries((await collect(await a.beta.messages.batches.results(shapes.id))).map((r) => [r.custom_id, r]));
  const toolMessage = shaped['forced-tool'].result.message;
  check('forced tool: a tool_use block', toolMessage.content[0].type === 'tool_use' && toolMessage.stop_reason === 'tool_use', toolMessage);
  check('forced tool: input has the required keys', toolMessage.content[0].input.city === 'Oslo' && toolMessage.content[0].input.unit === 'c', toolMessage.content[0]);
  const structured = JSON.parse(shaped.structured.result.message.content[0].text);
  check('structured output: JSON with the schema\'s keys', sameList(Object.keys(structured), ['name']), structured);

  // ---- tidy up: stop what is still running so later runs are not slowed down -----------------
  for (const x of created) {
    try {
      if ((await a.messages.batches.retrieve(x)).processing_status === 'in_progress') await a.messages.batches.cancel(x);
    } catch {
      // best effort
    }
  }
}

try {
  await main();
  console.log(`PASS [${SDK}] ${passed} checks passed`);
} catch (e) {
  if (e instanceof CheckFailed) {
    console.log(`FAIL [${SDK}] ${e.message}`);
  } else {
    console.error(e);
    console.log(`FAIL [${SDK}] unexpected ${e?.constructor?.name}: ${e?.message}`);
  }
  process.exit(1);
}
