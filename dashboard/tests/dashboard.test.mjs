// The dashboard in a real browser against a real `streamcube serve`.
//
// Builds nothing: it needs `target/debug/streamcube` (or STREAMCUBE_BIN), `dashboard/dist` (npm run
// build) and Chromium (/usr/bin/chromium, or CHROMIUM_PATH). It loads generated data into a fresh
// data directory, serves it with the dashboard, and checks what a person sees against what the API
// answers directly: totals, a filter, the empty state, the error states, a phone-sized screen.
// Writes docs/dashboard.png (the README's screenshot) and test-results/dashboard-mobile.png.
//
// Run: node --test tests/   (from dashboard/; scripts/test-dashboard.sh does everything)
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const dashboard = path.resolve(here, '..');
const repo = path.resolve(dashboard, '..');
const bin = process.env.STREAMCUBE_BIN || path.join(repo, 'target/debug/streamcube');
const dist = path.join(dashboard, 'dist');
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const screenshot = path.join(repo, 'docs/dashboard.png');
const mobileScreenshot = path.join(dashboard, 'test-results/dashboard-mobile.png');

const DAYS = 4;
const LOCALE = 'en-US';
const TIMEOUT = 30_000;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'streamcube-dashboard-'));
const servers = [];
let browser;
let full; // the server with data
let empty; // the server on an empty data directory
// The servers go with this process, however it ends.
process.on('exit', () => servers.forEach((child) => child.exitCode === null && child.kill('SIGKILL')));

// ---------------------------------------------------------------------------------------------
// The command and the server

function streamcube(dataDir, args) {
  return execFileSync(bin, ['--data-dir', dataDir, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
  });
}

