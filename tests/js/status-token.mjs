// The status page of a service that wants its token (server.auth_token, loopback not trusted):
// the page asks for it, keeps it in its cookie, and then shows the service live, the tail's
// WebSocket included. Prints "ok token" or exits non-zero naming what failed.
//
// Usage: node status-token.mjs <base url> <chromium path> <token>
import { chromium } from "playwright-core";

const [base, executablePath, token] = process.argv.slice(2);
const WAIT_MS = 30000;

function fail(why) {
  console.log(`fail ${why}`);
  process.exit(1);
}

async function until(what, check) {
  const started = Date.now();
  for (;;) {
    if (await check()) return;
    if (Date.now() - started > WAIT_MS) fail(`the page never showed ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage();
await page.goto(`${base}/`);
await until("the token form", () => page.locator("#auth").isVisible());
if ((await page.locator("#conn").getAttribute("data-state")) === "live") fail("live without the token");
await page.fill('#auth input[name="token"]', token);
await page.click('#auth button[type="submit"]');
await until("the service live", async () => (await page.locator("#conn").getAttribute("data-state")) === "live");
await until("rows in the live tail", async () => (await page.locator("#tail tbody tr").count()) >= 1);
if (await page.locator("#auth").isVisible()) fail("the form stayed after the token was given");
console.log("ok token");
await browser.close();
