// The dashboard in a real headless Chromium, driven by playwright-core: sign in with the
// keyboard, watch a running batch's bar move, open an ended batch and see its errors grouped
// by type, cancel one and delete it (confirmations, keyboard), see only the workspace's own
// batches and the backends' health; saves a screenshot. Starts its own `satchel serve`.
//
//   node dashboard.mjs SATCHEL_BINARY SCREENSHOT_PATH
// Environment: PLAYWRIGHT_CORE (the installed package's directory), CHROMIUM (executable).
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [bin, screenshot] = process.argv.slice(2);
const KEY_A = 'sk-dash-a-secret-0001';
const KEY_B = 'sk-dash-b-secret-0002';

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function waitFor(what, fn, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) { console.log(`ok - ${what}`); return value; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- the server -------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'satchel-dashboard-'));
writeFileSync(join(dir, 'satchel.toml'),
  `[[api_keys]]\nkey = "${KEY_A}"\nworkspace = "team-a"\n[[api_keys]]\nkey = "${KEY_B}"\nworkspace = "team-b"\n`);
const logPath = join(dir, 'server.log');
const server = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--db', join(dir, 's.db'),
  '--config', join(dir, 'satchel.toml'), '--emulator-latency', '250ms', '--max-in-flight', '2',
  '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
const base = await new Promise((resolve, reject) => {
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
console.log(`# satchel at ${base}`);

async function call(method, path, key, body) {
  const response = await fetch(base + path, {
    method,
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

function requests(prefix, n, bad = 0) {
  const list = [];
  for (let i = 0; i < n; i++) {
    list.push({ custom_id: `${prefix}-${i}`, params: { model: 'claude-test', max_tokens: 16,
      messages: i < bad ? [] : [{ role: 'user', content: `${prefix} request ${i}` }] } });
  }
  return { requests: list };
}

let browser;
try {
  const errors = (await call('POST', '/v1/messages/batches', KEY_A, requests('err', 6, 3))).id;
  const long = (await call('POST', '/v1/messages/batches', KEY_A, requests('long', 80))).id;
  const victim = (await call('POST', '/v1/messages/batches', KEY_A, requests('cancel', 80))).id;
  const foreign = (await call('POST', '/v1/messages/batches', KEY_B, requests('other', 2))).id;

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${base}/dashboard`);

  // Sign in with the keyboard: the field is focused and labelled; Enter submits.
  await waitFor('the key field has the focus', () =>
    page.evaluate(() => document.activeElement && document.activeElement.id === 'key'));
  await page.keyboard.type(KEY_A);
  await page.keyboard.press('Enter');
  await page.locator('#batches tbody tr').first().waitFor();
  check(!page.url().includes(KEY_A), 'the key is not in the URL');
  check(await page.evaluate(() => sessionStorage.getItem('satchel.apiKey')) === KEY_A,
    'the key is kept in session storage');
  check(await page.getByLabel('API key').count() === 1, 'the key field has a label');

  // Only the workspace's own batches.
  await waitFor('the three batches of team-a', async () =>
    (await page.locator('#batches tbody tr').count()) === 3);
  check(await page.locator(`tr[data-id="${foreign}"]`).count() === 0, "another workspace's batch is not shown");

  // A running batch's bar moves.
  const bar = page.locator(`tr[data-id="${long}"] [role="progressbar"]`);
  check(await bar.getAttribute('aria-label') === `Progress of ${long}`, 'the bar is labelled');
  const first = Number(await bar.getAttribute('aria-valuenow'));
  await waitFor('the running batch\'s bar to move', async () =>
    Number(await bar.getAttribute('aria-valuenow')) >= first + 3
      && (await page.locator(`tr[data-id="${long}"]`).getAttribute('data-status')) === 'in_progress');
  await waitFor('a rate and an ETA for the running batch', async () => {
    const cells = await page.locator(`tr[data-id="${long}"] td.num`).allTextContents();
    return cells.length === 2 && cells[0].endsWith('/s') && cells[1] !== '—';
  });
  await waitFor('the backend\'s health, with attempts', async () => {
    const cells = await page.locator('#backends tbody tr').first().locator('td').allTextContents();
    return cells[0] === 'emulator' && cells[1].includes('up') && Number(cells[4]) > 0;
  });

  // Open the ended batch: its errored lines, grouped by type.
  await waitFor('the batch with errors to end', async () =>
    (await page.locator(`tr[data-id="${errors}"]`).getAttribute('data-status')) === 'ended');
  await page.getByRole('button', { name: `Open ${errors}` }).click();
  const group = page.locator('#detail-errors [data-error-type="invalid_request_error"]');
  await group.waitFor();
  check((await group.locator('h4').textContent()) === 'invalid_request_error: 3', 'three errors of one type');
  check(await group.locator('li').count() === 3, 'a sample of each errored line');
  check((await page.locator('#detail-title').textContent()).includes(errors), 'the detail names its batch');

  // The picture for people, while a batch runs and the detail is open.
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`# screenshot: ${screenshot}`);

  // Cancel one, through the confirmation.
  await page.getByRole('button', { name: `Cancel ${victim}` }).click();
  const dialog = page.locator('dialog#confirm');
  await dialog.waitFor();
  check((await page.locator('#confirm-text').textContent()).includes(victim), 'the confirmation names the batch');
  await page.getByRole('button', { name: 'Yes, cancel it' }).click();
  await waitFor('the canceled batch to end', async () =>
    (await page.locator(`tr[data-id="${victim}"]`).getAttribute('data-status')) === 'ended');
  const canceled = await call('GET', `/v1/messages/batches/${victim}`, KEY_A);
  check(canceled.request_counts.canceled > 0 && canceled.cancel_initiated_at, 'the server canceled it');

  // Delete it with the keyboard: Escape keeps it, Tab to the confirm button and Enter deletes.
  const del = page.getByRole('button', { name: `Delete ${victim}` });
  await del.focus();
  await page.keyboard.press('Enter');
  await dialog.waitFor();
  check(await page.evaluate(() => document.activeElement.id) === 'confirm-no', 'the safe choice has the focus');
  await page.keyboard.press('Escape');
  await page.waitForTimeout(1200); // a poll passes: nothing was deleted
  check(await page.locator(`tr[data-id="${victim}"]`).count() === 1, 'Escape keeps the batch');
  await del.focus();
  await page.keyboard.press('Enter');
  await dialog.waitFor();
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.id) === 'confirm-yes', 'Tab reaches the confirm button');
  await page.keyboard.press('Enter');
  await waitFor('the deleted batch to leave the list', async () =>
    (await page.locator(`tr[data-id="${victim}"]`).count()) === 0);

  // Signing out forgets the key.
  await page.getByRole('button', { name: 'Sign out' }).click();
  check(await page.evaluate(() => sessionStorage.getItem('satchel.apiKey')) === null, 'signing out forgets the key');
  check(!log.includes(KEY_A), 'the server never logged the key');
  check(pageErrors.length === 0, `no script errors in the page (${pageErrors.join('; ')})`);
  console.log('dashboard: all checks passed');
} finally {
  if (browser) await browser.close();
  server.kill('SIGTERM');
}
