// Colour theme: follows the system (prefers-color-scheme) unless the user picks light or
// dark with the header's toggle; the choice is remembered in localStorage. The colours
// themselves live in app.css (CSS variables written with light-dark()); this module only
// sets <html data-theme> and keeps the toggle's label in step.

const KEY = "flowillower.theme";
const CHOICES = ["system", "light", "dark"];
const LABELS = { system: "◐ system", light: "☀ light", dark: "☾ dark" };

/** The stored choice: "system", "light" or "dark" (anything else reads as "system"). */
export function themeChoice() {
  let v = null;
  try { v = localStorage.getItem(KEY); } catch (e) { /* storage blocked: follow the system */ }
  return CHOICES.includes(v) ? v : "system";
}

/** The theme in effect now, "light" or "dark", after resolving "system". */
export function effectiveTheme() {
  const c = themeChoice();
  if (c !== "system") return c;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function apply(choice) {
  const root = document.documentElement;
  // "system" removes the attribute so app.css's color-scheme: light dark follows the OS.
  if (choice === "system") root.removeAttribute("data-theme");
  else root.setAttribute("data-theme", choice);
  const btn = document.getElementById("theme-toggle");
  if (btn) {
    btn.textContent = LABELS[choice];
    btn.title = `Colour theme: ${choice} (click to change)`;
    btn.setAttribute("aria-label", `Colour theme: ${choice}`);
  }
  // Pages that paint canvases with theme colours can redraw on this event.
  window.dispatchEvent(new CustomEvent("fw-theme", { detail: { choice, theme: effectiveTheme() } }));
}

/** Store and apply a choice ("system", "light" or "dark"). */
export function setTheme(choice) {
  if (!CHOICES.includes(choice)) throw new Error(`unknown theme: ${choice}`);
  try {
    if (choice === "system") localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, choice);
  } catch (e) { /* storage blocked: the choice lasts for this page only */ }
  apply(choice);
}

/** Apply the remembered theme and add the toggle (system → light → dark) to the header. */
export function initTheme() {
  const header = document.querySelector("header.top");
  if (header && !document.getElementById("theme-toggle")) {
    const btn = document.createElement("button");
    btn.id = "theme-toggle";
    btn.type = "button";
    btn.className = "theme-toggle";
    btn.addEventListener("click", () => {
      setTheme(CHOICES[(CHOICES.indexOf(themeChoice()) + 1) % CHOICES.length]);
    });
    header.append(btn);
  }
  apply(themeChoice());
  // Another tab changed the choice: follow it here too.
  window.addEventListener("storage", (e) => { if (e.key === KEY) apply(themeChoice()); });
  matchMedia("(prefers-color-scheme: dark)").addEventListener?.("change", () => {
    if (themeChoice() === "system") apply("system");
  });
}
