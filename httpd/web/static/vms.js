// What the page can do to a VM: the buttons its allowed_operations grant, and the calls.

import { h } from "./dom.js";

// allowed_operations entry -> button text and the call it makes
export const ACTIONS = [
  { op: "start", label: "Start", call: (s, vm) => s.call("VM.start", vm, false, false) },
  { op: "resume", label: "Resume", call: (s, vm) => s.call("VM.resume", vm, false, false) },
  { op: "clean_shutdown", label: "Shut down", call: (s, vm) => s.call("VM.clean_shutdown", vm) },
  { op: "hard_shutdown", label: "Force shutdown",
    call: (s, vm) => s.call("VM.hard_shutdown", vm) },
  { op: "clean_reboot", label: "Reboot", call: (s, vm) => s.call("VM.clean_reboot", vm) },
  { op: "suspend", label: "Suspend", call: (s, vm) => s.call("VM.suspend", vm) },
  { op: "snapshot", label: "Snapshot",
    call: (s, vm, rec) => s.call("VM.snapshot", vm,
                                 `${rec.name_label} ${new Date().toISOString().slice(0, 19)}`) },
];

// The VMs a person manages: not templates, snapshots or the control domain.
export function isGuest(rec) {
  return !rec.is_a_template && !rec.is_a_snapshot && !rec.is_control_domain;
}

export function addresses(records, vm) {
  const gm = records.get("VM_guest_metrics", vm.guest_metrics);
  if (!gm || !gm.networks) return [];
  return Object.entries(gm.networks).filter(([k]) => /\/ip$/.test(k)).map(([, v]) => v);
}

// The buttons of one VM; `busy` holds the refs with a call in flight (their buttons wait).
export function actionButtons(ctx, ref, rec) {
  const allowed = new Set(rec.allowed_operations || []);
  const busy = ctx.busy.has(ref);
  return ACTIONS.filter((a) => allowed.has(a.op)).map((a) => h("button", {
    type: "button", dataset: { op: a.op }, disabled: busy,
    onclick: () => ctx.act(ref, `${a.label} ${rec.name_label}`,
                           () => a.call(ctx.session, ref, rec)),
  }, a.label));
}
