// Graphs of /rrd_updates?json=true (xapi's format: meta.legend "CF:kind:uuid:name", rows of
// {t, values} as strings) with Chart.js, over the four RRD levels.

export const PERIODS = [
  { id: "10m", label: "10 minutes", span: 600, step: 5 },
  { id: "2h", label: "2 hours", span: 7200, step: 60 },
  { id: "1w", label: "1 week", span: 7 * 86400, step: 3600 },
  { id: "1y", label: "1 year", span: 365 * 86400, step: 86400 },
];

// What /rrd_updates answered: times (s) and one array of numbers (NaN: no value) per name.
export async function fetchUpdates(query) {
  const r = await fetch(`/rrd_updates?${new URLSearchParams({ cf: "AVERAGE", json: "true",
                                                              ...query })}`);
  if (r.status === 401) {
    const e = new Error("session expired");
    e.code = "SESSION_INVALID";
    throw e;
  }
  if (!r.ok) throw new Error(`statistics: HTTP ${r.status} ${(await r.text()).trim()}`);
  const doc = await r.json();
  const names = doc.meta.legend.map((l) => l.split(":").slice(3).join(":"));
  const rows = [...doc.data].sort((a, b) => Number(a.t) - Number(b.t));
  const series = new Map(names.map((n) => [n, []]));
  for (const row of rows) {
    row.values.forEach((v, i) => series.get(names[i]).push(Number(v)));
  }
  return { times: rows.map((row) => Number(row.t)), series };
}

export function latest(values) {
  for (let i = values.length - 1; i >= 0; i--) if (Number.isFinite(values[i])) return values[i];
  return NaN;
}

// Which columns each graph draws, and how a raw value becomes the plotted one.
const GRAPHS = [
  { id: "cpu", title: "CPU (%)", pick: (n) => /^cpu\d+$/.test(n), scale: (v) => v * 100,
    max: 100 },
  { id: "memory", title: "Memory (MiB)",
    pick: (n) => n === "memory" || n === "memory_internal_free",
    scale: (v, n) => (n === "memory" ? v / 2 ** 20 : v / 1024) },
  { id: "disk", title: "Disk (KiB/s)", pick: (n) => /^vbd_.+_(read|write)$/.test(n),
    scale: (v) => v / 1024 },
  { id: "network", title: "Network (KiB/s)", pick: (n) => /^vif_.+_(rx|tx)$/.test(n),
    scale: (v) => v / 1024 },
];
const LABELS = { memory: "allocated", memory_internal_free: "free in the guest" };
const COLOURS = ["#2f6fd6", "#d6552f", "#2fa35a", "#9b4fd6", "#c9a227", "#3bb3c3"];

function timeLabel(period) {
  return (t) => {
    const d = new Date(t * 1000);
    return period.span > 86400 ? d.toLocaleDateString() : d.toLocaleTimeString();
  };
}

export class VmGraphs {
  // Chart.js is loaded by the caller (a dynamic import, so a missing package is said in words)
  constructor(Chart, root, vmUuid) {
    this.Chart = Chart;
    this.vmUuid = vmUuid;
    this.period = PERIODS[0];
    this.charts = new Map();
    for (const g of GRAPHS) {
      const box = document.createElement("figure");
      box.className = "graph";
      const caption = document.createElement("figcaption");
      caption.textContent = g.title;
      const canvas = document.createElement("canvas");
      canvas.id = `graph-${g.id}`;
      canvas.dataset.points = "0";
      box.append(caption, canvas);
      root.append(box);
      this.charts.set(g.id, new Chart(canvas, {
        type: "line",
        data: { datasets: [] },
        options: {
          animation: false, parsing: false, normalized: true, spanGaps: false,
          maintainAspectRatio: false,
          elements: { point: { radius: 1.5 } },
          scales: {
            x: { type: "linear", ticks: { callback: timeLabel(this.period), maxTicksLimit: 6 } },
            y: { beginAtZero: true, ...(g.max ? { max: g.max } : {}) },
          },
          plugins: { legend: { position: "bottom" } },
        },
      }));
    }
  }

  setPeriod(period) {
    this.period = period;
    for (const chart of this.charts.values()) {
      chart.options.scales.x.ticks.callback = timeLabel(period);
    }
    return this.refresh();
  }

  async refresh() {
    const p = this.period;
    const { times, series } = await fetchUpdates({ start: String(-p.span),
                                                   interval: String(p.step),
                                                   vm_uuid: this.vmUuid });
    for (const g of GRAPHS) {
      const chart = this.charts.get(g.id);
      const names = [...series.keys()].filter(g.pick).sort();
      chart.data.datasets = names.map((n, i) => ({
        label: LABELS[n] || n,
        borderColor: COLOURS[i % COLOURS.length],
        backgroundColor: COLOURS[i % COLOURS.length],
        borderWidth: 1.5,
        data: times.map((t, k) => {
          const v = series.get(n)[k];
          return { x: t, y: Number.isFinite(v) ? g.scale(v, n) : null };
        }),
      }));
      const newest = times.length ? times[times.length - 1] : undefined;
      chart.options.scales.x.min = newest === undefined ? undefined : newest - p.span;
      chart.options.scales.x.max = newest;
      chart.update("none");
      const first = chart.data.datasets[0];
      chart.canvas.dataset.points = String(first ? first.data.filter((d) => d.y !== null)
        .length : 0);
    }
  }

  destroy() {
    for (const chart of this.charts.values()) chart.destroy();
  }
}
