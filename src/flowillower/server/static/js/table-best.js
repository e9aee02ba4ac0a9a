// The runs table's "best" marker: per numeric metric column, the best value among the
// matched runs (min for losses and errors, max for accuracies and scores; the user flips
// a column whose name says neither, and the choice travels in the URL as `best`).
import { api } from "./api.js";

// Whole words of a metric name (split at / _ . - and spaces) that say which way is better.
const MIN_WORDS = new Set(["loss", "losses", "err", "error", "errors", "mae", "mse", "rmse",
  "nll", "ppl", "perplexity", "fid", "wer", "cer", "time", "latency", "regret", "cost"]);
const MAX_WORDS = new Set(["acc", "accuracy", "f1", "auc", "auroc", "bleu", "rouge", "precision",
  "recall", "score", "reward", "rewards", "return", "iou", "miou", "map", "ap", "top1", "top5",
  "dice", "psnr", "ssim", "r2", "sharpe"]);

/** "min", "max", or null when the name of the metric says neither. */
export function goalFromName(metric) {
  const words = String(metric || "").toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);
  // Prefixes too: train_loss_ema, val_err_rate, accuracy@5 already split; "lossG" is not.
  if (words.some((w) => MIN_WORDS.has(w) || /^(loss|err|perplex)/.test(w))) return "min";
  if (words.some((w) => MAX_WORDS.has(w) || /^(acc|rouge|bleu)/.test(w))) return "max";
  return null;
}

/** The goal of a column: the user's choice, else the name's, else the server's guess.
 * `known` says whether the name alone decided it (the header then needs no toggle hint). */
export function goalOf(col, overrides) {
  const chosen = overrides?.[col.key];
  if (chosen === "min" || chosen === "max") return { goal: chosen, known: true, chosen: true };
  const named = goalFromName(col.metric || col.label);
  if (named) return { goal: named, known: true, chosen: false };
  return { goal: col.goal === "min" ? "min" : "max", known: false, chosen: false };
}

/** Whether a column takes a best marker: a metric's statistic (numbers). */
export function marksBest(col) {
  return col.group === "metrics" && col.stat !== "count";
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** The best finite number of `values` for `goal`, or undefined when there is none. */
export function bestOf(values, goal) {
  let best;
  for (const v of values) {
    if (!isNum(v)) continue;
    if (best === undefined || (goal === "min" ? v < best : v > best)) best = v;
  }
  return best;
}

/** Best values of the marked columns, computed here when every matched row is loaded and
 * asked of the server when only some are: every column not yet known in ONE request
 * (`/api/best`, one pass over the matched runs; a static export answers it from its
 * rows). `loaded` are the rows in hand, `complete` whether they are all the matched
 * ones, `scope` the table's {q, hidden}. Answers
 * land in `cache` (key|goal -> value, or null for none) and `done()` redraws. */
export function bestValues(cols, overrides, loaded, complete, cache, scope, done) {
  const out = new Map();
  const asking = [];
  for (const col of cols) {
    if (!marksBest(col)) continue;
    const { goal } = goalOf(col, overrides);
    if (complete) {
      const v = bestOf(loaded.map((r) => r.cells?.[col.key]), goal);
      if (v !== undefined) out.set(col.key, { value: v, goal });
      continue;
    }
    const id = `${col.key}|${goal}`;
    if (!cache.has(id)) {
      cache.set(id, undefined);  // asked: once per column and goal
      asking.push({ key: col.key, goal, id });
    }
    const v = cache.get(id);
    if (v !== undefined && v !== null) out.set(col.key, { value: v, goal });
  }
  if (asking.length) {
    api.get("best", { q: scope.q, hidden: scope.hidden, col: asking.map((a) => a.key), goal: asking.map((a) => a.goal) })
      .then((res) => {
        for (const a of asking) {
          const b = res.best?.[a.key];
          cache.set(a.id, b && b.goal === a.goal && isNum(b.value) ? b.value : null);
        }
        done();
      }).catch(() => asking.forEach((a) => cache.set(a.id, null)));
  }
  return out;
}

/** Parse the `best` setting of a link: {"last:foo": "min", ...}. */
export function parseGoals(raw) {
  try {
    const v = typeof raw === "string" ? JSON.parse(raw) : raw;
    const out = {};
    for (const [k, g] of Object.entries(v && typeof v === "object" ? v : {})) {
      if (g === "min" || g === "max") out[k] = g;
    }
    return out;
  } catch { return {}; }
}
