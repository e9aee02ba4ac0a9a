// The run page's "System" panel: what the sampler (fw.system_metrics) logged under
// system/ — CPU, memory, disk, network and each visible GPU — charted against wall time.
// These are `sys` values: the metrics list and the runs table leave them out, so the
// panel asks for the sampler's fixed key names and shows only the ones the run has.
import { api } from "./api.js";
import { Chart } from "./chart.js";
import { h } from "./dom.js";

// sysmetrics.PROCESS_KEYS and GPU_FIELDS (Python), in display order.
const MACHINE = [
  "system/cpu/process_percent", "system/cpu/machine_percent",
  "system/memory/process_rss_mb", "system/memory/machine_percent",
  "system/disk/read_mb_s", "system/disk/write_mb_s", "system/disk/used_percent",
  "system/network/sent_mb_s", "system/network/recv_mb_s",
];
const GPU_FIELDS = ["utilization_percent", "memory_percent", "memory_mb", "power_w", "temperature_c"];
const MAX_GPUS = 64;

// Which of `keys` the run holds: one request, the other keys decoded in the same pass.
async function present(id, keys) {
  const found = [];
  for (const key of keys) {
    const res = await api.get("series", { run: [id], key, x: "time", points: 2,
      also: keys.filter((k) => k !== key).slice(0, 32) });
    if (res.runs.some((r) => !r.missing && r.count > 0)) found.push(key);
  }
  return found;
}

// Every GPU the sampler saw is gpu0, gpu1, ... in order: stop at the first one missing.
async function gpuKeys(id) {
  const keys = [];
  for (let i = 0; i < MAX_GPUS; i++) {
    const fields = GPU_FIELDS.map((f) => `system/gpu${i}/${f}`);
    const have = await present(id, fields);
    if (!have.length) break;
    keys.push(...have);
  }
  return keys;
}

// Append the panel to `grid` when the run has system values (nothing otherwise).
export async function systemPanel(grid, run) {
  let first;
  try {  // a static export has them in series.json (an older export: no panel, no error)
    first = await api.get("series", { run: [run.id], key: MACHINE[1], x: "time", points: 2, also: MACHINE });
  } catch (e) { return null; }
  if (!first.runs.some((r) => !r.missing && r.count > 0)) return null;
  const keys = [...(await present(run.id, MACHINE)), ...(await gpuKeys(run.id))];
  const charts = h("div", { class: "system-charts" });
  const card = h("section", { class: "card wide system-card" },
    h("h2", { text: `System (${keys.length})` }),
    h("p", { class: "muted", text: "means over each interval, against wall time (fw.system_metrics)" }),
    charts);
  grid.append(card);
  for (const key of keys) {
    const chart = new Chart(key, [{ id: run.id, name: run.name }], { x: "time", height: 150 });
    charts.append(chart.el);
    chart.load(keys);
  }
  return card;
}
