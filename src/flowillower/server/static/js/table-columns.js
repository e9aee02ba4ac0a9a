// Which columns the runs table shows, in which order, and how a link carries them.

/** The shown columns: the server's defaults, less the folded constant ones, with the
 * user's shown/hidden/order choices applied. The name column is pinned first (after
 * the selection box): it is the frozen column that stays in place when scrolling. */
export function visibleColumns(columns, cp) {
  let cols = columns.filter((c) => {
    if (cp.hidden.includes(c.key)) return false;
    if (cp.shown.includes(c.key)) return true;
    return c.visible && !c.constant;
  });
  const rank = new Map(cp.order.map((k, i) => [k, i]));
  cols = cols.map((c, i) => [c, rank.has(c.key) ? rank.get(c.key) : 1000 + i])
    .sort((a, b) => a[1] - b[1]).map(([c]) => c);
  const name = cols.findIndex((c) => c.key === "name");
  if (name > 0) cols.unshift(...cols.splice(name, 1));
  return cols;
}

/** Constant columns folded into the "same in every run" line (not shown as columns). */
export function constantColumns(columns, cp) {
  return columns.filter((c) => c.constant && c.group !== "run" && !cp.shown.includes(c.key));
}

/** Column preferences from a link: JSON {order, shown, hidden}, each a list of keys. */
export function parseCols(raw) {
  try {
    const v = typeof raw === "string" ? JSON.parse(raw) : raw;
    const list = (x) => (Array.isArray(x) ? x.filter((k) => typeof k === "string") : []);
    return { order: list(v?.order), shown: list(v?.shown), hidden: list(v?.hidden) };
  } catch { return { order: [], shown: [], hidden: [] }; }
}

/** Whether the user changed anything (only then are the choices written to the URL). */
export function customCols(cp) {
  return Boolean(cp.order.length || cp.shown.length || cp.hidden.length);
}
