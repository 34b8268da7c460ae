// The streamcube dashboard: one page over GET /v1/cube. The state (date range, granularity,
// filters) lives in the form and the address bar; every change reloads every panel.
import { ApiError, cube, loadConfig, token } from './api.js';
import { barChart, lineChart, palette } from './charts.js';
import { bucketName, countryName, deviceName, fmt, genreName, titleName } from './format.js';

const DIMENSIONS = ['country', 'device', 'genre', 'content_id'];
/** How many windows of the API's longest range to look back through for data. */
const LOOKBACK_WINDOWS = 5;
const TOP_TITLES = 10;
const TOP_COUNTRIES = 15;
const TITLE_SUGGESTIONS = 200;
const DAY_MS = 86_400_000;

const $ = (id) => document.getElementById(id);

const el = {
  form: $('controls'),
  from: $('from'),
  to: $('to'),
  granularity: $('granularity'),
  rangeMessage: $('range-message'),
  filters: Object.fromEntries(DIMENSIONS.map((d) => [d, $(`filter-${d}`)])),
  titleOptions: $('title-options'),
  auth: $('auth'),
  token: $('token'),
  loading: $('loading'),
  error: $('error'),
  empty: $('empty'),
  main: $('main'),
  noMatch: $('no-match'),
};

let config = null;
/** The first and last day with data, once looked up. */
let dataRange = null;
/** The filter choices of the range they were loaded for. */
let options = { key: '', values: null };
/** The request round in flight; a newer one aborts it. */
let inFlight = null;
/** Per panel, what its table shows when opened. */
const tables = new Map();

// ---------------------------------------------------------------------------------------------
// Dates (ISO days, UTC)

const isDay = (s) => /^\d{4}-\d{2}-\d{2}$/.test(s) && !Number.isNaN(Date.parse(`${s}T00:00:00Z`));
const dayMs = (day) => Date.parse(`${day}T00:00:00Z`);
const addDays = (day, n) => new Date(dayMs(day) + n * DAY_MS).toISOString().slice(0, 10);
const daysBetween = (from, to) => Math.round((dayMs(to) - dayMs(from)) / DAY_MS) + 1;
const todayUtc = () => new Date().toISOString().slice(0, 10);

