// A chart's grouped view: per group one mean line with a band (± std or min–max) and,
// when asked, its runs drawn thinly underneath; plus the legend entries and the numbers
// the tooltip shows for a group at the cursor.
import { ema, join } from "./align.js";
import { aggregate, bandEdges } from "./groups.js";
import { fmtNum } from "./dom.js";
import { labelColors, withAlpha } from "./palette.js";

/** uPlot data, series and bands for `present` runs ({run, x, y}) grouped by
 * `group` = {groups: [{label, ids}], band: "std"|"minmax", members: bool}.
 * Returns {columns, series, bands, entries, groups}: `columns` are (x, y) pairs for join(). */
export function groupPlot(present, group, { smooth = 0, log = false, theme }) {
  const byRun = new Map(present.map((d) => [d.run, d]));
  const fix = (y) => (log ? y.map((v) => (typeof v === "number" && v > 0 ? v : null)) : y);
  const memberCols = [], memberSeries = [], groupCols = [], groupSeries = [], built = [];
  const colors = labelColors(group.groups.map((g) => g.label));
  for (const g of group.groups) {
    const members = g.ids.map((id) => byRun.get(id)).filter(Boolean);
    if (!members.length) continue;
    // Smooth each run on its own grid first: the band spans the smoothed runs.
    const runs = members.map((d) => ({ run: d.run, x: d.x, y: smooth ? ema(Array.from(d.y), smooth) : Array.from(d.y) }));
    const agg = aggregate(runs);
    const { lo, hi } = bandEdges(agg, group.band);
    const c = colors.get(g.label);
    const name = `${g.label} (${members.length} run${members.length === 1 ? "" : "s"})`;
    const pos = new Map(agg.x.map((v, i) => [v, i]));
    const stats = (xv) => {
      const i = pos.get(xv);
      return i === undefined ? null : { mean: agg.mean[i], std: agg.std[i], min: agg.min[i], max: agg.max[i], n: agg.n[i] };
    };
    const info = { label: g.label, name, color: c, runs: members.map((d) => d.run), agg, lo, hi, stats, band: group.band };
    built.push(info);
    if (group.members) {
      runs.forEach((r) => {
        memberCols.push({ x: r.x, y: fix(r.y) });
        memberSeries.push({ label: r.run, stroke: withAlpha(c, 0.45), width: 0.75, spanGaps: true,
          points: { show: false }, role: "member", group: g.label, runId: r.run });
      });
    }
    groupCols.push({ x: agg.x, y: fix(lo) }, { x: agg.x, y: fix(hi) }, { x: agg.x, y: fix(agg.mean) });
    groupSeries.push(
      { label: `${name} low`, stroke: "transparent", width: 0, spanGaps: true, points: { show: false }, role: "lo", group: g.label },
      { label: `${name} high`, stroke: "transparent", width: 0, spanGaps: true, points: { show: false }, role: "hi", group: g.label },
      { label: name, stroke: c, width: 2, spanGaps: true, points: { show: agg.x.length === 1, size: 6, fill: c, stroke: c },
        role: "mean", group: g.label, fwColor: c, fwStats: stats });
  }
  const columns = [...memberCols, ...groupCols];
  const series = [...memberSeries, ...groupSeries];
  // Series indices are 1-based in uPlot (0 is x): a band fills between a group's high and low.
  const bands = [];
  const entries = built.map((info) => {
    const idx = [];
    series.forEach((s, i) => { if (s.group === info.label) idx.push(i + 1); });
    const hiIdx = series.findIndex((s) => s.group === info.label && s.role === "hi") + 1;
    const loIdx = series.findIndex((s) => s.group === info.label && s.role === "lo") + 1;
    const meanIdx = series.findIndex((s) => s.group === info.label && s.role === "mean") + 1;
    bands.push({ series: [hiIdx, loIdx], fill: withAlpha(info.color, theme.band) });
    const means = info.agg.mean.filter((v) => v !== null);
    return { key: info.label, name: info.name, color: info.color, series: idx, cursor: meanIdx, runs: info.runs,
      last: means.length ? means[means.length - 1] : null,
      min: means.length ? Math.min(...means) : null, max: means.length ? Math.max(...means) : null };
  });
  return { columns, series, bands, entries, groups: built };
}

/** The joined uPlot data of a groupPlot: [x, ...one array per series]. */
export function groupData(plot) {
  return plot.columns.length ? join(plot.columns) : [[]];
}

/** A metric logged once, grouped: per group {key, name, color, value (the mean), text,
 * note, runs}, the spread as the band shows it (± std, or [min, max]) over its runs. */
export function groupCard(present, group) {
  const byRun = new Map(present.map((d) => [d.run, d]));
  const colors = labelColors(group.groups.map((g) => g.label));
  const out = [];
  for (const g of group.groups) {
    const vals = g.ids.map((id) => byRun.get(id)?.y?.[0]).filter((v) => typeof v === "number" && Number.isFinite(v));
    if (!vals.length) continue;
    const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
    const std = Math.sqrt(vals.reduce((a, b) => a + (b - mean) ** 2, 0) / vals.length);
    const spread = group.band === "minmax" ? ` [${fmtNum(Math.min(...vals))}, ${fmtNum(Math.max(...vals))}]` : ` ± ${fmtNum(std)}`;
    out.push({ key: g.label, name: `${g.label} (${vals.length} run${vals.length === 1 ? "" : "s"})`, color: colors.get(g.label),
      value: mean, text: `${fmtNum(mean)}${vals.length > 1 ? spread : ""}`, note: "", runs: g.ids });
  }
  return out;
}