/** Starts `streamcube serve` on a free port; resolves to its base URL. */
function serve(dataDir) {
  const child = spawn(bin, ['--data-dir', dataDir, 'serve', '--addr', '127.0.0.1:0', '--dashboard', dist], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  servers.push(child);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner after ${TIMEOUT} ms: ${stderr}`)), TIMEOUT);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const first = out.split('\n')[0];
      if (out.includes('\n')) {
        clearTimeout(timer);
        const m = /^serving on (http:\/\/\S+)$/.exec(first);
        if (m) resolve(m[1]);
        else reject(new Error(`unexpected first line: ${first}`));
      }
    });
    child.on('exit', (code) => reject(new Error(`streamcube serve exited with ${code}: ${stderr}`)));
  });
}

async function api(base, params) {
  const resp = await fetch(`${base}/v1/cube?${new URLSearchParams(params)}`);
  const body = await resp.json();
  assert.equal(resp.status, 200, JSON.stringify(body));
  return body.rows;
}

/** A port nothing listens on. */
function deadPort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);

// ---------------------------------------------------------------------------------------------
// The page

async function open(base, { viewport = { width: 1280, height: 900 }, query = '' } = {}) {
  const context = await browser.newContext({ locale: LOCALE, viewport });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  page.errors = errors;
  await page.goto(`${base}/${query}`);
  return page;
}

/** Waits until the dashboard shows data and no request is in flight. */
async function ready(page) {
  await page.waitForFunction(
    () => {
      const main = document.getElementById('main');
      return !main.hidden && main.getAttribute('aria-busy') === 'false';
    },
    null,
    { timeout: TIMEOUT },
  );
}

async function kpis(page) {
  return page.$$eval('#kpis dd', (dds) =>
    Object.fromEntries(dds.map((dd) => [dd.id.replace('kpi-', ''), { text: dd.textContent, value: dd.dataset.value }])),
  );
}

async function chartLabels(page) {
  return page.$$eval('canvas', (cs) => Object.fromEntries(cs.map((c) => [c.id, c.getAttribute('aria-label')])));
}

/** Opens a panel's table with the keyboard and returns the plays of its rows. */
async function tablePlays(page, panel) {
  const summary = page.locator(`[data-panel="${panel}"] summary`);
  if (!(await page.locator(`[data-panel="${panel}"] details`).evaluate((d) => d.open))) {
    await summary.focus();
    await page.keyboard.press('Enter');
  }
  await page.locator(`#table-${panel} tbody tr`).first().waitFor({ timeout: TIMEOUT });
  return page.$$eval(`#table-${panel} tbody tr`, (rows) => rows.map((r) => Number(r.dataset.plays)));
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const nf = (opts) => new Intl.NumberFormat(LOCALE, opts);

/** The key numbers on the page equal the API's own totals for the same range and filters. */
async function assertTotalsMatch(page, base, filters = {}) {
  const from = await page.inputValue('#from');
  const to = await page.inputValue('#to');
  const [total] = await api(base, { from, to, granularity: 'total', ...filters });
  assert.ok(total && total.plays > 0, `the API has plays for ${from}..${to} ${JSON.stringify(filters)}`);
  const shown = await kpis(page);
  for (const m of ['plays', 'watch_seconds', 'unique_viewers', 'completion_rate', 'avg_bitrate_kbps']) {
    assert.equal(Number(shown[m].value), total[m], `${m} on the page`);
  }
  assert.equal(shown.plays.text, nf().format(total.plays));
  assert.equal(shown.unique_viewers.text, nf().format(total.unique_viewers));
  assert.equal(
    shown.watch_seconds.text,
    nf({ style: 'unit', unit: 'hour', unitDisplay: 'long', maximumFractionDigits: 1 }).format(total.watch_seconds / 3600),
  );
  assert.match(shown.plays.text, /^\d{1,3}(,\d{3})*$/, 'thousands separators');
  assert.equal(shown.completion_rate.text, nf({ style: 'percent', maximumFractionDigits: 1 }).format(total.completion_rate));
  return total;
}

// ---------------------------------------------------------------------------------------------

before(async () => {
  for (const [what, p] of [
    ['the streamcube binary (cargo build -p streamcube)', bin],
    ['the built dashboard (npm run build)', path.join(dist, 'index.html')],
    ['Chromium (apt-get install chromium)', chromiumPath],
  ]) {
    assert.ok(existsSync(p), `missing ${what}: ${p}`);
  }
  // A few days ending yesterday, so that the page's default range (the days with data) is known.
  const start = isoDay(Date.now() - (DAYS + 1) * 86_400_000);
  const input = path.join(tmp, 'input');
  const data = path.join(tmp, 'data');
  streamcube(data, ['generate', '--out-dir', input, '--events', '20000', '--days', String(DAYS), '--start', start,
    '--viewers', '3000', '--titles', '300']);
  streamcube(data, ['ingest', '--catalog', path.join(input, 'catalog.csv'), path.join(input, 'events.csv')]);
  streamcube(data, ['consolidate']);
  [full, empty] = await Promise.all([serve(data), serve(path.join(tmp, 'empty'))]);
  browser = await chromium.launch({ executablePath: chromiumPath });
});

after(async () => {
  await browser?.close();
  for (const child of servers) {
    if (child.exitCode === null) child.kill('SIGTERM');
  }
  rmSync(tmp, { recursive: true, force: true });
});

test('the page opens on the days with data and shows the API totals', async () => {
  const page = await open(full);
  await ready(page);
  const days = await api(full, {
    from: isoDay(Date.now() - 300 * 86_400_000),
    to: isoDay(Date.now() + 86_400_000),
    granularity: 'day',
    measures: 'plays',
  });
  assert.equal(days.length, DAYS);
  assert.equal(await page.inputValue('#from'), days[0].day);
  assert.equal(await page.inputValue('#to'), days[days.length - 1].day);

  const total = await assertTotalsMatch(page, full);
  // Every chart's table adds up to the same plays.
  assert.equal(sum(await tablePlays(page, 'time')), total.plays);
  assert.equal(sum(await tablePlays(page, 'countries')), total.plays);
  assert.equal(sum(await tablePlays(page, 'devices')), total.plays);
  assert.equal(sum(await tablePlays(page, 'genres')), total.plays);
  const top = await api(full, { from: days[0].day, to: days.at(-1).day, granularity: 'total', group_by: 'content_id',
    measures: 'plays', order_by: 'plays', limit: '10' });
  assert.deepEqual(await tablePlays(page, 'titles'), top.map((r) => r.plays));
  for (const [id, label] of Object.entries(await chartLabels(page))) {
    assert.ok(label && label.length > 30, `${id} has an aria-label: ${label}`);
  }
  assert.equal(await page.isVisible('#auth'), false, 'no token field without an authorizer');
  await page.$$eval('details', (ds) => ds.forEach((d) => (d.open = false)));
  await page.evaluate(() => document.activeElement?.blur());
  mkdirSync(path.dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a country filter changes every chart and the totals, which equal the API answer', async () => {
  const page = await open(full);
  await ready(page);
  const before = { kpis: await kpis(page), charts: await chartLabels(page) };
  const from = await page.inputValue('#from');
  const to = await page.inputValue('#to');
  const countries = await api(full, { from, to, granularity: 'total', group_by: 'country', measures: 'plays',
    order_by: 'plays' });
  const country = countries[1].country; // the second biggest: a real change, with data in every chart

  await page.selectOption('#filter-country', country);
  await page.waitForFunction((c) => location.search.includes(`country=${c}`), country);
  await ready(page);
  const total = await assertTotalsMatch(page, full, { country });
  assert.ok(total.plays < Number(before.kpis.plays.value));
  const charts = await chartLabels(page);
  for (const id of Object.keys(before.charts)) {
    assert.notEqual(charts[id], before.charts[id], `${id} changed with the filter`);
  }
  assert.equal(sum(await tablePlays(page, 'time')), total.plays);
  assert.equal(sum(await tablePlays(page, 'devices')), total.plays);
  assert.deepEqual(await tablePlays(page, 'countries'), [total.plays]);

  // A second dimension on top, chosen with the keyboard.
  const devices = await api(full, { from, to, granularity: 'total', group_by: 'device', measures: 'plays',
    order_by: 'plays', country });
  await page.focus('#filter-device');
  await page.selectOption('#filter-device', devices[0].device);
  await page.waitForFunction((d) => location.search.includes(`device=${d}`), devices[0].device);
  await ready(page);
  await assertTotalsMatch(page, full, { country, device: devices[0].device });

  // The address keeps the state: a reload shows the same numbers.
  const kept = await kpis(page);
  await page.reload();
  await ready(page);
  assert.deepEqual(await kpis(page), kept);
  assert.equal(await page.inputValue('#filter-country'), country);

  // Clearing the filters brings the first totals back.
  await page.click('#clear-filters');
  await page.waitForFunction(() => !location.search.includes('country='));
  await ready(page);
  assert.deepEqual(await kpis(page), before.kpis);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('hourly charts and a range over the API limit', async () => {
  const page = await open(full);
  await ready(page);
  await page.selectOption('#granularity', 'hour');
  await page.waitForFunction(() => location.search.includes('granularity=hour'));
  await ready(page);
  const rows = await tablePlays(page, 'time');
  assert.equal(rows.length, DAYS * 24);
  assert.equal(sum(rows), Number((await kpis(page)).plays.value));

  // More days than the API answers: the form says so, nothing is asked.
  const limit = (await (await fetch(`${full}/config.json`)).json()).maxRangeDays;
  assert.ok(Number.isInteger(limit));
  const to = await page.inputValue('#to');
  let asked = 0;
  page.on('request', (r) => r.url().includes('/v1/cube') && asked++);
  await page.fill('#from', isoDay(Date.parse(to) - limit * 86_400_000));
  await page.locator('#from').dispatchEvent('change');
  await page.waitForFunction(() => document.getElementById('range-message').textContent !== '');
  assert.match(await page.textContent('#range-message'), new RegExp(`at most ${limit}`));
  assert.equal(await page.getAttribute('#from', 'aria-invalid'), 'true');
  await page.waitForTimeout(600); // past the date inputs' debounce
  assert.equal(asked, 0);
  await page.context().close();
});

test('accessible: labelled controls, keyboard order, text alternatives', async () => {
  const page = await open(full);
  await ready(page);
  const unlabelled = await page.$$eval('input, select, button', (els) =>
    els.filter((e) => !e.closest('[hidden]') && !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
      .map((e) => e.outerHTML));
  assert.deepEqual(unlabelled, []);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'from');
  assert.equal(await page.$$eval('canvas[role="img"][aria-label]', (cs) => cs.length), 6);
  await page.context().close();
});

test('usable on a phone-sized screen', async () => {
  const page = await open(full, { viewport: { width: 390, height: 844 } });
  await ready(page);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no sideways scrolling (page is ${width} px wide)`);
  await assertTotalsMatch(page, full);
  mkdirSync(path.dirname(mobileScreenshot), { recursive: true });
  await page.screenshot({ path: mobileScreenshot, fullPage: true });
  await page.context().close();
});

test('empty state: a server without data says how to load some', async () => {
  const page = await open(empty);
  await page.locator('#empty').waitFor({ state: 'visible', timeout: TIMEOUT });
  const text = await page.textContent('#empty');
  assert.match(text, /streamcube demo/);
  assert.match(text, /streamcube ingest/);
  assert.match(text, /streamcube consolidate/);
  assert.equal(await page.isVisible('#main'), false);
  assert.equal(await page.isVisible('#error'), false);
  await page.context().close();
});

test('error state: a failing API shows the status and the request id, and recovers', async () => {
  const context = await browser.newContext({ locale: LOCALE });
  const page = await context.newPage();
  await page.route('**/v1/cube?**', (route) =>
    route.fulfill({
      status: 500,
      contentType: 'application/json',
      headers: { 'x-request-id': 'req-test-500' },
      body: JSON.stringify({
        error: { code: 'internal', message: 'internal error; quote the request id when reporting it' },
        request_id: 'req-test-500',
      }),
    }),
  );
  await page.goto(`${full}/`);
  await page.locator('#error').waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await page.textContent('#error-text'), /500.*internal error/);
  assert.equal(await page.textContent('#error-request-id'), 'req-test-500');
  assert.equal(await page.isVisible('#main'), false);

  await page.unroute('**/v1/cube?**');
  await page.click('#retry');
  await ready(page);
  assert.equal(await page.isVisible('#error'), false);
  await assertTotalsMatch(page, full);
  await context.close();
});

test('error state: the API refuses a query (400 with its message and request id)', async () => {
  const page = await open(full, { query: '?from=2026-01-01&to=2026-01-02&country=Narnia' });
  await page.locator('#error').waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await page.textContent('#error-text'), /400.*`country` filter value `Narnia` is not valid/);
  assert.match(await page.textContent('#error-request-id'), /^[0-9a-f]{16}$/);
  await page.context().close();
});

test('error state: the API cannot be reached', async () => {
  const port = await deadPort();
  const context = await browser.newContext({ locale: LOCALE });
  const page = await context.newPage();
  await page.route('**/config.json', (route) =>
    route.fulfill({
      contentType: 'application/json',
      body: JSON.stringify({ apiBaseUrl: `http://127.0.0.1:${port}`, authHeader: null }),
    }),
  );
  await page.goto(`${full}/`);
  await page.locator('#error').waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await page.textContent('#error-text'), new RegExp(`could not be reached at http://127.0.0.1:${port}`));
  assert.equal(await page.isVisible('#error-request'), false);
  await context.close();
});

test('error state: config.json missing, then deployed', async () => {
  const context = await browser.newContext({ locale: LOCALE });
  const page = await context.newPage();
  await page.route('**/config.json', (route) => route.fulfill({ status: 404, body: 'not found' }));
  await page.goto(`${full}/`);
  await page.locator('#error').waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await page.textContent('#error-text'), /This site answered 404: config\.json is missing/);
  await page.unroute('**/config.json');
  await page.click('#retry');
  await ready(page);
  await assertTotalsMatch(page, full);
  await context.close();
});

test('a bearer token is asked for, kept in the tab and sent', async () => {
  const context = await browser.newContext({ locale: LOCALE });
  const page = await context.newPage();
  await page.route('**/config.json', (route) =>
    route.fulfill({ contentType: 'application/json', body: JSON.stringify({ apiBaseUrl: '', authHeader: 'Authorization' }) }),
  );
  const sent = [];
  page.on('request', (r) => r.url().includes('/v1/cube') && sent.push(r.headers().authorization));
  await page.goto(`${full}/`);
  await page.locator('#token').waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await page.textContent('#loading'), /bearer token/);
  assert.equal(sent.length, 0);
  await page.fill('#token', 'Bearer abc.def.ghi');
  await page.click('#use-token');
  await ready(page);
  assert.ok(sent.length > 0 && sent.every((h) => h === 'Bearer abc.def.ghi'), JSON.stringify(sent));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('streamcube.token')), 'abc.def.ghi');
  assert.equal(await page.inputValue('#token'), '');
  const html = await (await fetch(`${full}/`)).text();
  assert.doesNotMatch(html, /abc\.def/);
  await context.close();
});
