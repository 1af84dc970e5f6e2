// Drives the Causeway console in Debian's Chromium (playwright-core, never
// a downloaded browser), one step per run; tests/console.rs runs the steps
// between what real XMPP and Matrix clients do.
//
//   node drive.cjs STEP [ARGS…]
//
// Environment: PLAYWRIGHT (the playwright-core module directory), CONSOLE
// (http://127.0.0.1:PORT), STATE (the browser's cookies between steps),
// SHOTS (where screenshots go), TOKEN (an admin token).
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT);
const path = require("path");
const fs = require("fs");

const base = process.env.CONSOLE;
const state = process.env.STATE;
const shots = process.env.SHOTS;
const [step, ...args] = process.argv.slice(2);

function check(ok, what) {
  if (!ok) throw new Error("console check failed: " + what);
}

// What every page must have: a language, one h1, a label for every field,
// a name for every button.
async function accessible(page) {
  const problems = await page.evaluate(() => {
    const out = [];
    if (!document.documentElement.lang) out.push("no lang on <html>");
    if (document.querySelectorAll("h1").length !== 1) out.push("not exactly one h1");
    for (const f of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
      const labelled = (f.id && document.querySelector('label[for="' + f.id + '"]')) || f.getAttribute("aria-label");
      if (!labelled) out.push("a field without a label: " + (f.name || f.outerHTML));
    }
    for (const b of document.querySelectorAll("button")) {
      if (!(b.textContent.trim() || b.getAttribute("aria-label"))) out.push("a button without a name");
    }
    return out;
  });
  check(problems.length === 0, problems.join("; "));
}

async function shot(page, name) {
  await accessible(page);
  if (shots) await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
}

