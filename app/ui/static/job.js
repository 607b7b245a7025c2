// A job's live curves: loads the dashboard's metrics route once, then follows the job's stream
// (server-sent events: a metric message per point, a job message per change) and draws loss and
// accuracy with uPlot, one line per phase, run and split (validation solid, training dashed).
// Each job message also fires `job-changed` on the body, which refreshes the panel (htmx).
// Without EventSource, or when the stream fails, it polls the metrics route as before.
"use strict";

const POLL_MS = 1500;
const CHARTS = [
  { id: "chart-loss", title: "loss", names: ["train_loss", "val_loss"] },
  { id: "chart-accuracy", title: "accuracy", names: ["train_accuracy", "val_accuracy"] },
];
const PHASE_COLOURS = {
  teacher: ["#1d4ed8", "#60a5fa", "#1e3a8a"],
  assistant: ["#7c3aed", "#a78bfa", "#4c1d95"],
  student: ["#c2410c", "#fb923c", "#7c2d12", "#f59e0b"],
  baseline: ["#4b5563", "#9ca3af", "#1f2937", "#6b7280"],
};
const EPOCH_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000];
const OTHER_COLOURS = ["#047857", "#34d399", "#065f46"];

function colourOf(phase, runIndex) {
  const palette = PHASE_COLOURS[phase] || OTHER_COLOURS;
  return palette[runIndex % palette.length];
}

// series [{phase, run, name, epochs, values}] -> uPlot data [[x...], [y...], ...] and series options
function chartData(series, names) {
  const shown = series.filter((s) => names.includes(s.name));
  const epochs = [...new Set(shown.flatMap((s) => s.epochs))].sort((a, b) => a - b);
  const runsOfPhase = {};
  const data = [epochs];
  const options = [{ label: "epoch" }];
  for (const s of shown) {
    const runs = (runsOfPhase[s.phase] ||= []);
    if (!runs.includes(s.run)) runs.push(s.run);
    const byEpoch = new Map(s.epochs.map((e, i) => [e, s.values[i]]));
    data.push(epochs.map((e) => (byEpoch.has(e) ? byEpoch.get(e) : null)));
    const split = s.name.startsWith("train") ? "train" : "val";
    options.push({
      label: `${s.run === s.phase ? s.phase : `${s.phase} ${s.run}`} ${split}`,
      stroke: colourOf(s.phase, runs.indexOf(s.run)),
      width: split === "val" ? 2 : 1.5,
      dash: split === "train" ? [6, 4] : undefined,
      spanGaps: true,
      points: { show: epochs.length < 40 },
      value: (u, v) => (v == null ? "–" : v.toFixed(4)),
    });
  }
  return { data, options, points: shown.reduce((n, s) => n + s.values.length, 0) };
}

class Curves {
  constructor(root) {
    this.root = root;
    this.url = root.dataset.metricsUrl;
    this.charts = {}; // id -> {plot, signature}
    window.addEventListener("resize", () => this.resize());
  }

  width() {
    const box = this.root.querySelector(".charts");
    return Math.max(320, Math.floor((box.clientWidth - 24) / (box.clientWidth > 900 ? 2 : 1)));
  }

  resize() {
    for (const { plot } of Object.values(this.charts)) plot.setSize({ width: this.width(), height: 280 });
  }

  draw(spec, series) {
    const { data, options, points } = chartData(series, spec.names);
    if (points === 0) return 0;
    const signature = options.map((o) => o.label).join("|");
    const existing = this.charts[spec.id];
    if (existing && existing.signature === signature) {
      existing.plot.setData(data);
      return points;
    }
    if (existing) existing.plot.destroy();
    const element = document.getElementById(spec.id);
    const opts = {
      title: spec.title, width: this.width(), height: 280, series: options,
      scales: { x: { time: false } },
      axes: [{ label: "epoch", incrs: EPOCH_STEPS, values: (u, ticks) => ticks.map(String) },
             { label: spec.title, size: 60 }],
      legend: { live: true },
    };
    this.charts[spec.id] = { plot: new uPlot(opts, data, element), signature };
    return points;
  }

  // The stream from the point the metrics route covered: a metric message appends one point.
  follow(body) {
    this.series = body.series;
    const source = new EventSource(this.root.dataset.streamUrl);
    source.addEventListener("metric", (message) => this.addPoint(JSON.parse(message.data)));
    source.addEventListener("job", () => document.body.dispatchEvent(new Event("job-changed")));
    source.addEventListener("end", () => {
      source.close();
      this.root.dataset.final = "true";
      document.body.dispatchEvent(new Event("job-changed"));
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) setTimeout(() => this.poll(), POLL_MS);
    };
  }

  addPoint(m) {
    let s = this.series.find((x) => x.phase === m.phase && x.run === m.run && x.name === m.name);
    if (!s) this.series.push((s = { phase: m.phase, run: m.run, name: m.name, epochs: [], values: [] }));
    if (s.epochs.includes(m.epoch)) return; // already loaded by the metrics route
    s.epochs.push(m.epoch);
    s.values.push(m.value);
    this.show({ series: this.series, ended: false });
  }

  show(body) {
    const points = CHARTS.reduce((n, spec) => n + this.draw(spec, body.series), 0);
    this.root.dataset.points = String(points);
    this.root.dataset.series = String(body.series.length);
    document.getElementById("curves-empty").hidden = points > 0;
    return points;
  }

  async poll() {
    let body;
    try {
      const response = await fetch(this.url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.status === 401) { window.location.assign("/ui/login"); return; }
      if (!response.ok) throw new Error(`metrics: HTTP ${response.status}`);
      body = await response.json();
    } catch (error) {
      console.warn(error);
      setTimeout(() => this.poll(), POLL_MS * 2);
      return;
    }
    const points = this.show(body);
    if (body.ended) {
      this.root.dataset.final = "true";
      if (points === 0) document.getElementById("curves-empty").textContent = "This job reported no epochs.";
      return;
    }
    if (window.EventSource && this.root.dataset.streamUrl && !this.polling) {
      this.polling = true; // one stream per page; after it fails, polling goes on
      this.follow(body);
      return;
    }
    setTimeout(() => this.poll(), POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("curves");
  if (root && window.uPlot) new Curves(root).poll();
});
