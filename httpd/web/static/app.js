// The page: a login form, the host with its SRs and VMs, and a page per VM (#/vm/<uuid>).

import { h } from "./dom.js";
import { Records } from "./events.js";
import { HostView } from "./host.js";
import { VmView } from "./vm.js";
import { Session, describe, loadErrorTexts } from "./xapi.js";

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const logoutButton = document.getElementById("logout");

// What every view gets: the session, the live records, and how to run an action.
const ctx = {
  session: null,
  records: null,
  busy: new Set(),
  async act(ref, what, fn) {
    ctx.busy.add(ref);
    render();
    try {
      await fn();
      say(null);
    } catch (e) {
      if (e.code === "SESSION_INVALID") return expired();
      say(`${what} failed:\n${describe(e)}`);
    } finally {
      ctx.busy.delete(ref);
      render();
    }
  },
  say: (text) => say(text),
  expired: () => expired(),
};

function say(text, kind = "error") {
  notice.replaceChildren(...(text ? [h("pre", { class: kind }, text),
                                     h("button", { type: "button", class: "close",
                                                   onclick: () => say(null) }, "×")] : []));
  notice.hidden = !text;
}

let view = null;

function showView(next) {
  if (view) view.unmount();
  view = next;
  main.replaceChildren();
  if (view) view.mount(main);
}

function route() {
  if (!ctx.session) return showLogin();
  const m = location.hash.match(/^#\/vm\/([0-9a-f-]+)(?:\/(\w+))?$/);
  if (m) {
    if (view instanceof VmView && view.uuid === m[1]) view.setTab(m[2] || "overview");
    else showView(new VmView(ctx, m[1], m[2] || "overview"));
  } else if (!(view instanceof HostView)) {
    showView(new HostView(ctx));
  }
  render();
}

function render() {
  if (view && view.update) view.update();
}

function start(session) {
  ctx.session = session;
  logoutButton.hidden = false;
  ctx.records = new Records(session, {
    onChange: render,
    onExpired: expired,
    onTrouble: (e) => {
      document.body.classList.toggle("offline", !!e);
      if (e) say(`Lost the host's events; retrying.\n${describe(e)}`, "warning");
    },
  });
  ctx.records.run();
  route();
}

function stop() {
  if (ctx.records) ctx.records.stop();
  ctx.records = null;
  ctx.session = null;
  logoutButton.hidden = true;
  showView(null);
}

function expired() {
  if (!ctx.session) return;
  ctx.session.forget();
  stop();
  showLogin("Your session has expired (or was closed): log in again.");
}

function showLogin(message) {
  const error = h("pre", { id: "login-error", class: "error", hidden: !message }, message || "");
  const password = h("input", { type: "password", id: "password", name: "password",
                                autocomplete: "current-password", required: true,
                                autofocus: true });
  const submit = h("button", { type: "submit", id: "login" }, "Log in");
  const form = h("form", { id: "login-form", class: "login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      try {
        const session = await Session.login(password.value);
        password.value = "";
        start(session);
      } catch (e) {
        error.textContent = e.code === "SESSION_AUTHENTICATION_FAILED"
          ? "Wrong password for root." : describe(e);
        error.hidden = false;
        submit.disabled = false;
        password.select();
      }
    },
  }, h("h2", {}, "Log in to this host"),
     h("label", {}, "root's password ", password), submit, error);
  showView({ mount: (root) => root.append(form), unmount() {} });
  password.focus();
}

logoutButton.addEventListener("click", async () => {
  const session = ctx.session;
  stop();
  try { await session.logout(); } catch { /* gone already */ }
  showLogin();
});
window.addEventListener("hashchange", route);

await loadErrorTexts();
const saved = Session.fromCookie();
if (saved) {
  // a cookie from an earlier visit: is its session still there?
  saved.call("session.get_this_host", saved.ref).then(() => start(saved), () => {
    saved.forget();
    showLogin();
  });
} else {
  showLogin();
}
