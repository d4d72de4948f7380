// The REST API from the browser. Requests send the key as a header; the sign-in also sets it as an
// HttpOnly cookie, which the API accepts on GET only (EventSource and download links send no header).

const STORE = "adapruner.key";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function signedIn() {
  return sessionStorage.getItem(STORE) !== null;
}

export async function signIn(key) {
  const response = await fetch("/web/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.detail);
  sessionStorage.setItem(STORE, key);
  sessionStorage.setItem(`${STORE}.name`, body.name);
  return body;
}

export async function signOut() {
  sessionStorage.removeItem(STORE);
  sessionStorage.removeItem(`${STORE}.name`);
  await fetch("/web/session", { method: "DELETE" });
}

export function keyName() {
  return sessionStorage.getItem(`${STORE}.name`) || "";
}

/** fetch a JSON endpoint; throws ApiError (status + FastAPI's detail) unless 2xx. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(STORE) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(STORE);
    window.dispatchEvent(new CustomEvent("signed-out"));
  }
  if (!response.ok) throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : text);
  return data;
}

/** The message of an error for people: FastAPI's field errors become "field: message" lines. */
export function explain(error) {
  if (error instanceof ApiError && Array.isArray(error.detail)) {
    return error.detail.map((e) => `${fieldPath(e.loc)}: ${e.msg}`).join("\n");
  }
  return error.message || String(error);
}

/** ["body", "search", "spec", "space", "metrics"] -> "spec.space.metrics" (the discriminator tag dropped). */
export function fieldPath(loc = []) {
  const parts = loc.filter((p, i) => !(i === 0 && p === "body"));
  if (parts.length > 1 && (parts[0] === "search" || parts[0] === "prune") && parts[1] === "spec") parts.shift();
  return parts.join(".") || "request";
}