async function main() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-gpu"],
  });
  const context = await browser.newContext({
    viewport: { width: 1200, height: 800 },
    storageState: fs.existsSync(state) ? state : undefined,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // A refused login answers 401, a form with mistakes 422 (the browser
  // says so as an error): that
  // is meant; any other error of the page or its script is not.
  page.on("console", (m) => { if (m.type() === "error" && !/status of (401|422)/.test(m.text())) errors.push(m.text()); });
  try {
    await steps[step](page, context, ...args).catch(async (e) => {
      // What the page showed when the step failed.
      const text = await page.locator("main").innerText().catch(() => "");
      if (shots) await page.screenshot({ path: path.join(shots, "failed-" + step + ".png"), fullPage: true }).catch(() => {});
      throw new Error(e.message + "\n--- the page (" + page.url() + ") ---\n" + text);
    });
    check(errors.length === 0, "errors on the page: " + errors.join("; "));
    await context.storageState({ path: state });
  } finally {
    await browser.close();
  }
}

const steps = {
  // Log in (a wrong token first), see the overview update by itself.
  async login(page, context) {
    await page.goto(base + "/admin/");
    check(page.url().endsWith("/admin/login"), "not logged in: the login page, not " + page.url());
    await page.getByLabel("Admin token").fill("cwa_not-a-token");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("alert").filter({ hasText: "not an admin token" }).waitFor();
    await shot(page, "login");
    await page.getByLabel("Admin token").fill(process.env.TOKEN);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(base + "/admin/overview");
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "causeway_admin");
    check(session && session.httpOnly && session.sameSite === "Strict", "an HttpOnly, SameSite=Strict session cookie");
    // The live view: the overview's time moves without a reload.
    const first = await page.locator("#updated").textContent();
    await page.waitForFunction((t) => document.querySelector("#updated").textContent !== t, first, { timeout: 10000 });
    await page.locator('#bridges tr[data-bridge="xmpp"] td[data-field="up"]', { hasText: "up" }).waitFor();
    await page.locator('[data-total="events_per_minute"]').filter({ hasNotText: "…" }).waitFor();
    await shot(page, "overview");
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.locator("#bridges").waitFor();
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    check(!wide, "the overview fits a phone's width (tables scroll inside their box)");
    await shot(page, "overview-phone");
  },

  // Make a portal: a mistake shown beside its field first, then the real one.
  async portal(page, context, id, xmppRoom, matrixRoom) {
    await page.goto(base + "/admin/portals");
    await page.getByLabel("Portal id").fill(id);
    await page.getByLabel("Bridge 1", { exact: true }).selectOption("xmpp");
    await page.getByLabel("Room 1", { exact: true }).fill("not a room");
    await page.getByLabel("Bridge 2", { exact: true }).selectOption("matrix");
    await page.getByLabel("Room 2", { exact: true }).fill(matrixRoom);
    await page.getByRole("button", { name: "Make the portal" }).click();
    const error = page.locator("#room_0-error");
    await error.waitFor();
    check((await page.getByLabel("Room 1", { exact: true }).getAttribute("aria-invalid")) === "true", "the wrong field is marked");
    check((await page.getByLabel("Room 2", { exact: true }).inputValue()) === matrixRoom, "what was typed is kept");
    await shot(page, "portal-errors");
    await page.getByLabel("Room 1", { exact: true }).fill(xmppRoom);
    await page.getByRole("button", { name: "Make the portal" }).click();
    await page.waitForURL(base + "/admin/portals/" + id);
    await page.getByRole("rowheader", { name: xmppRoom }).waitFor();
    await page.getByRole("rowheader", { name: matrixRoom }).waitFor();
    await shot(page, "portal");
    await page.goto(base + "/admin/portals");
    await page.getByRole("link", { name: id }).waitFor();
    await shot(page, "portals");
  },

  // The portal's page once a message crossed: the last delivery is shown.
  async delivered(page, context, id) {
    await page.goto(base + "/admin/portals/" + id);
    const ago = await page.locator("table tbody tr").filter({ hasText: "ago" }).count();
    check(ago >= 1, "a room of the portal shows its last delivery");
    const joined = await page.locator('td[data-field="joined"]').allTextContents();
    check(joined.length === 2 && joined.every((j) => j === "joined"), "the bridges sit in both rooms: " + joined.join(", "));
    await shot(page, "portal-delivered");
  },

  // A broadcast to a portal's rooms: a target that names nothing is
  // refused with why; then it is sent, and its page follows each room
  // until every one has it.
  async broadcast(page, context, portal, text) {
    await page.goto(base + "/admin/broadcasts");
    await page.getByLabel("To").fill("portal:nowhere");
    await page.getByLabel("Announcement").fill(text);
    await page.getByRole("button", { name: "Send the broadcast" }).click();
    await page.locator(".notice.error", { hasText: "no portal" }).waitFor();
    await page.getByLabel("To").fill("portal:" + portal);
    await page.getByRole("button", { name: "Send the broadcast" }).click();
    await page.waitForURL(/\/admin\/broadcasts\/b-/);
    await page.locator("#state", { hasText: "State: done" }).waitFor({ timeout: 30000 });
    const states = await page.locator("#recipients tbody td:nth-child(4)").allTextContents();
    check(states.length === 2 && states.every((s) => s === "delivered"), "each room delivered: " + states.join(", "));
    await shot(page, "broadcast");
    await page.goto(base + "/admin/broadcasts");
    await page.locator("#broadcasts tbody tr", { hasText: "done" }).first().waitFor();
    await shot(page, "broadcasts");
  },

  // Retry the one dead letter.
  async retry(page, context, room) {
    await page.goto(base + "/admin/outbox?state=dead");
    const row = page.locator("#outbox tbody tr").filter({ hasText: room });
    await row.first().waitFor();
    check((await row.count()) === 1, "one dead letter for " + room);
    await shot(page, "outbox");
    await row.getByRole("button", { name: "Retry" }).click();
    await page.waitForURL(/\/admin\/outbox/);
    await page.locator("#outbox caption", { hasText: "0 dead letters" }).waitFor();
  },

  // Search the archive.
  async search(page, context, word, expected, portal) {
    await page.goto(base + "/admin/archive");
    await page.getByLabel("Words").fill(word);
    await page.getByRole("button", { name: "Search" }).click();
    await page.locator(".hits li", { hasText: expected }).first().waitFor();
    await shot(page, "archive");
    // An export of the portal as a printable page: progress, then the file.
    await page.getByLabel("Format").selectOption("html");
    await page.getByLabel("Portal (empty: all)").fill(portal);
    await page.getByRole("button", { name: "Export", exact: true }).click();
    await page.waitForURL(/\/admin\/archive\/exports\//);
    await page.locator("progress").waitFor();
    const link = page.locator("#download");
    await link.waitFor({ timeout: 20000 });
    await shot(page, "export");
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    check(/^causeway-.*\.html$/.test(download.suggestedFilename()), "the file's name: " + download.suggestedFilename());
    const saved = path.join(path.dirname(state), "export.html");
    await download.saveAs(saved);
    check(fs.readFileSync(saved, "utf8").includes(expected), "the export holds what was said");
  },

  // The audit log and the people.
  async audit(page) {
    await page.goto(base + "/admin/audit");
    for (const action of ["login", "portal.create", "broadcast.send", "outbox.retry", "archive.search", "archive.export", "archive.download"]) {
      await page.locator("#audit tbody td", { hasText: action }).first().waitFor();
    }
    await shot(page, "audit");
    await page.goto(base + "/admin/people");
    await page.getByRole("rowheader", { name: "alice" }).waitFor();
    await shot(page, "people");
  },

  // Log out: the pages want a login again.
  async logout(page) {
    await page.goto(base + "/admin/overview");
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(base + "/admin/login");
    await page.goto(base + "/admin/overview");
    check(page.url().endsWith("/admin/login"), "logged out");
  },
};

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
