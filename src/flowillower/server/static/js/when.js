// Dates written as text in a filter (`created > '2026-11-01'`), read as
// flowillower.queries.names.parse_time reads them (Python's datetime.fromisoformat): an ISO
// date, optionally a time (after `T` or a space) and a zone (`Z`, `+01:00`, `+0100`, `+01`).
// Without a zone it is LOCAL time, as `flowillower ls` shows times. Date.parse is not used:
// it reads a bare `2026-11-01` as UTC midnight and zone-less date-times as local, and
// accepts loose forms Python refuses.

const ISO = new RegExp(
  "^(\\d{4})(-?)(\\d{2})\\2(\\d{2})" +  // date: 2026-11-01 or 20261101
  "(?:[T ](\\d{2})(?::?(\\d{2})(?::?(\\d{2})(?:[.,](\\d+))?)?)?" +  // time: 18, 18:30, 18:30:05.25
  "(Z|[+-]\\d{2}(?::?\\d{2}(?::?\\d{2})?)?)?)?$");  // zone

function daysIn(y, m) {  // day 0 of the next month is this month's last
  const t = new Date(0);
  t.setUTCFullYear(y, m, 0);
  return t.getUTCDate();
}

// Seconds since the epoch of `text`, or null when it is not such a date.
export function parseTime(text) {
  const m = ISO.exec(String(text).trim());
  if (!m) return null;
  const [y, mo, d, h = 0, mi = 0, s = 0] = [m[1], m[3], m[4], m[5], m[6], m[7]].map((v) => (v === undefined ? undefined : Number(v)));
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || s > 59) return null;
  const micro = m[8] ? Number(m[8].slice(0, 6).padEnd(6, "0")) : 0;  // Python keeps microseconds
  const zone = m[9];
  if (zone === undefined) {  // local wall time; setFullYear: years below 100 stay themselves
    const at = new Date(2000, 0, 1, h, mi, s, 0);
    at.setFullYear(y, mo - 1, d);
    const ms = at.getTime();
    return Number.isNaN(ms) ? null : ms / 1000 + micro / 1e6;  // as Python's naive timestamp()
  }
  const at = new Date(Date.UTC(2000, 0, 1, h, mi, s, 0));
  at.setUTCFullYear(y, mo - 1, d);
  let shift = 0;
  if (zone !== "Z") {
    const [zh, zm = "0", zs = "0"] = zone.slice(1).match(/\d\d/g);
    if (Number(zh) > 23 || Number(zm) > 59 || Number(zs) > 59) return null;
    shift = (zone[0] === "-" ? -1 : 1) * (Number(zh) * 3600 + Number(zm) * 60 + Number(zs)) * 1000;
  }
  const ms = at.getTime() - shift;
  return Number.isNaN(ms) ? null : (ms * 1000 + micro) / 1e6;  // as Python's aware timestamp()
}

// A run's `created` / `ended` (seconds since the epoch) as a filter reads it: a number,
// that compares with a date written as text too.
export class When {
  constructor(t) { this.t = t; }
  valueOf() { return this.t; }
  toJSON() { return this.t; }
}

export const asTime = (v) => (typeof v === "number" ? new When(v) : v);
