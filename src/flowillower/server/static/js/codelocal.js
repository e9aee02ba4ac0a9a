// Code snapshots and code diffs of a static export (server/export_code.py wrote them):
// the answers of /api/runs/<id>/code, /code/file and the code part of /api/diff.
import { unifiedFile } from "./linediff.js";

const MAX_FILES = 300;  // changed files diffed at most (the rest listed as changed)

const fail = (status, message) => { throw Object.assign(new Error(message), { status }); };

async function snapshotOf(json, id) {
  const run = await json(`data/runs/${encodeURIComponent(id)}/run.json`);
  return run.snapshot || null;
}

async function treeOf(json, sha) {
  return json(`data/code/trees/${encodeURIComponent(sha)}.json`);
}

const blobPath = (blob) => `data/code/blobs/${blob.slice(0, 2)}/${blob}.json`;

/** /api/runs/<id>/code: the snapshot's files. */
export async function codeTree(json, id) {
  const sha = await snapshotOf(json, id);
  if (!sha) fail(404, `run ${id} has no code snapshot`);
  const doc = await treeOf(json, sha);
  return { run: id, snapshot: sha, files: doc.tree.map((e) => e.path), tree: doc.tree, search: true };
}

/** /api/runs/<id>/code/file?path=: one file's text (cut at the export's size cap). */
export async function codeFile(json, id, path) {
  const { tree } = await codeTree(json, id);
  const entry = tree.find((e) => e.path === path);
  if (!entry) fail(404, `no file '${path}' in the snapshot of run ${id}`);
  return { run: id, path, ...(await json(blobPath(entry.blob))) };
}

/** /api/runs/<id>/code/search?text=: paths of files holding `text` (literal, any case),
 * read from the exported files (each fetched once, a few at a time). */
export async function codeSearch(json, id, text) {
  const { tree } = await codeTree(json, id);
  const needle = text.toLowerCase();
  const hits = new Set();
  let next = 0;
  const worker = async () => {
    while (next < tree.length) {
      const e = tree[next++];
      const doc = await json(blobPath(e.blob)).catch(() => null);
      if (doc && doc.text && doc.text.toLowerCase().includes(needle)) hits.add(e.path);
    }
  };
  if (needle) await Promise.all(Array.from({ length: 6 }, worker));
  return { run: id, text, paths: tree.map((e) => e.path).filter((p) => hits.has(p)).slice(0, 1000) };
}

/** The code part of /api/diff from run a to run b: { diff, truncated, code_error }. */
export async function codeDiff(json, a, b) {
  const [sa, sb] = [await snapshotOf(json, a), await snapshotOf(json, b)];
  const none = !sa ? a : !sb ? b : null;
  if (none) return { diff: null, truncated: false, code_error: `run ${none} has no code snapshot` };
  const [ta, tb] = [(await treeOf(json, sa)).tree, (await treeOf(json, sb)).tree];
  const A = new Map(ta.map((e) => [e.path, e.blob])), B = new Map(tb.map((e) => [e.path, e.blob]));
  const paths = [...new Set([...A.keys(), ...B.keys()])].filter((p) => A.get(p) !== B.get(p)).sort();
  const text = async (blob) => (blob ? json(blobPath(blob)) : null);
  const parts = [];
  for (const path of paths.slice(0, MAX_FILES)) {
    const [da, db] = [await text(A.get(path)), await text(B.get(path))];
    const binary = Boolean(da?.binary || db?.binary);
    parts.push(unifiedFile(path, da ? da.text ?? "" : null, db ? db.text ?? "" : null, binary));
  }
  return { snapshot_a: sa, snapshot_b: sb, diff: parts.length ? `${parts.join("\n")}\n` : "",
    truncated: paths.length > MAX_FILES, code_error: null };
}
