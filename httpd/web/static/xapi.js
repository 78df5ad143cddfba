// XenAPI over this host's /jsonrpc, the session kept in the session_id cookie (which /export,
// /import, /rrd_updates and the /console WebSocket read too), and errors in xe's words.

export class XenAPIError extends Error {
  constructor(code, params = []) {
    super(`${code} ${params.join(" ")}`.trim());
    this.code = code;
    this.params = params;
  }
}

let texts = {};

export async function loadErrorTexts() {
  const r = await fetch("/ui/errors.json");
  if (r.ok) texts = await r.json();
}

// The same text `xe` prints: a sentence, then "name: value" lines, then the code.
export function describe(err) {
  if (!(err instanceof XenAPIError)) return String(err.message || err);
  const known = texts[err.code];
  if (!known) {
    return `Error code: ${err.code}\nError parameters: ${err.params.join(", ")}`;
  }
  const [sentence, names] = known;
  const lines = [sentence];
  err.params.forEach((v, i) => lines.push(`${names[i] ?? `param ${i + 1}`}: ${v}`));
  lines.push(`(error code: ${err.code})`);
  return lines.join("\n");
}

let nextId = 1;

export async function rpc(method, params, { signal } = {}) {
  let r;
  try {
    r = await fetch("/jsonrpc", {
      method: "POST", signal,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", method, params, id: nextId++ }),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new XenAPIError("HOST_UNREACHABLE", [String(e.message || e)]);
  }
  const text = await r.text();
  let out;
  try {
    out = JSON.parse(text);
  } catch {
    throw new XenAPIError(r.headers.get("X-XenAPI-Error") || "INTERNAL_ERROR",
                          [`HTTP ${r.status}: ${text.trim().slice(0, 200)}`]);
  }
  if (out.error) {
    throw new XenAPIError(String(out.error.message), (out.error.data || []).map(String));
  }
  return out.result;
}

const COOKIE = "session_id";

function cookieAttrs() {
  return `; path=/; SameSite=Strict${location.protocol === "https:" ? "; Secure" : ""}`;
}

export class Session {
  constructor(ref) { this.ref = ref; }

  static fromCookie() {
    const m = document.cookie.match(/(?:^|;\s*)session_id=([^;]+)/);
    return m ? new Session(m[1]) : null;
  }

  static async login(password) {
    const ref = await rpc("session.login_with_password",
                          ["root", password, "2.21", "xcp-httpd web page"]);
    // a ref is letters, digits, ':' and '-': a cookie value as it is (the agent reads it so)
    document.cookie = `${COOKIE}=${ref}${cookieAttrs()}`;
    return new Session(ref);
  }

  call(method, ...params) { return rpc(method, [this.ref, ...params]); }

  forget() { document.cookie = `${COOKIE}=${cookieAttrs()}; max-age=0`; }

  async logout() {
    try { await this.call("session.logout"); } finally { this.forget(); }
  }
}
