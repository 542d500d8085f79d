// Loads CPython's python.html in Debian's headless Chromium, starts the REPL, types
// print(1+1) into the terminal and checks that Python printed 2. Saves a screenshot.
//
//   node tests/browser/repl.mjs URL SCREENSHOT.png
//
// The page's terminal draws on a canvas, so the test reads Python's output where the page
// receives it: the stdout/stderr messages of the page's Web Worker (a wrapper installed
// before the page's own scripts run).
import { chromium } from 'playwright-core';

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node repl.mjs URL SCREENSHOT.png');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  page.on('requestfailed', (r) => console.error(`[request failed] ${r.url()} ${r.failure()?.errorText}`));
  await page.addInitScript(() => {
    window.__pyOut = '';
    const RealWorker = window.Worker;
    window.Worker = class extends RealWorker {
      constructor(...args) {
        super(...args);
        this.addEventListener('message', (e) => {
          const d = e.data || {};
          const c = d.type === 'stdout' ? d.stdout : d.type === 'stderr' ? d.stderr : undefined;
          if (typeof c === 'number') window.__pyOut += String.fromCharCode(c);
        });
      }
    };
  });
  await page.goto(url, { waitUntil: 'load' });
  const isolated = await page.evaluate(() => window.crossOriginIsolated);
  if (!isolated) throw new Error('page is not cross-origin isolated: COOP/COEP headers missing');
  await page.waitForSelector('#repl:not([disabled])', { timeout: 120_000 });
  await page.click('#repl');
  await page.waitForFunction(() => window.__pyOut.includes('>>> '), null, { timeout: 120_000 });
  await page.click('#terminal');
  await page.keyboard.type('print(1+1)');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => /(^|\n|>>> )2\r?\n/.test(window.__pyOut), null, { timeout: 60_000 });
  const out = await page.evaluate(() => window.__pyOut);
  console.log(`python printed: ${JSON.stringify(out.slice(-200))}`);
  console.log('browser REPL: print(1+1) -> 2');
  await page.waitForTimeout(300); // let the terminal draw the answer before the screenshot
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  failed = true;
  console.error(`browser test FAILED: ${e.message}`);
  for (const page of browser.contexts().flatMap((c) => c.pages())) {
    console.error(`python output so far: ${JSON.stringify(await page.evaluate(() => window.__pyOut).catch(() => '?'))}`);
    await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
