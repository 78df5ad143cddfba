// A VM's page: its buttons and export link; tabs for its disks and networks, its console
// (noVNC on the /console WebSocket) and its statistics (graphs over the four RRD levels).

import { bytes, h } from "./dom.js";
import { PERIODS, VmGraphs } from "./stats.js";
import { exportLink } from "./transfer.js";
import { actionButtons, addresses } from "./vms.js";

const TABS = [["overview", "Disks and networks"], ["console", "Console"],
              ["statistics", "Statistics"]];

// the libraries, loaded when first needed; a missing package is said in words
function loadLibrary(url, pkg) {
  return import(url).catch(() => {
    throw new Error(`${url} is not there: install Debian's ${pkg} package on the host ` +
                    "(make run does) and restart the agent.");
  });
}

export class VmView {
  constructor(ctx, uuid, tab) {
    this.ctx = ctx;
    this.uuid = uuid;
    this.tab = tab;
    this.rfb = null;
    this.graphs = null;
    this.timer = null;
  }

  ref() { return this.ctx.records.find("VM", (v) => v.uuid === this.uuid)[0]; }

  mount(root) {
    this.head = h("div", { class: "vm-head" });
    this.tabBar = h("nav", { class: "tabs" }, TABS.map(([id, label]) =>
      h("a", { href: `#/vm/${this.uuid}/${id}`, dataset: { tab: id } }, label)));
    this.panes = Object.fromEntries(TABS.map(([id]) =>
      [id, h("section", { id: `tab-${id}`, class: "pane", hidden: true })]));
    root.append(h("p", {}, h("a", { href: "#/" }, "← All VMs")), this.head, this.tabBar,
                ...Object.values(this.panes));
    this.setTab(this.tab);
  }

  unmount() {
    this.closeConsole();
    this.stopGraphs();
  }

  setTab(tab) {
    if (!this.panes[tab]) tab = "overview";
    this.tab = tab;
    for (const [id, pane] of Object.entries(this.panes)) pane.hidden = id !== tab;
    for (const a of this.tabBar.children) a.classList.toggle("active", a.dataset.tab === tab);
    if (tab !== "console") this.closeConsole();
    if (tab !== "statistics") this.stopGraphs();
    if (tab === "statistics") this.startGraphs();
    this.update();
  }

  update() {
    const { records } = this.ctx;
    const ref = this.ref();
    const vm = ref && records.get("VM", ref);
    if (!vm) {
      this.head.replaceChildren(h("h2", {}, "No such VM"),
                                h("p", {}, "It may have been destroyed."));
      return;
    }
    const allowed = new Set(vm.allowed_operations || []);
    this.head.replaceChildren(
      h("h2", { id: "vm-name" }, vm.name_label),
      h("p", {}, "Power state: ", h("span", { id: "vm-power", class: "power",
                                               dataset: { state: vm.power_state } },
                                     vm.power_state),
        vm.name_description ? ` — ${vm.name_description}` : ""),
      h("div", { class: "actions" }, actionButtons(this.ctx, ref, vm),
        allowed.has("export") ? exportLink(vm) : null));
    if (this.tab === "overview") this.renderOverview(vm);
    if (this.tab === "console") this.renderConsole(vm);
  }

  renderOverview(vm) {
    const { records } = this.ctx;
    const ips = addresses(records, vm);
    const gm = records.get("VM_guest_metrics", vm.guest_metrics);
    const disks = (vm.VBDs || []).map((r) => records.get("VBD", r)).filter(Boolean)
      .sort((a, b) => a.userdevice.localeCompare(b.userdevice, undefined, { numeric: true }));
    const vifs = (vm.VIFs || []).map((r) => records.get("VIF", r)).filter(Boolean)
      .sort((a, b) => a.device.localeCompare(b.device, undefined, { numeric: true }));
    this.panes.overview.replaceChildren(
      h("h3", {}, "Disks"),
      h("table", { id: "vm-disks" }, h("thead", {}, h("tr", {},
        ["Device", "Type", "Disk", "Size", "SR", "Mode", "Attached"].map((t) => h("th", {}, t)))),
        h("tbody", {}, disks.map((vbd) => {
          const vdi = records.get("VDI", vbd.VDI);
          const sr = vdi && records.get("SR", vdi.SR);
          return h("tr", {}, h("td", {}, vbd.device || vbd.userdevice), h("td", {}, vbd.type),
                   h("td", {}, vdi ? vdi.name_label : vbd.empty ? "(empty)" : "–"),
                   h("td", {}, vdi ? bytes(vdi.virtual_size) : ""),
                   h("td", {}, sr ? sr.name_label : ""), h("td", {}, vbd.mode),
                   h("td", {}, vbd.currently_attached ? "yes" : "no"));
        }))),
      h("h3", {}, "Networks"),
      h("table", { id: "vm-networks" }, h("thead", {}, h("tr", {},
        ["Device", "MAC", "Network", "IP address"].map((t) => h("th", {}, t)))),
        h("tbody", {}, vifs.map((vif) => {
          const net = records.get("network", vif.network);
          const ip = gm?.networks?.[`${vif.device}/ip`] ?? "";
          return h("tr", {}, h("td", {}, vif.device), h("td", {}, vif.MAC),
                   h("td", {}, net ? net.name_label : ""), h("td", {}, ip));
        }))),
      ...(ips.length ? [h("p", {}, `Addresses the guest reports: ${ips.join(", ")}`)] : []));
  }

