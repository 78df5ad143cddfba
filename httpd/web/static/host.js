// The home view: the host (name, address, uptime, CPU and memory now), its SRs as bars, the
// VMs with their buttons, and an XVA import.

import { bar, bytes, duration, h } from "./dom.js";
import { fetchUpdates, latest } from "./stats.js";
import { ImportForm } from "./transfer.js";
import { actionButtons, addresses, isGuest } from "./vms.js";

export class HostView {
  constructor(ctx) {
    this.ctx = ctx;
    this.now = { cpu: NaN, memTotal: NaN, memFree: NaN };
    this.timer = null;
  }

  mount(root) {
    this.hostBox = h("section", { id: "host", class: "panel" });
    this.srBox = h("section", { id: "srs", class: "panel" });
    this.vmBody = h("tbody");
    this.importForm = new ImportForm(this.ctx);
    root.append(
      h("div", { class: "columns" }, this.hostBox, this.srBox),
      h("section", { id: "vms", class: "panel" }, h("h2", {}, "Virtual machines"),
        h("table", { class: "vms" },
          h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Power state"),
                           h("th", {}, "IP address"), h("th", {}, "Actions"))),
          this.vmBody)),
      this.importForm.element);
    this.poll();
    this.timer = setInterval(() => this.poll(), 5000);
  }

  unmount() { clearInterval(this.timer); }

  // CPU and memory now: the newest row of the host's 5-second statistics
  async poll() {
    try {
      const { series } = await fetchUpdates({ start: "-30", interval: "5", host: "true",
                                              vm_uuid: "none", sr_uuid: "none" });
      this.now = { cpu: latest(series.get("cpu_avg") || []),
                   memTotal: latest(series.get("memory_total_kib") || []) * 1024,
                   memFree: latest(series.get("memory_free_kib") || []) * 1024 };
      this.update();
    } catch (e) {
      if (e.code === "SESSION_INVALID") this.ctx.expired();
    }
  }

  update() {
    const { records } = this.ctx;
    const [, host] = records.find("host", () => true);
    if (host) {
      const boot = Number(host.other_config?.boot_time);
      const { cpu, memTotal, memFree } = this.now;
      document.title = `${host.name_label} – xcp-httpd`;
      this.hostBox.replaceChildren(
        h("h2", {}, "Host"),
        h("dl", {},
          h("dt", {}, "Name"), h("dd", { id: "host-name" }, host.name_label),
          h("dt", {}, "Address"), h("dd", { id: "host-address" }, host.address),
          h("dt", {}, "Uptime"),
          h("dd", { id: "host-uptime" }, boot ? duration(Date.now() / 1000 - boot) : "–"),
          h("dt", {}, "CPU"),
          h("dd", { id: "host-cpu" }, bar(cpu, 1, Number.isFinite(cpu)
            ? `${(cpu * 100).toFixed(0)} %` : "–")),
          h("dt", {}, "Memory"),
          h("dd", { id: "host-memory" }, bar(memTotal - memFree, memTotal,
            `${bytes(memTotal - memFree)} of ${bytes(memTotal)}`))));
    }
    const srs = [...records.all("SR")].filter(([, sr]) => sr.content_type !== "iso" ||
                                                           Number(sr.physical_size) > 0);
    this.srBox.replaceChildren(h("h2", {}, "Storage"), h("table", { class: "srs" },
      h("tbody", {}, srs.sort(([, a], [, b]) => a.name_label.localeCompare(b.name_label))
        .map(([, sr]) => h("tr", { dataset: { sr: sr.uuid } },
          h("th", {}, sr.name_label),
          h("td", {}, bar(Number(sr.physical_utilisation), Number(sr.physical_size),
                          `${bytes(sr.physical_utilisation)} of ${bytes(sr.physical_size)}`)))))));
    const vms = [...records.all("VM")].filter(([, v]) => isGuest(v))
      .sort(([, a], [, b]) => a.name_label.localeCompare(b.name_label));
    this.vmBody.replaceChildren(...vms.map(([ref, vm]) => h("tr", { dataset: { vm: vm.uuid } },
      h("td", { class: "name" }, h("a", { href: `#/vm/${vm.uuid}` }, vm.name_label)),
      h("td", { class: "power", dataset: { state: vm.power_state } }, vm.power_state),
      h("td", { class: "ip" }, addresses(records, vm).join(", ")),
      h("td", { class: "actions" }, actionButtons(this.ctx, ref, vm)))));
    if (!vms.length) {
      this.vmBody.append(h("tr", {}, h("td", { colspan: "4" }, "No VMs yet: import one below.")));
    }
    this.importForm.update();
  }
}
