// An abort in real headless Chromium: a page the canary served, with lazy chunks it has not
// fetched yet, opens them after the abort with no failed request, and its next route change
// reloads it from stable because a response said its version is gone.
//
// Run by crates/canary/tests/rollback_grace.rs (`cargo test -p canary --test rollback_grace`),
// which starts the two app versions (crates/canary/tests/support/app.rs), the gateway and a
// rollout of v2 at 50 %, and passes:
//   CANARY_ADMIN_URL    http://127.0.0.1:PORT of the admin listener
//   CANARY_SERVICE_URL  http://127.0.0.1:PORT of the service `web`
//   CHROMIUM            the browser (default /usr/bin/chromium)
// It exits 0 when every check passes and 1 with the failed check otherwise.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const ADMIN = required('CANARY_ADMIN_URL');
const SERVICE_URL = required('CANARY_SERVICE_URL');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const started = Date.now();

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set; run this through \`cargo test -p canary --test rollback_grace\``);
    process.exit(2);
  }
  return value;
}

function log(text) {
  console.log(`[rollback ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);
}

async function launch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'canary-chromium-'));
  return chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
}

/** Every request of `page` that failed or answered 4xx/5xx, as text. */
function watchFailures(page) {
  const failures = [];
  page.on('requestfailed', (r) => failures.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) failures.push(`${r.url()}: ${r.status()}`);
  });
  page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));
  return failures;
}

async function appVersion(page) {
  await page.waitForFunction(() => window.appReady === true);
  return page.evaluate(() => document.querySelector('meta[name=app-version]').content);
}

/** A browser whose page came from the canary: fresh profiles load the page until one does. */
async function canaryPage() {
  for (let attempt = 0; attempt < 32; attempt++) {
    const context = await launch();
    const page = context.pages()[0] ?? (await context.newPage());
    const failures = watchFailures(page);
    await page.goto(`${SERVICE_URL}/`);
    if ((await appVersion(page)) === 'v2') return { context, page, failures };
    await context.close();
  }
  throw new Error('no profile of 32 landed on the canary at 50 %');
}

async function main() {
  const { context, page, failures } = await canaryPage();
  log('a page from v2 is open; its chunks are not loaded yet');
  const chunkRequests = [];
  page.on('request', (r) => {
    if (r.url().includes('/assets/')) chunkRequests.push(r.url());
  });

  const response = await fetch(`${ADMIN}/api/v1/services/web/rollout/abort`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'browser test' }),
  });
  const aborted = await response.json();
  assert.equal(aborted.data?.phase, 'aborted', `abort: ${JSON.stringify(aborted)}`);
  log('the rollout is aborted');

  for (const chunk of ['alpha', 'beta']) {
    const opened = await page.evaluate((name) => window.openChunk(name), chunk);
    assert.deepEqual(opened, { chunk, chunkVersion: 'v2', dataVersion: 'v2', versionGone: true }, chunk);
  }
  assert.equal(chunkRequests.length, 2, `each chunk fetched once after the abort: ${chunkRequests}`);
  assert.deepEqual(failures, [], 'no request of the open page failed');
  log('both chunks opened from v2 after the abort, no failed request; the page knows its version is gone');

  const how = await page.evaluate(() => window.routeChange('/orders'));
  assert.equal(how, 'reload');
  await page.waitForURL(`${SERVICE_URL}/orders`);
  assert.equal(await appVersion(page), 'v1', 'the next route change loads the page from stable');
  const opened = await page.evaluate(() => window.openChunk('beta'));
  assert.deepEqual(opened, { chunk: 'beta', chunkVersion: 'v1', dataVersion: 'v1', versionGone: false });
  assert.deepEqual(failures, [], 'no request failed after the reload either');
  log('the route change reloaded the page from v1; its chunks come from v1');
  await context.close();
}

main().then(
  () => {
    log('all checks passed');
    process.exit(0);
  },
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