  // --- console ------------------------------------------------------------------------------
  renderConsole(vm) {
    const pane = this.panes.console;
    if (vm.power_state !== "Running" && vm.power_state !== "Paused") {
      this.closeConsole();
      pane.replaceChildren(h("p", { class: "status" },
                             `The VM is ${vm.power_state}: its console opens when it runs.`));
      return;
    }
    if (this.rfb || this.opening) return;
    this.openConsole(pane);
  }

  async openConsole(pane) {
    this.opening = true;
    const status = h("p", { id: "console-status", class: "status" }, "Connecting…");
    const screen = h("div", { id: "console-screen", class: "screen" });
    const cad = h("button", { type: "button", id: "console-cad", disabled: true },
                  "Send Ctrl-Alt-Del");
    pane.replaceChildren(h("div", { class: "row" }, cad, status), screen);
    let RFB;
    try {
      ({ default: RFB } = await loadLibrary("/ui/vendor/novnc/core/rfb.js", "novnc"));
    } catch (e) {
      status.textContent = e.message;
      status.className = "error";
      this.opening = false;
      return;
    }
    this.opening = false;
    if (this.tab !== "console") return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // the session_id cookie goes with the WebSocket request: it is the credential
    const rfb = new RFB(screen, `${scheme}//${location.host}/console?uuid=${this.uuid}`,
                        { wsProtocols: ["binary"] });
    rfb.scaleViewport = true;
    rfb.background = "#000";
    rfb.addEventListener("connect", () => {
      status.textContent = "Connected: click the screen to type.";
      status.dataset.state = "connected";
      cad.disabled = false;
      rfb.focus();
    });
    rfb.addEventListener("disconnect", (ev) => {
      cad.disabled = true;
      if (this.rfb !== rfb) return;             // closed by the page itself
      this.rfb = null;
      // a reboot gives the VM a new console: open it again while the VM runs
      status.textContent = `${ev.detail.clean ? "The console closed" : "The console was cut"}` +
        "; connecting again…";
      status.dataset.state = "disconnected";
      this.retry = setTimeout(() => this.update(), 2000);
    });
    cad.onclick = () => rfb.sendCtrlAltDel();
    this.rfb = rfb;
  }

  closeConsole() {
    clearTimeout(this.retry);
    if (this.rfb) {
      const rfb = this.rfb;
      this.rfb = null;
      rfb.disconnect();
    }
  }

  // --- statistics ---------------------------------------------------------------------------
  async startGraphs() {
    if (this.graphs || this.loadingGraphs) return;
    this.loadingGraphs = true;
    const pane = this.panes.statistics;
    const status = h("p", { id: "stats-status", class: "status" });
    const picker = h("div", { class: "row periods" }, PERIODS.map((p) =>
      h("button", { type: "button", dataset: { period: p.id },
                    class: p === PERIODS[0] ? "active" : null,
                    onclick: (ev) => {
                      for (const b of picker.children) {
                        b.classList.toggle("active", b === ev.target);
                      }
                      if (this.graphs) this.graphs.setPeriod(p).catch((e) => this.statsFailed(e));
                    } }, `Last ${p.label}`)));
    const grid = h("div", { class: "graphs" });
    pane.replaceChildren(picker, status, grid);
    this.statsStatus = status;
    try {
      const { Chart, registerables } = await loadLibrary("/ui/vendor/chart.js/chart.esm.js",
                                                         "libjs-chart.js");
      Chart.register(...registerables);
      if (this.tab !== "statistics") return;
      this.graphs = new VmGraphs(Chart, grid, this.uuid);
      await this.graphs.refresh();
      this.timer = setInterval(() => this.graphs?.refresh().then(
        () => { status.textContent = ""; }, (e) => this.statsFailed(e)), 5000);
    } catch (e) {
      this.statsFailed(e);
    } finally {
      this.loadingGraphs = false;
    }
  }

  statsFailed(e) {
    if (e.code === "SESSION_INVALID") return this.ctx.expired();
    this.statsStatus.textContent = e.message;
    this.statsStatus.className = "error";
  }

  stopGraphs() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.graphs) this.graphs.destroy();
    this.graphs = null;
  }
}
