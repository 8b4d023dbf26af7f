// The TypeScript SDK's browser build in a real headless Chromium, against Satchel on another
// origin: a page served from one origin (a tiny static server here) imports the SDK
// (@anthropic-ai/sdk, the version conformance/ts pins, bundled for the browser by esbuild)
// and, with `dangerouslyAllowBrowser: true`, walks create / retrieve / list / results /
// cancel / delete against Satchel's origin. A plain cross-origin fetch without the SDK's
// header is refused, as the hosted API refuses it. Starts its own `satchel serve`.
//
//   node sdk.mjs SATCHEL_BINARY SDK_BUNDLE
// Environment: PLAYWRIGHT_CORE (the installed package's directory), CHROMIUM (executable).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [bin, bundle] = process.argv.slice(2);
const KEY = 'sk-browser-sdk-0001';

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

// ---- Satchel, on its own origin ----------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'satchel-browser-sdk-'));
writeFileSync(join(dir, 'satchel.toml'), `[[api_keys]]\nkey = "${KEY}"\nworkspace = "browser"\n`);
const server = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--db', join(dir, 's.db'),
  '--config', join(dir, 'satchel.toml'), '--emulator-latency', '300ms', '--max-in-flight', '1',
  '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
const api = await new Promise((resolve, reject) => {
  const lines = createInterface({ input: server.stderr });
  lines.on('line', (line) => {
    log += line + '\n';
    try {
      const event = JSON.parse(line);
      if (event.message === 'Satchel is serving the Message Batches API') resolve(`http://${event.addr}`);
    } catch (_) { /* not JSON */ }
  });
  server.on('exit', (code) => reject(new Error(`server exited (${code}):\n${log}`)));
  setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 30000);
});

// ---- the page's origin: a static server with the page and the SDK bundle -------------------
const page = `<!doctype html><meta charset="utf-8"><title>SDK in the browser</title>
<p>The Anthropic TypeScript SDK, loaded as an ES module, calling Satchel on another origin.`;
const sdk = readFileSync(bundle);
const site = createServer((req, res) => {
  if (req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  } else if (req.url === '/sdk.mjs') {
    res.writeHead(200, { 'content-type': 'text/javascript' }).end(sdk);
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
// localhost rather than 127.0.0.1: another host, so certainly another origin.
const origin = `http://localhost:${site.address().port}`;
console.log(`# satchel at ${api}, page at ${origin}`);
check(new URL(origin).origin !== new URL(api).origin, 'the page and the API are on different origins');

let browser;
try {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ['--no-sandbox'] });
  const tab = await browser.newPage();
  tab.on('console', (m) => console.log(`# page: ${m.text()}`));
  await tab.goto(`${origin}/`);

  const walk = await tab.evaluate(async ({ api, key }) => {
    const { default: Anthropic } = await import('/sdk.mjs');
    const client = new Anthropic({ apiKey: key, baseURL: api, dangerouslyAllowBrowser: true, maxRetries: 0 });
    const batches = client.messages.batches;
    const params = (text) => ({ model: 'claude-test', max_tokens: 32, messages: [{ role: 'user', content: text }] });
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const untilEnded = async (id) => {
      for (let i = 0; i < 600; i++) {
        const b = await batches.retrieve(id);
        if (b.processing_status === 'ended') return b;
        await sleep(100);
      }
      throw new Error(`batch ${id} did not end`);
    };
    const created = await batches.create({ requests: [
      { custom_id: 'hello', params: params('Hello from a browser') },
      { custom_id: 'bad', params: { model: 'claude-test', max_tokens: 32, messages: [] } },
    ] });
    const { response, data: retrieved } = await batches.retrieve(created.id).withResponse();
    const ended = await untilEnded(created.id);
    const lines = {};
    for await (const line of await batches.results(created.id)) lines[line.custom_id] = line.result;

    const long = await batches.create({ requests: Array.from({ length: 20 }, (_, i) => ({ custom_id: `r${i}`, params: params(`request ${i}`) })) });
    const listed = [];
    for await (const b of batches.list({ limit: 1 })) listed.push(b.id);
    const canceling = await batches.cancel(long.id);
    const canceled = await untilEnded(long.id);
    const deleted = await batches.delete(created.id);
    let gone;
    try { await batches.retrieve(created.id); } catch (e) { gone = { status: e.status, type: e.error?.error?.type, requestID: e.requestID }; }
    return {
      created: { id: created.id, status: created.processing_status, type: created.type },
      requestId: response.headers.get('request-id'), retrievedId: retrieved.id,
      ended: ended.request_counts, listed,
      hello: lines.hello, bad: lines.bad,
      canceling: canceling.processing_status, canceled: canceled.request_counts,
      deleted, gone,
    };
  }, { api, key: KEY });
  console.log(`# ${JSON.stringify(walk).slice(0, 400)}…`);
  check(walk.created.type === 'message_batch' && walk.created.status === 'in_progress', 'create from the browser');
  check(walk.retrievedId === walk.created.id && /^req_/.test(walk.requestId ?? ''), 'retrieve, its request-id header readable cross-origin');
  check(walk.ended.succeeded === 1 && walk.ended.errored === 1, 'the batch ended with its counts');
  check(walk.listed.length === 2 && walk.listed[1] === walk.created.id, 'list pages through every batch, newest first (limit 1, auto-paging)');
  check(walk.hello?.type === 'succeeded' && walk.hello.message.content[0].text === 'Hello from a browser', 'results stream, a succeeded line');
  check(walk.bad?.type === 'errored' && walk.bad.error.error.type === 'invalid_request_error', 'results, an errored line');
  check(walk.canceling === 'canceling' && walk.canceled.canceled > 0, 'cancel a running batch');
  check(walk.deleted.type === 'message_batch_deleted' && walk.deleted.id === walk.created.id, 'delete');
  check(walk.gone?.status === 404 && walk.gone.type === 'not_found_error' && /^req_/.test(walk.gone.requestID ?? ''),
    'an API error reaches the page as the SDK\'s NotFoundError, with its request id');

  // Without the SDK's header, a cross-origin page is refused: a preflighted call fails its
  // preflight, and a simple one is answered 401 without CORS headers, so the browser blocks
  // both.
  const refused = await tab.evaluate(async ({ api, key }) => {
    const attempt = async (init) => {
      try { const r = await fetch(`${api}/v1/messages/batches`, init); return `read ${r.status}`; }
      catch (e) { return e.name; }
    };
    return {
      preflighted: await attempt({ headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01' } }),
      simple: await attempt({ method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' }),
    };
  }, { api, key: KEY });
  check(refused.preflighted === 'TypeError', `a plain fetch with the key is refused (${refused.preflighted})`);
  check(refused.simple === 'TypeError', `a simple cross-origin request cannot be read (${refused.simple})`);
  const refusals = log.split('\n').filter((l) => l.includes('"status":401') && l.includes('"method":"POST"'));
  check(refusals.length === 1, 'the server itself refused the simple request (401)');
} finally {
  if (browser) await browser.close();
  site.close();
  server.kill('SIGTERM');
}
console.log('browser SDK: all checks passed');