/** Every bucket label of a range, as the API writes them, so that empty buckets show as gaps. */
function buckets(from, to, granularity) {
  const out = [];
  for (let d = from; d <= to; d = addDays(d, 1)) {
    if (granularity === 'hour') {
      for (let h = 0; h < 24; h++) out.push(`${d}T${String(h).padStart(2, '0')}:00:00Z`);
    } else {
      out.push(d);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// State in the form and the address bar

function readForm() {
  const filters = {};
  for (const d of DIMENSIONS) {
    const v = el.filters[d].value.trim();
    if (v) filters[d] = v;
  }
  return { from: el.from.value, to: el.to.value, granularity: el.granularity.value, filters };
}

function writeAddress(s) {
  const params = new URLSearchParams({ from: s.from, to: s.to, granularity: s.granularity, ...s.filters });
  history.replaceState(null, '', `${location.pathname}?${params}`);
}

function readAddress() {
  const params = new URLSearchParams(location.search);
  const from = params.get('from');
  const to = params.get('to');
  if (params.get('granularity') === 'hour') el.granularity.value = 'hour';
  for (const d of DIMENSIONS) {
    const v = params.get(d);
    if (v) setFilter(d, v);
  }
  return isDay(from || '') && isDay(to || '') ? { from, to } : null;
}

function setFilter(dim, value) {
  const input = el.filters[dim];
  if (input.tagName === 'SELECT' && value && ![...input.options].some((o) => o.value === value)) {
    input.add(new Option(value, value));
  }
  input.value = value;
}

/** A message when the range cannot be asked for, else ''. */
function rangeProblem({ from, to }) {
  if (!isDay(from) || !isDay(to)) return 'Choose a start and an end day.';
  if (from > to) return 'The start day is after the end day.';
  const days = daysBetween(from, to);
  if (days > config.maxRangeDays) {
    return `The range covers ${fmt.count(days)} days; the API answers at most ${fmt.count(config.maxRangeDays)}.`;
  }
  return '';
}

// ---------------------------------------------------------------------------------------------
// Loading

function show(which) {
  el.error.hidden = which !== 'error';
  el.empty.hidden = which !== 'empty';
  el.main.hidden = which !== 'main';
}

function setBusy(busy, message = '') {
  el.main.setAttribute('aria-busy', String(busy));
  el.loading.textContent = busy ? 'Loading…' : message;
}

function showError(e) {
  show('error');
  setBusy(false, 'The data could not be loaded.');
  const where = e.status ? `${e.source} answered ${e.status}` : 'The request failed';
  let text = `${where}: ${e.message}.`;
  if ((e.status === 401 || e.status === 403) && config?.authHeader) {
    text += ' Check the bearer token under Access.';
    el.auth.hidden = false;
  }
  $('error-text').textContent = text;
  $('error-request').hidden = !e.requestId;
  $('error-request-id').textContent = e.requestId || '';
}

/** Runs one round of requests; a newer round aborts it, and its results are dropped. */
async function round(work) {
  inFlight?.abort();
  const controller = new AbortController();
  inFlight = controller;
  setBusy(true);
  try {
    await work(controller.signal);
  } catch (e) {
    if (controller.signal.aborted) return;
    if (!(e instanceof ApiError)) console.error(e);
    showError(e instanceof ApiError ? e : new ApiError(e.message || String(e)));
  } finally {
    if (inFlight === controller) inFlight = null;
  }
}

/** The first and last day with data in the latest window of the API's range that has any. */
async function findDataRange(signal) {
  let to = addDays(todayUtc(), 1);
  for (let i = 0; i < LOOKBACK_WINDOWS; i++) {
    const from = addDays(to, 1 - config.maxRangeDays);
    const rows = await cube(config, { from, to, granularity: 'day', measures: 'plays' }, signal);
    const days = rows.filter((r) => r.plays > 0).map((r) => r.day).sort();
    if (days.length) return { from: days[0], to: days[days.length - 1] };
    to = addDays(from, -1);
  }
  $('empty-range').textContent = `between ${addDays(to, 1)} and ${addDays(todayUtc(), 1)}`;
  return null;
}

/** Starts from the address bar's range, or from the range that has data. */
async function start() {
  await round(async (signal) => {
    const fromAddress = readAddress();
    if (fromAddress) {
      el.from.value = fromAddress.from;
      el.to.value = fromAddress.to;
      if (!checkRange()) {
        setBusy(false);
        return;
      }
    } else {
      dataRange = await findDataRange(signal);
      if (!dataRange) {
        show('empty');
        setBusy(false, 'No data yet.');
        return;
      }
      el.from.value = dataRange.from;
      el.to.value = dataRange.to;
    }
    await refresh(signal);
  });
}

/** Shows what is wrong with the chosen range, if anything; true when it can be asked for. */
function checkRange() {
  const problem = rangeProblem(readForm());
  el.rangeMessage.textContent = problem;
  for (const input of [el.from, el.to]) input.setAttribute('aria-invalid', String(Boolean(problem)));
  return !problem;
}

function reload() {
  if (checkRange()) round(refresh);
}

async function refresh(signal) {
  const s = readForm();
  writeAddress(s);
  const base = { from: s.from, to: s.to, ...s.filters };
  const perGroup = 'plays,watch_seconds,unique_viewers,completion_rate,avg_bitrate_kbps';
  const group = (dim, limit) =>
    cube(config, { ...base, granularity: 'total', group_by: dim, measures: perGroup, order_by: 'plays', limit }, signal);
  const [choices, totals, series, titles, countries, devices, genres] = await Promise.all([
    loadOptions(s, signal),
    cube(config, { ...base, granularity: 'total', measures: `${perGroup},avg_watch_seconds` }, signal),
    cube(config, { ...base, granularity: s.granularity, measures: perGroup }, signal),
    group('content_id', TOP_TITLES),
    group('country'),
    group('device'),
    group('genre'),
  ]);
  if (signal.aborted) return;
  fillOptions(choices, s.filters);
  show('main');
  const total = totals[0] || {};
  el.noMatch.hidden = (total.plays || 0) > 0;
  renderKpis(total, s);
  renderSeries(series, s);
  renderBars('titles', titles, 'content_id', titleName, 'titles');
  renderBars('countries', countries, 'country', countryName, 'countries', TOP_COUNTRIES);
  renderBars('devices', devices, 'device', deviceName, 'devices');
  renderBars('genres', genres, 'genre', genreName, 'genres');
  const filtered = Object.keys(s.filters).length ? ' with filters' : '';
  setBusy(false, `Showing ${s.from} to ${s.to}${filtered}: ${fmt.count(total.plays || 0)} plays.`);
}

/** The values each filter can take in the range (without filters), loaded once per range. */
async function loadOptions(s, signal) {
  const key = `${s.from}/${s.to}`;
  if (options.key === key) return options.values;
  const one = (dim, limit) =>
    cube(config, { from: s.from, to: s.to, granularity: 'total', group_by: dim, measures: 'plays', order_by: 'plays', limit }, signal);
  const [country, device, genre, content_id] = await Promise.all([
    one('country'),
    one('device'),
    one('genre'),
    one('content_id', TITLE_SUGGESTIONS),
  ]);
  options = { key, values: { country, device, genre, content_id } };
  return options.values;
}

function fillOptions(choices, current) {
  const names = { country: countryName, device: deviceName, genre: genreName };
  for (const dim of ['country', 'device', 'genre']) {
    const select = el.filters[dim];
    const first = select.options[0];
    const rows = [...choices[dim]].sort((a, b) => names[dim](a[dim]).localeCompare(names[dim](b[dim])));
    select.replaceChildren(first, ...rows.map((r) => new Option(names[dim](r[dim]), r[dim])));
    setFilter(dim, current[dim] || '');
  }
  el.titleOptions.replaceChildren(
    ...choices.content_id.map((r) => {
      const o = document.createElement('option');
      o.value = r.content_id;
      o.label = `${titleName(r)} · ${fmt.count(r.plays)} plays`;
      return o;
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Rendering

const KPIS = {
  plays: fmt.count,
  watch_seconds: fmt.hours,
  unique_viewers: fmt.count,
  completion_rate: fmt.percent,
  avg_bitrate_kbps: fmt.bitrate,
  avg_watch_seconds: fmt.minutes,
};

function renderKpis(total, s) {
  $('kpi-range').textContent = s.from === s.to ? `(${s.from})` : `(${s.from} to ${s.to})`;
  for (const [measure, format] of Object.entries(KPIS)) {
    const dd = $(`kpi-${measure}`);
    const value = total[measure] ?? (['plays', 'watch_seconds', 'unique_viewers'].includes(measure) ? 0 : null);
    dd.textContent = format(value);
    dd.dataset.value = value === null ? '' : String(value);
  }
}

function renderSeries(rows, s) {
  const byBucket = new Map(rows.map((r) => [r[s.granularity], r]));
  const labels = buckets(s.from, s.to, s.granularity);
  const pick = (measure, missing) => labels.map((b) => byBucket.get(b)?.[measure] ?? missing);
  const plays = pick('plays', 0);
  const viewers = pick('unique_viewers', 0);
  const watch = pick('watch_seconds', 0);
  const completion = pick('completion_rate', null);
  const bitrate = pick('avg_bitrate_kbps', null);
  const names = labels.map(bucketName);
  const unit = s.granularity === 'hour' ? 'hour' : 'day';

  lineChart(
    $('chart-time'),
    names,
    [
      { label: 'Plays', data: plays, color: palette.blue, axis: 'y', format: fmt.count },
      { label: 'Unique viewers', data: viewers, color: palette.green, axis: 'y', dashed: true, format: fmt.count },
      { label: 'Watch time (hours)', data: watch.map((w) => w / 3600), color: palette.orange, axis: 'y1', format: (h) => fmt.hours(h * 3600) },
    ],
    { y: 'Plays and viewers', y1: 'Hours watched', yFormat: fmt.count, y1Format: fmt.count },
  );
  const peak = plays.indexOf(Math.max(...plays));
  $('chart-time').setAttribute(
    'aria-label',
    `Line chart of plays, unique viewers and hours watched per ${unit} from ${s.from} to ${s.to}. ` +
      (plays[peak] > 0 ? `Busiest ${unit}: ${names[peak]} with ${fmt.count(plays[peak])} plays. ` : 'No plays. ') +
      `The table below lists every ${unit}.`,
  );
  setTable('time', [`${unit === 'hour' ? 'Hour' : 'Day'} (UTC)`, 'Plays', 'Unique viewers', 'Watch time'],
    names.map((n, i) => [n, fmt.count(plays[i]), fmt.count(viewers[i]), fmt.hours(watch[i])]), plays);

  lineChart(
    $('chart-quality'),
    names,
    [
      { label: 'Completion rate (%)', data: completion.map((c) => (c === null ? null : c * 100)), color: palette.blue, axis: 'y', format: (p) => fmt.percent(p / 100) },
      { label: 'Average bitrate (Mb/s)', data: bitrate.map((b) => (b === null ? null : b / 1000)), color: palette.orange, axis: 'y1', dashed: true, format: (m) => fmt.bitrate(m * 1000) },
    ],
    { y: 'Completion rate', y1: 'Average bitrate', yFormat: (p) => fmt.percent(p / 100), y1Format: (m) => fmt.bitrate(m * 1000) },
  );
  const spread = (values, format) => {
    const known = values.filter((v) => v !== null);
    return known.length ? `from ${format(Math.min(...known))} to ${format(Math.max(...known))}` : 'unknown';
  };
  $('chart-quality').setAttribute(
    'aria-label',
    `Line chart of completion rate and average bitrate per ${unit} from ${s.from} to ${s.to}. ` +
      `Completion rate ${spread(completion, fmt.percent)}; average bitrate ${spread(bitrate, fmt.bitrate)}. ` +
      `The table below lists every ${unit}.`,
  );
  setTable('quality', [`${unit === 'hour' ? 'Hour' : 'Day'} (UTC)`, 'Completion rate', 'Average bitrate'],
    names.map((n, i) => [n, fmt.percent(completion[i]), fmt.bitrate(bitrate[i])]));
}

/** A bar chart of plays by one dimension (its `top` biggest) and a table of every row. */
function renderBars(panel, rows, dim, name, noun, top = rows.length) {
  const shown = rows.slice(0, top);
  const canvas = $(`chart-${panel}`);
  canvas.parentElement.style.height = `${Math.max(180, shown.length * 26 + 48)}px`;
  barChart(canvas, shown.map((r) => (dim === 'content_id' ? titleName(r) : name(r[dim]))), shown.map((r) => r.plays), {
    label: 'Plays',
    format: fmt.count,
    horizontal: true,
  });
  const listed = shown.slice(0, 5).map((r) => `${dim === 'content_id' ? titleName(r) : name(r[dim])} ${fmt.count(r.plays)}`);
  canvas.setAttribute(
    'aria-label',
    rows.length
      ? `Bar chart of plays by ${noun}, most first: ${listed.join('; ')}${shown.length > 5 ? '; …' : ''}. ` +
          `${fmt.count(rows.length)} ${noun} in the table below.`
      : `Bar chart of plays by ${noun}: no plays.`,
  );
  const label = { content_id: 'Title', country: 'Country', device: 'Device', genre: 'Genre' }[dim];
  setTable(panel, [label, 'Plays', 'Watch time', 'Unique viewers', 'Completion rate', 'Average bitrate'],
    rows.map((r) => [dim === 'content_id' ? titleName(r) : name(r[dim]), fmt.count(r.plays), fmt.hours(r.watch_seconds),
      fmt.count(r.unique_viewers), fmt.percent(r.completion_rate), fmt.bitrate(r.avg_bitrate_kbps)]),
    rows.map((r) => r.plays));
}

/** Keeps a panel's table, and draws it now if its details are open (else when they open). */
function setTable(panel, head, body, raw) {
  tables.set(panel, { head, body, raw });
  const details = $(`table-${panel}`).closest('details');
  if (details.open) drawTable(panel);
}

function drawTable(panel) {
  const { head, body, raw } = tables.get(panel) || { head: [], body: [] };
  const table = document.createElement('table');
  const caption = table.createCaption();
  caption.textContent = document.querySelector(`[data-panel="${panel}"] h2`).textContent;
  const tr = table.createTHead().insertRow();
  for (const h of head) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = h;
    tr.append(th);
  }
  const tbody = table.createTBody();
  body.forEach((cells, i) => {
    const row = tbody.insertRow();
    cells.forEach((c, j) => {
      const cell = j === 0 ? document.createElement('th') : row.insertCell();
      if (j === 0) {
        cell.scope = 'row';
        row.append(cell);
      }
      cell.textContent = c;
    });
    if (raw) row.dataset.plays = String(raw[i]);
  });
  $(`table-${panel}`).replaceChildren(table);
}

// ---------------------------------------------------------------------------------------------
// Wiring

function debounce(fn, ms) {
  let timer;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function wire() {
  const later = debounce(reload, 400);
  el.from.addEventListener('change', later);
  el.to.addEventListener('change', later);
  el.granularity.addEventListener('change', reload);
  for (const d of DIMENSIONS) el.filters[d].addEventListener('change', reload);
  el.form.addEventListener('submit', (e) => {
    e.preventDefault();
    reload();
  });
  $('whole-range').addEventListener('click', () =>
    round(async (signal) => {
      dataRange ||= await findDataRange(signal);
      if (!dataRange) {
        show('empty');
        setBusy(false, 'No data yet.');
        return;
      }
      el.from.value = dataRange.from;
      el.to.value = dataRange.to;
      checkRange();
      await refresh(signal);
    }),
  );
  $('clear-filters').addEventListener('click', () => {
    for (const d of DIMENSIONS) el.filters[d].value = '';
    reload();
  });
  $('retry').addEventListener('click', () => {
    if (!config) boot();
    else if (el.from.value) reload();
    else start();
  });
  $('check-again').addEventListener('click', start);
  $('use-token').addEventListener('click', () => {
    token.set(el.token.value);
    el.token.value = '';
    start();
  });
  $('forget-token').addEventListener('click', () => {
    token.clear();
    el.token.focus();
  });
  for (const details of document.querySelectorAll('details')) {
    details.addEventListener('toggle', () => {
      if (details.open) drawTable(details.querySelector('.table-wrap').id.slice('table-'.length));
    });
  }
}

/** Reads config.json, asks for a token if the API needs one, then loads the data. */
async function boot() {
  try {
    config = await loadConfig();
  } catch (e) {
    showError(e);
    return;
  }
  $('api-origin').textContent = config.apiBaseUrl || location.origin;
  if (config.authHeader) {
    el.auth.hidden = false;
    if (!token.get()) {
      setBusy(false, 'Paste a bearer token under Access to load the data.');
      el.token.focus();
      return;
    }
  }
  await start();
}

wire();
boot();
