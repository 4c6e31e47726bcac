// Keeps the status page open and live in headless Chromium until killed (for the ingest
// benchmark's "page open" runs). Prints "open" once the page shows the service live.
// Usage: node page-open.mjs <base url> <chromium path>
import { chromium } from "playwright-core";

const [base, executablePath] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
await page.goto(`${base}/`);
await page.waitForSelector('#conn[data-state="live"]', { timeout: 30000 });
await page.waitForSelector("#tail tbody tr", { timeout: 30000 });
console.log("open");
await new Promise(() => {}); // until killed
