// Drives the explorer in Debian's headless Chromium with playwright-core (never a downloaded browser).
// Usage: node explorer_browser.mjs URL QUERY ARTIFACTS_DIR
// Protocol with the pytest test, one JSON object per line: it prints {"step":"sealed",...} once the search
// shows QUERY sealed, then waits for a line on stdin (the test mines a block), then waits for "anchored"
// and prints {"step":"done",...}. Screenshots: explorer-loaded.png, explorer-sealed.png, explorer-anchored.png.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const [url, query, artifacts] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "btcl2-chromium-"));
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const reader = createInterface({ input: process.stdin });
const lines = reader[Symbol.asyncIterator]();

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("#batches tbody tr[data-batch]", { timeout: 20000 });
  await page.waitForSelector("#conservation", { timeout: 20000 });
  const title = await page.title();
  const conservation = await page.textContent("#conservation");
  await page.screenshot({ path: join(artifacts, "explorer-loaded.png"), fullPage: true });

  await page.fill("#q", query);
  await page.click("#search button");
  await page.waitForSelector('#result-status [data-status="sealed"]', { timeout: 20000 });
  const stages = await page.$$eval("#result tr[data-stage]", (rows) => rows.map((r) => [r.dataset.stage, r.dataset.done]));
  const resultText = await page.textContent("#result");
  await page.screenshot({ path: join(artifacts, "explorer-sealed.png"), fullPage: true });
  say({ step: "sealed", title, conservation, stages, resultText });

  await lines.next();  // the test has mined a block
  await page.waitForSelector('#result-status [data-status="anchored"], #result-status [data-status="final"]', { timeout: 30000 });
  const after = await page.textContent("#result-status");
  const batchRows = await page.$$eval("#batches tbody tr[data-batch]", (rows) => rows.map((r) => r.innerText));
  await page.screenshot({ path: join(artifacts, "explorer-anchored.png"), fullPage: true });
  say({ step: "done", status: after.trim(), batchRows, errors });
} finally {
  reader.close();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
