// Line diffs in the browser, for static exports (no git there): Myers' O(ND) shortest
// edit script over lines, formatted as a git-style unified diff so that the page reads it
// exactly like the server's `git diff` (diffview.js).

const MAX_EDITS = 2000;  // beyond this many edits a file shows as wholly replaced

// Shortest edit script between arrays a and b as ops [" " | "-" | "+", line]; common
// head and tail are trimmed first (most of a changed source file).
export function diffLines(a, b) {
  let head = 0, tail = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head += 1;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail += 1;
  const A = a.slice(head, a.length - tail), B = b.slice(head, b.length - tail);
  const mid = middle(A, B);
  return [...a.slice(0, head).map((l) => [" ", l]), ...mid, ...a.slice(a.length - tail).map((l) => [" ", l])];
}

function middle(A, B) {
  const n = A.length, m = B.length, max = n + m;
  if (!n || !m) return [...A.map((l) => ["-", l]), ...B.map((l) => ["+", l])];
  const off = max + 1;
  let v = new Int32Array(2 * max + 3);
  const trace = [];
  let found = -1;
  for (let d = 0; d <= Math.min(max, MAX_EDITS); d++) {
    trace.push(v.slice(off - d - 1, off + d + 2));  // only the diagonals step d can read
    const next = v;
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[off + k - 1] < v[off + k + 1]) ? v[off + k + 1] : v[off + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && A[x] === B[y]) { x += 1; y += 1; }
      next[off + k] = x;
      if (x >= n && y >= m) { found = d; break; }
    }
    v = next;
    if (found >= 0) break;
  }
  if (found < 0) return [...A.map((l) => ["-", l]), ...B.map((l) => ["+", l])];
  // Walk back through the saved diagonals: each step is one insert or delete plus a snake.
  const ops = [];
  let x = n, y = m;
  for (let d = found; d > 0; d--) {
    const saved = trace[d], at = (k) => saved[k + d + 1];
    const k = x - y;
    const down = k === -d || (k !== d && at(k - 1) < at(k + 1));
    const pk = down ? k + 1 : k - 1;
    const px = at(pk), py = px - pk;
    while (x > px + (down ? 0 : 1) && y > py + (down ? 1 : 0)) { ops.push([" ", A[x - 1]]); x -= 1; y -= 1; }
    if (down) { ops.push(["+", B[y - 1]]); y -= 1; } else { ops.push(["-", A[x - 1]]); x -= 1; }
  }
  while (x > 0 && y > 0) { ops.push([" ", A[x - 1]]); x -= 1; y -= 1; }
  return ops.reverse();
}

const split = (text) => {
  if (!text) return [];
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
};

/** Hunks of `ops` with `context` lines around each change, as unified diff text lines. */
export function hunks(ops, context = 3) {
  const out = [];
  const changed = ops.map((op) => op[0] !== " ");
  let i = 0;
  const oldAt = [], newAt = [];
  let o = 1, nn = 1;
  for (const op of ops) { oldAt.push(o); newAt.push(nn); if (op[0] !== "+") o += 1; if (op[0] !== "-") nn += 1; }
  while (i < ops.length) {
    if (!changed[i]) { i += 1; continue; }
    let start = Math.max(0, i - context), end = i;
    // Extend while the next change is within 2 * context unchanged lines.
    for (;;) {
      while (end < ops.length && changed[end]) end += 1;
      let j = end;
      while (j < ops.length && !changed[j] && j - end < 2 * context) j += 1;
      if (j < ops.length && changed[j]) { end = j; continue; }
      end = Math.min(ops.length, end + context);
      break;
    }
    const part = ops.slice(start, end);
    const olds = part.filter((op) => op[0] !== "+").length, news = part.filter((op) => op[0] !== "-").length;
    const o0 = olds ? oldAt[start] : oldAt[start] - 1, n0 = news ? newAt[start] : newAt[start] - 1;
    out.push(`@@ -${o0},${olds} +${n0},${news} @@`, ...part.map(([t, l]) => t + l));
    i = end;
  }
  return out;
}

/** A git-style unified diff of one file from text `a` (null: added) to `b` (null: removed). */
export function unifiedFile(path, a, b, binary = false) {
  const head = [`diff --git a/${path} b/${path}`];
  if (a === null) head.push("new file mode 100644");
  if (b === null) head.push("deleted file mode 100644");
  if (binary) return [...head, `Binary files ${a === null ? "/dev/null" : `a/${path}`} and ${b === null ? "/dev/null" : `b/${path}`} differ`].join("\n");
  head.push(a === null ? "--- /dev/null" : `--- a/${path}`, b === null ? "+++ /dev/null" : `+++ b/${path}`);
  return [...head, ...hunks(diffLines(split(a), split(b)))].join("\n");
}
