// The status page in a real browser (Chromium driven by playwright-core), against a running
// service; the Rust test (`tests/it/status_page.rs`) changes the world and tells this script
// over stdin, one word a line; this script answers each with a line (`ok …`) once the page shows
// it, or exits non-zero naming what the page failed to show.
//
// Usage: node status-page.mjs <base url> <screenshot dir> <chromium path> <provider to stall>
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";

const [base, shots, executablePath, stalled] = process.argv.slice(2);
const WAIT_MS = 30000;

const problems = [];
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function fail(why) {
  console.log(`fail ${why}`);
  process.exit(1);
}

async function next(expected) {
  const { value, done } = await lines.next();
  if (done || value.trim() !== expected) fail(`expected "${expected}" from the test, got ${value}`);
}

async function api(path) {
  const response = await fetch(`${base}${path}`);
  return response.json();
}

async function until(what, check) {
  const started = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - started > WAIT_MS) fail(`the page never showed ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const number = (text) => Number(String(text).replace(/[^0-9-]/g, ""));

const browser = await chromium.launch({
  executablePath,
  // Nothing of the browser's own on the network (update checks, sync): the page's requests alone.
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
page.on("console", (m) => {
  if (m.type() === "error" && !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) {
    problems.push(`console: ${m.text()}`);
  }
});
page.on("pageerror", (e) => problems.push(`page error: ${e}`));
page.on("request", (r) => {
  const url = new URL(r.url());
  if (!["http:", "ws:", "data:"].includes(url.protocol) || (url.protocol !== "data:" && url.hostname !== "127.0.0.1")) {
    problems.push(`request left 127.0.0.1: ${r.url()}`);
  }
});
const badges = [];
await page.exposeFunction("noteBadge", (state) => badges.push(state));

// 1. Loads, live, numbers as the API says.
await page.goto(`${base}/`);
await page.evaluate(() => {
  const badge = document.querySelector("#conn");
  new MutationObserver(() => window.noteBadge(badge.dataset.state)).observe(badge, { attributes: true });
});
await until("the live badge", async () => (await page.locator("#conn").getAttribute("data-state")) === "live");
const cell = (chain, field) => page.locator(`#chains tr[data-chain="${chain}"] [data-field="${field}"]`);
const before = (await api("/v1/chains")).chains[0];
await until("the chain's numbers", async () => {
  const shown = number(await cell(before.name, "checkpoint").textContent());
  const after = (await api("/v1/chains")).chains[0];
  return shown >= before.checkpoint && shown <= after.checkpoint;
});
const providers = (await api("/v1/providers")).providers;
for (const p of providers) {
  const row = page.locator(`#providers tr[data-provider="${p.id}"]`);
  await until(`provider ${p.id}`, async () => (await row.count()) === 1);
  const health = await row.locator('[data-field="health"]').textContent();
  if (p.healthy !== !health.includes("unhealthy")) fail(`${p.id}: the API says healthy=${p.healthy}, the page "${health}"`);
}
await until("events in the live tail", async () => (await page.locator("#tail tbody tr").count()) >= 5);
await page.screenshot({ path: `${shots}/status-page.png`, fullPage: false });
console.log("ok loaded");

// 2. Pause, then resume: the rows after the pause are exactly the stored events after its cursor.
// The same when the page is hidden (a background tab asks nothing) and shown again.
async function stopAndGoOn(what, stop, go) {
  await stop();
  const text = await page.locator("#tail-state").textContent();
  const at = number(text.replace(/.*cursor/, ""));
  if (!(at > 0)) fail(`no cursor when ${what}: "${text}"`);
  await new Promise((r) => setTimeout(r, 1500));
  await go();
  const expected = (await api(`/v1/events?after=${at}&kind=block&limit=20&include_removed=true`)).events.map((e) => e.cursor);
  if (expected.length === 0) fail(`nothing was stored while ${what}`);
  await until(`the events stored while ${what}`, async () => {
    const shown = await page.locator("#tail tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.dataset.cursor)));
    const after = shown.filter((c) => c > at).reverse();
    return expected.every((c, i) => after[i] === c);
  });
}
const visibility = (hidden) =>
  page.evaluate((hidden) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
await stopAndGoOn("paused", () => page.click("#tail-toggle"), () => page.click("#tail-toggle"));
console.log("ok resumed");
await stopAndGoOn("hidden", () => visibility(true), () => visibility(false));

// 3. A provider stalled turns unhealthy on the page, and healthy again after.
const health = page.locator(`#providers tr[data-provider="${stalled}"] [data-field="health"]`);
await next("stalled");
await until(`${stalled} unhealthy`, async () => (await health.textContent()).includes("unhealthy"));
await page.screenshot({ path: `${shots}/status-page-unhealthy.png` });
console.log("ok unhealthy");
await next("unstalled");
await until(`${stalled} healthy again`, async () => !(await health.textContent()).includes("unhealthy"));
console.log("ok healthy");

// Its socket dropped by the devnet: counted as `closed` on the page, as the API counts it.
await next("dropped");
const closed = page.locator(`#providers tr[data-provider="${stalled}"] [data-kind="closed"]`);
await until(`${stalled}'s dropped socket shown`, async () => (await closed.count()) === 1);
const shownClosed = number(await closed.textContent());
const counted = (await api("/v1/providers")).providers.find((p) => p.id === stalled).errors_by_class.closed;
if (!(shownClosed >= 1 && shownClosed <= counted)) fail(`the page shows ${shownClosed} closed, the API ${counted}`);
console.log("ok errors");

// 4. Paused and resumed from the page: the API agrees.
const control = page.locator(`#providers tr[data-provider="${stalled}"] [data-field="control"] button`);
await control.click();
await until(`${stalled} paused`, async () => (await health.textContent()).includes("paused"));
const pausedThere = (await api("/v1/providers")).providers.find((p) => p.id === stalled);
if (pausedThere.unhealthy_reason !== "paused") fail(`the API does not say ${stalled} is paused`);
await control.click();
await until(`${stalled} resumed`, async () => !(await health.textContent()).includes("unhealthy"));
console.log("ok paused and resumed");

// 5. The service restarts under the page: it reconnects by itself and the tail carries on.
await next("stopped");
await until("the reconnecting badge", async () => badges.includes("reconnecting"));
console.log("ok offline");
await next("restarted");
const lastBefore = number(await page.locator("#tail tbody tr").first().getAttribute("data-cursor"));
await until("live again", async () => (await page.locator("#conn").getAttribute("data-state")) === "live");
await until("new events after the restart", async () => {
  const newest = number(await page.locator("#tail tbody tr").first().getAttribute("data-cursor"));
  return newest > lastBefore;
});
const cursors = await page.locator("#tail tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.dataset.cursor)));
if (new Set(cursors).size !== cursors.length) fail("a row is shown twice after the restart");
await page.screenshot({ path: `${shots}/status-page-after-restart.png` });
console.log("ok recovered");

if (problems.length > 0) fail(problems.join("; "));
await browser.close();
console.log("ok done");
