// Saved views: the header's "Views" menu lists the store's named views (links to UI
// addresses: every page keeps its whole state in the URL hash) and saves the current one.
// Views live in the store (<store>/views/, /api/views), so every browser and teammate on
// this store sees the same list; a static export lists the views it was exported with.
import { clear, h } from "./dom.js";
import { api } from "./api.js";

let menu = null;

function pageName(hash) {
  const page = hash.replace(/^#\/?/, "").split(/[/?]/)[0];
  return page || "runs";
}

async function refresh(list, status) {
  clear(list);
  let views = [];
  try {
    views = (await api.get("views")).views || [];
  } catch (e) {
    status.textContent = `Could not read saved views: ${e.message}`;
    return;
  }
  if (!views.length) {
    list.append(h("li", { class: "muted", text: "No saved views yet." }));
    return;
  }
  for (const v of views) {
    const link = h("a", { href: v.hash, text: v.name, title: v.hash });
    link.addEventListener("click", () => { menu.open = false; });
    const item = h("li", {}, link, h("span", { class: "muted view-page", text: pageName(v.hash) }));
    if (!api.readonly) {
      const del = h("button", { type: "button", class: "view-del", text: "×",
        title: `Delete the view "${v.name}"`, "aria-label": `Delete the view ${v.name}` });
      del.addEventListener("click", async () => {
        if (!confirm(`Delete the saved view "${v.name}"?`)) return;
        try {
          await api.del(`views/${encodeURIComponent(v.name)}`);
          status.textContent = `Deleted "${v.name}".`;
        } catch (e) { status.textContent = `Not deleted: ${e.message}`; }
        refresh(list, status);
      });
      item.append(del);
    }
    list.append(item);
  }
}

/** Add the "Views" menu to the page header (once). */
export function initViews() {
  const header = document.querySelector("header.top");
  if (!header || document.getElementById("views-menu")) return;
  const list = h("ul", { class: "views-list" });
  const status = h("p", { class: "muted views-status", role: "status" });
  const body = h("div", { class: "views-body" }, list);
  if (!api.readonly) {
    const name = h("input", { type: "text", placeholder: "name of this view", maxlength: "100",
      "aria-label": "Name of the view to save", class: "views-name" });
    const save = h("button", { type: "submit", text: "Save this view" });
    const form = h("form", { class: "views-form" }, name, save);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const label = name.value.trim();
      if (!label) { status.textContent = "Give the view a name."; name.focus(); return; }
      try {
        await api.put("views", { name: label, hash: location.hash || "#/" });
        status.textContent = `Saved "${label}".`;
        name.value = "";
      } catch (err) { status.textContent = `Not saved: ${err.message}`; }
      refresh(list, status);
    });
    body.append(form);
  } else {
    body.append(h("p", { class: "muted", text: "Views saved with `flowillower ui` (read-only here)." }));
  }
  body.append(status);
  menu = h("details", { id: "views-menu", class: "views-menu" },
    h("summary", { text: "Views", title: "Saved views of this store" }), body);
  menu.addEventListener("toggle", () => { if (menu.open) { status.textContent = ""; refresh(list, status); } });
  menu.addEventListener("keydown", (e) => { if (e.key === "Escape") { menu.open = false; menu.querySelector("summary").focus(); } });
  const nav = header.querySelector("nav");
  (nav || header).after(menu);
}
