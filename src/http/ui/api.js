// The management API as the UI calls it: the session's credentials on every request, and every
// failure turned into an ApiError that carries the API's own reason, for the page to show.

const SESSION_KEY = 'warren.session';

/** The logged-in user of this tab ({name, tags, auth}), or null. */
export function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    return s && typeof s.auth === 'string' ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

/** Whether the session's user has one of these tags. */
export function hasTag(...tags) {
  const s = session();
  return !!s && s.tags.some((t) => tags.includes(t));
}

/** An answer with status >= 400 (or no answer at all: status 0). */
export class ApiError extends Error {
  constructor(status, error, reason, method, path) {
    super(reason);
    this.status = status;
    this.error = error;
    this.reason = reason;
    this.method = method;
    this.path = path;
  }
}

/** HTTP Basic credentials, UTF-8 encoded as RabbitMQ's plugin reads them. */
export function basicAuth(user, password) {
  let binary = '';
  for (const byte of new TextEncoder().encode(`${user}:${password}`)) {
    binary += String.fromCharCode(byte);
  }
  return `Basic ${btoa(binary)}`;
}

// Who is told of failures that a page does not show itself (app.js: the error area).
let reportFailure = () => {};
// Who is told when the credentials stop working (app.js: back to the login form).
let reportLoggedOut = () => {};

export function onFailure(handler) {
  reportFailure = handler;
}

export function onLoggedOut(handler) {
  reportLoggedOut = handler;
}

/** The reason an API error body gives, as text. */
function reasonOf(body, fallback) {
  if (body && typeof body === 'object') {
    const reason = body.reason ?? body.error;
    if (reason === undefined || reason === null) return fallback;
    return typeof reason === 'string' ? reason : JSON.stringify(reason);
  }
  if (typeof body === 'string' && body.trim()) return body.trim();
  return fallback;
}

/**
 * One API call. `options`: body (sent as JSON), headers, auth (credentials other than the
 * session's: the login form's), report (false: the caller shows failures itself).
 * Resolves to the decoded answer (null when empty); rejects with an ApiError.
 */
export async function request(method, path, options = {}) {
  const { body, headers = {}, auth = session()?.auth, report = true } = options;
  const init = {
    method,
    // Never the browser's own credentials or login prompt: only the ones given here.
    credentials: 'omit',
    cache: 'no-store',
    headers: { Accept: 'application/json', ...headers },
  };
  if (auth) init.headers.Authorization = auth;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let failure;
  try {
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (response.ok) return data;
    const fallback = `${response.status} ${response.statusText}`.trim();
    failure = new ApiError(response.status, data?.error ?? '', reasonOf(data, fallback), method, path);
  } catch (e) {
    failure = new ApiError(0, 'network', `Warren did not answer: ${e.message}`, method, path);
  }
  // Credentials that no longer work (the password changed, the user was deleted).
  if (failure.status === 401 && failure.error === 'not_authorized' && !options.auth) {
    reportLoggedOut(failure);
  } else if (report) {
    reportFailure(failure);
  }
  throw failure;
}

export const get = (path, options) => request('GET', path, options);
export const put = (path, body, options = {}) => request('PUT', path, { ...options, body });
export const post = (path, body, options = {}) => request('POST', path, { ...options, body });
export const del = (path, options) => request('DELETE', path, options);

/** `/api/a/b/c` with each part percent-encoded (`/` as a vhost is `%2F`). */
export function apiPath(...parts) {
  return `/api/${parts.map((p) => encodeURIComponent(p)).join('/')}`;
}

/** A query string of the defined, non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
