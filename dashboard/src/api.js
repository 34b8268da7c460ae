// The dashboard's only contact with the outside: config.json and GET /v1/cube.

/** What went wrong with a request, in terms a person can act on. */
export class ApiError extends Error {
  /**
   * @param {string} message what the server (or the network) said
   * @param {{status?: number, requestId?: string, url?: string, source?: string}} details
   */
  constructor(message, { status, requestId, url, source = 'The API' } = {}) {
    super(message);
    this.name = 'ApiError';
    this.source = source;
    this.status = status;
    this.requestId = requestId;
    this.url = url;
  }
}

const TOKEN_KEY = 'streamcube.token';

/** The bearer token the user pasted, kept in this tab's session storage only. */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value.trim().replace(/^Bearer\s+/i, '')),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/**
 * Reads config.json next to index.html: `apiBaseUrl` ('' for this origin), `authHeader` (null
 * for none, or the header that carries `Bearer <token>`), `maxRangeDays` (the API's limit).
 */
export async function loadConfig() {
  const url = new URL('config.json', document.baseURI).href;
  let resp;
  try {
    resp = await fetch(url, { cache: 'no-store' });
  } catch (e) {
    throw new ApiError(`config.json could not be fetched (${e.message})`, { url, source: 'This site' });
  }
  if (!resp.ok) {
    throw new ApiError('config.json is missing: the deploy step writes it next to index.html', {
      status: resp.status,
      url,
      source: 'This site',
    });
  }
  const raw = await resp.json().catch(() => null);
  if (!raw || typeof raw !== 'object') {
    throw new ApiError('config.json is not a JSON object', { status: resp.status, url, source: 'This site' });
  }
  return {
    apiBaseUrl: typeof raw.apiBaseUrl === 'string' ? raw.apiBaseUrl.replace(/\/+$/, '') : '',
    authHeader: typeof raw.authHeader === 'string' && raw.authHeader ? raw.authHeader : null,
    maxRangeDays: Number.isInteger(raw.maxRangeDays) && raw.maxRangeDays > 0 ? raw.maxRangeDays : 366,
  };
}

/**
 * GET /v1/cube with these parameters; resolves to the rows (objects keyed by column).
 * @param {{apiBaseUrl: string, authHeader: string|null}} config
 * @param {Record<string, string|number|undefined>} params empty values are left out
 * @param {AbortSignal} [signal]
 */
export async function cube(config, params, signal) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') query.set(k, String(v));
  }
  const base = config.apiBaseUrl || new URL('.', document.baseURI).origin;
  const url = `${base}/v1/cube?${query}`;
  const headers = { Accept: 'application/json' };
  if (config.authHeader && token.get()) headers[config.authHeader] = `Bearer ${token.get()}`;
  let resp;
  try {
    resp = await fetch(url, { headers, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(`the API could not be reached at ${base} (${e.message})`, { url });
  }
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const message = body?.error?.message || body?.message || resp.statusText || 'no explanation given';
    const requestId = body?.request_id || resp.headers.get('x-request-id') || undefined;
    throw new ApiError(message, { status: resp.status, requestId, url });
  }
  if (!body || !Array.isArray(body.rows)) {
    throw new ApiError('the API answered something that is not a cube result', {
      status: resp.status,
      requestId: resp.headers.get('x-request-id') || undefined,
      url,
    });
  }
  return body.rows;
}
