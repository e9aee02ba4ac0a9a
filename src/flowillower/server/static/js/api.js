// Data access. Live mode calls the JSON API; a static export answers the same calls
// from data files (local.js), so every page works unchanged on a static host.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";
export const MODE = meta("fw-mode") === "static" ? "static" : "live";
const TOKEN = meta("fw-token");

let local = null;
async function backend() {
  if (!local) local = await import("./local.js");
  return local;
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function query(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
    else qs.append(k, String(v));
  }
  const s = qs.toString();
  return s ? `?${s}` : "";
}

async function call(method, path, params, body) {
  if (MODE === "static") {
    if (method !== "GET") throw new ApiError(405, "this is a static export: it is read-only");
    return (await backend()).get(path, params || {});
  }
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-Flowillower-Token"] = TOKEN;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(`api/${path}${query(params)}`, opts);
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) throw new ApiError(res.status, data?.error || `${res.status} ${res.statusText}`);
  return data;
}

export const api = {
  get: (path, params) => call("GET", path, params),
  patch: (path, body) => call("PATCH", path, undefined, body),
  put: (path, body) => call("PUT", path, undefined, body),
  del: (path) => call("DELETE", path),
  readonly: MODE === "static",
  fileUrl(run, path) {
    const p = path.split("/").map(encodeURIComponent).join("/");
    return MODE === "static" ? `data/runs/${encodeURIComponent(run)}/${p}`
      : `api/runs/${encodeURIComponent(run)}/files/${p}`;
  },
};

export function runPath(id, suffix = "") {
  return `runs/${encodeURIComponent(id)}${suffix}`;
}
