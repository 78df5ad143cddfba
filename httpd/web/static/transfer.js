// Import an XVA from the browser: a task of our own (task.create), the file PUT to
// /import?task_id=..., a progress bar that follows the task's progress (from event.from),
// and a cancel button (task.cancel). Export is a plain link: the browser streams /export.

import { h } from "./dom.js";
import { XenAPIError, describe } from "./xapi.js";

export function exportLink(vm) {
  return h("a", { class: "button", id: "export", href: `/export?uuid=${vm.uuid}`,
                  download: `${vm.name_label}.xva` }, "Export (download the XVA)");
}

// /import's answer: the failure xapi describes in the task, else the HTTP status in words
function uploadError(xhr, task) {
  if (task && task.status === "failure" && task.error_info?.length) {
    return new XenAPIError(task.error_info[0], task.error_info.slice(1));
  }
  const code = xhr.getResponseHeader("X-XenAPI-Error");
  const text = (xhr.responseText || "").trim();
  return code ? new XenAPIError(code, text.split(" ").slice(1))
              : new Error(xhr.status ? `HTTP ${xhr.status} ${text}` : "the upload was cut");
}

export class ImportForm {
  constructor(ctx) {
    this.ctx = ctx;
    this.task = null;
    this.xhr = null;
    this.file = h("input", { type: "file", id: "import-file", accept: ".xva,.xva.gz,.xva.zst" });
    this.go = h("button", { type: "button", id: "import-start", onclick: () => this.start() },
                "Import");
    this.cancelButton = h("button", { type: "button", id: "import-cancel", hidden: true,
                                      onclick: () => this.cancel() }, "Cancel");
    this.progress = h("progress", { id: "import-progress", max: "1", value: "0", hidden: true });
    this.status = h("pre", { id: "import-status", class: "status" });
    this.element = h("section", { id: "import", class: "panel" }, h("h2", {}, "Import a VM"),
      h("div", { class: "row" }, this.file, this.go, this.cancelButton, this.progress),
      this.status);
  }

  say(text, kind = "status") {
    this.status.className = kind;
    this.status.textContent = text;
  }

  async start() {
    const file = this.file.files[0];
    if (!file || this.task) return;
    const { session } = this.ctx;
    let task;
    try {
      task = await session.call("task.create", `Import of ${file.name}`, "from the web page");
    } catch (e) {
      return this.say(describe(e), "error");
    }
    this.task = task;
    this.go.disabled = true;
    this.cancelButton.hidden = false;
    this.cancelButton.disabled = false;
    this.progress.hidden = false;
    this.progress.value = 0;
    this.say(`Importing ${file.name}…`);
    const xhr = new XMLHttpRequest();
    this.xhr = xhr;
    xhr.open("PUT", `/import?task_id=${encodeURIComponent(task)}`);
    const finished = new Promise((resolve) => { xhr.onloadend = resolve; });
    xhr.send(file);
    await finished;
    // the task's outcome, as the agent finished it when the request ended
    let rec = null;
    try { rec = await session.call("task.get_record", task); } catch { /* gone */ }
    if (xhr.status === 200 && rec?.status === "success") {
      this.progress.value = 1;
      const names = [...(rec.result || "").matchAll(/OpaqueRef:[0-9a-f-]+/g)]
        .map(([ref]) => this.ctx.records.get("VM", ref)?.name_label).filter(Boolean);
      this.say(`Imported ${file.name}${names.length ? `: ${names.join(", ")}` : ""}.`, "done");
    } else if (rec?.status === "cancelled" || rec?.error_info?.[0] === "TASK_CANCELLED") {
      this.say(`The import of ${file.name} was cancelled; nothing was kept.`, "warning");
    } else {
      this.say(`The import of ${file.name} failed:\n${describe(uploadError(xhr, rec))}`, "error");
    }
    try { await session.call("task.destroy", task); } catch { /* gone */ }
    this.task = null;
    this.xhr = null;
    this.go.disabled = false;
    this.cancelButton.hidden = true;
    this.file.value = "";
  }

  async cancel() {
    if (!this.task) return;
    this.cancelButton.disabled = true;
    try {
      await this.ctx.session.call("task.cancel", this.task);
    } catch (e) {
      this.say(describe(e), "error");
    }
  }

  // the bar follows the task's progress as event.from brings it
  update() {
    if (!this.task) return;
    const rec = this.ctx.records.get("task", this.task);
    if (rec && rec.status === "pending") this.progress.value = Number(rec.progress) || 0;
  }
}
