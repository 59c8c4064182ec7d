// The dashboard in real headless Chromium, against a running `canary serve` with traffic.
//
// Run by crates/canary/tests/dashboard.rs (`cargo test -p canary --test dashboard`), which
// starts the upstreams, the gateway, the traffic, and passes:
//   CANARY_ADMIN_URL        http://127.0.0.1:PORT of the admin listener
//   CANARY_CANARY_UPSTREAM  host:port of the v2 upstream
//   CANARY_SCREENSHOT       where to save the screenshot of a rollout in progress
//   CANARY_ARTIFACTS        a directory for extra screenshots (phone, dark mode)
//   CHROMIUM                the browser (default /usr/bin/chromium)
// It exits 0 when every check passes and 1 with the failed check otherwise.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const ADMIN = required('CANARY_ADMIN_URL');
const CANARY_UPSTREAM = required('CANARY_CANARY_UPSTREAM');
const SCREENSHOT = required('CANARY_SCREENSHOT');
const ARTIFACTS = process.env.CANARY_ARTIFACTS ?? path.join(import.meta.dirname, 'artifacts');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SERVICE = 'web';
const started = Date.now();
const pageErrors = [];

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set; run this through \`cargo test -p canary --test dashboard\``);
    process.exit(2);
  }
  return value;
}

function log(text) {
  console.log(`[dashboard ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);
}

// ---- Server side ----------------------------------------------------------------------------

async function api(method, apiPath, body) {
  const response = await fetch(`${ADMIN}${apiPath}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const envelope = await response.json();
  return { status: response.status, ...envelope };
}

/** The number of open dashboard sockets, read from /metrics. */
async function sockets() {
  const text = await (await fetch(`${ADMIN}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('canary_admin_websocket_connections '));
  assert.ok(line, `/metrics has no canary_admin_websocket_connections:\n${text.slice(0, 400)}`);
  return Number(line.split(' ')[1]);
}

async function eventually(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last === true || (last !== false && last !== undefined && last !== null)) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what} (last: ${last?.message ?? last})`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function socketsBecome(n, timeoutMs) {
  await eventually(`${n} open dashboard socket(s) in /metrics`, async () => (await sockets()) === n, timeoutMs);
}

async function startRollout(steps) {
  const res = await api('POST', `/api/v1/services/${SERVICE}/rollouts`, {
    version: 'v2',
    upstreams: [CANARY_UPSTREAM],
    steps,
    // This test is about the page, not the judge: in observe mode the steps advance on their
    // hold while the judge's verdicts are still computed and shown.
    analysis: { minRequestsPerVersion: 20, minRequestsPerStep: 5, observe: true },
  });
  assert.equal(res.code, 'OK', `start: ${JSON.stringify(res)}`);
  return res.data.id;
}

async function act(action) {
  const res = await api('POST', `/api/v1/services/${SERVICE}/rollout/${action}`, { reason: 'browser test' });
  assert.equal(res.code, 'OK', `${action}: ${JSON.stringify(res)}`);
}

// ---- Browser side ---------------------------------------------------------------------------

async function launch(initScript) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'canary-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  if (initScript) await context.addInitScript(initScript);
  // A persistent context opens with one blank tab; the test opens its own.
  for (const page of context.pages()) await page.close();
  return { context, dir };
}

async function openTab(context) {
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  await page.goto(`${ADMIN}/`);
  await page.locator('#conn[data-status="live"]').waitFor({ timeout: 15_000 });
  return page;
}

function card(page) {
  return page.locator(`[data-testid="service-${SERVICE}"]`);
}

async function phaseIs(page, phase, rolloutId, timeout = 15_000) {
  await page.locator(`[data-testid="service-${SERVICE}"][data-phase="${phase}"]`).waitFor({ timeout });
  if (rolloutId) {
    await card(page).locator('[data-testid="rollout-id"]', { hasText: rolloutId }).waitFor({ timeout });
  }
}

async function closeAll(pages) {
  for (const page of pages) await page.close();
}

// ---- The scenario ---------------------------------------------------------------------------

async function sharedWorkerScenario() {
  const { context } = await launch();
  try {
    log('three tabs with SharedWorker');
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openTab(context));
    await socketsBecome(1, 10_000);
    // Stay at one: a second socket opening late would be the bug this feature exists to avoid.
    await new Promise((r) => setTimeout(r, 2_000));
    assert.equal(await sockets(), 1, 'three tabs of one browser must share one WebSocket');
    for (const tab of tabs) {
      assert.equal(await tab.locator('#sharing').getAttribute('data-shared'), 'true');
    }

    log('start a rollout: every tab follows');
    const id = await startRollout('10%/20s,50%/5m,100%');
    await Promise.all(tabs.map((tab) => phaseIs(tab, 'progressing', id)));

    log('wait for the second step and the judge, then take the screenshots');
    const main = tabs[0];
    await card(main).locator('[data-testid="step"]', { hasText: '2 of 3' }).waitFor({ timeout: 60_000 });
    await card(main).locator('table.verdicts tbody tr').first().waitFor({ timeout: 15_000 });
    await main.waitForTimeout(8_000); // a few seconds of the new step on the charts
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await main.screenshot({ path: SCREENSHOT, fullPage: true });
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const other = tabs[1];
    await other.emulateMedia({ colorScheme: 'dark' });
    await other.screenshot({ path: path.join(ARTIFACTS, 'dashboard-dark.png'), fullPage: true });
    await other.setViewportSize({ width: 390, height: 844 });
    await other.emulateMedia({ colorScheme: 'light' });
    await other.waitForTimeout(300);
    const overflow = await other.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px on a phone-sized screen`);
    await other.screenshot({ path: path.join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });

    log('close two tabs: the last one still updates, and the worker forgets the closed ones');
    await tabs[1].close();
    // The other tab goes without its goodbye, as a killed or crashed tab does: only the
    // worker's pings can notice it is gone.
    await tabs[2].evaluate(() => {
      const post = MessagePort.prototype.postMessage;
      MessagePort.prototype.postMessage = function (msg, ...rest) {
        if (msg?.type !== 'bye') post.call(this, msg, ...rest);
      };
    });
    await tabs[2].close();
    await act('pause');
    await phaseIs(main, 'paused');
    await act('resume');
    await phaseIs(main, 'progressing');
    await main.locator('#sharing[data-tabs="1"]').waitFor({ timeout: 30_000 });
    assert.equal(await sockets(), 1);

    log('pause and resume from the page');
    await card(main).locator('button[data-action="pause"]').click();
    await phaseIs(main, 'paused');
    await card(main).locator('button[data-action="resume"]').click();
    await phaseIs(main, 'progressing');

    await crossSiteCannotSteer(context);

    log('abort from the page, with confirmation');
    await card(main).locator('button[data-action="abort"]').click();
    const dialog = main.locator('dialog#confirm');
    await dialog.waitFor();
    await dialog.locator('#confirm-reason').fill('stopped from the dashboard test');
    await dialog.locator('#confirm-ok').click();
    await phaseIs(main, 'aborted');
    const after = await api('GET', `/api/v1/services/${SERVICE}/rollout`);
    assert.equal(after.data.id, id);
    assert.equal(after.data.phase, 'aborted');
    assert.match(after.data.reason ?? '', /stopped from the dashboard test/);
    await main.locator('#toast', { hasText: 'aborted' }).waitFor();
    await card(main).locator('[data-testid="history"] tr', { hasText: 'Aborted' }).first().waitFor();

    log('start with bad steps from the form: the clientMessage is shown');
    await card(main).getByRole('button', { name: 'Start a rollout' }).click();
    const form = card(main).locator('[data-testid="start-form"]');
    await form.locator('input[name="version"]').fill('v2');
    await form.locator('input[name="upstreams"]').fill(CANARY_UPSTREAM);
    await form.locator('input[name="steps"]').fill('0%/1s,100%');
    await form.getByRole('button', { name: 'Start', exact: true }).click();
    await main.locator('#toast.toast-error', { hasText: 'first step' }).waitFor();
    assert.equal((await api('GET', `/api/v1/services/${SERVICE}/rollout`)).data.phase, 'aborted');

    log('close every tab: the socket closes within 30 s');
    await main.close();
    await socketsBecome(0, 30_000);
  } finally {
    await context.close();
  }
}

/**
 * A page of another origin on this machine (the canary upstream's port: "same-site" to the
 * browser, since ports do not make sites) posts the classic HTML form and a no-cors fetch to
 * pause the rollout, and tries to open the live feed. The admin listener must refuse all three.
 */
async function crossSiteCannotSteer(context) {
  log('a page of another origin cannot pause the rollout or open the feed');
  const foreign = await context.newPage();
  await foreign.goto(`http://${CANARY_UPSTREAM}/`);
  const pauseUrl = `${ADMIN}/api/v1/services/${SERVICE}/rollout/pause`;
  const feedUrl = `${ADMIN.replace('http://', 'ws://')}/api/v1/stream`;
  const opened = await foreign.evaluate(
    async ({ pauseUrl, feedUrl }) => {
      await fetch(pauseUrl, { method: 'POST', mode: 'no-cors', body: '' }).catch(() => {});
      return new Promise((resolve) => {
        const ws = new WebSocket(feedUrl);
        ws.onopen = () => {
          ws.close();
          resolve(true);
        };
        ws.onerror = () => resolve(false);
      });
    },
    { pauseUrl, feedUrl },
  );
  assert.equal(opened, false, 'a page of another origin opened the live feed');
  await foreign.evaluate((url) => {
    const form = document.createElement('form');
    form.method = 'post';
    form.action = url;
    document.body.append(form);
    form.submit();
  }, pauseUrl);
  await foreign.waitForURL(pauseUrl);
  assert.match(await foreign.textContent('body'), /PERMISSION_DENIED/, 'the form was not refused in the envelope');
  const after = await api('GET', `/api/v1/services/${SERVICE}/rollout`);
  assert.equal(after.data.phase, 'progressing', 'a page of another origin paused the rollout');
  await foreign.close();
}

async function dedicatedWorkerScenario() {
  // Where SharedWorker does not exist, each tab runs the same worker script as a dedicated
  // Worker with its own socket.
  const { context } = await launch(() => {
    delete window.SharedWorker;
  });
  try {
    log('three tabs without SharedWorker');
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openTab(context));
    await socketsBecome(3, 10_000);
    for (const tab of tabs) {
      assert.equal(await tab.locator('#sharing').getAttribute('data-shared'), 'false');
    }

    log('start a rollout from the form in one tab: all three follow');
    const main = tabs[0];
    await card(main).getByRole('button', { name: 'Start a rollout' }).click();
    const form = card(main).locator('[data-testid="start-form"]');
    await form.locator('input[name="version"]').fill('v2');
    await form.locator('input[name="upstreams"]').fill(CANARY_UPSTREAM);
    await form.locator('input[name="steps"]').fill('10%/5m,100%');
    await form.getByRole('button', { name: 'Start', exact: true }).click();
    const current = await eventually('the rollout started from the form', async () => {
      const res = await api('GET', `/api/v1/services/${SERVICE}/rollout`);
      return res.data?.phase === 'progressing' ? res.data : null;
    });
    await Promise.all(tabs.map((tab) => phaseIs(tab, 'progressing', current.id)));
    await act('abort');
    await Promise.all(tabs.map((tab) => phaseIs(tab, 'aborted', current.id)));

    log('close the tabs: their sockets close');
    await closeAll(tabs);
    await socketsBecome(0, 30_000);
  } finally {
    await context.close();
  }
}

const watchdog = setTimeout(() => {
  console.error('[dashboard] the browser test took longer than 5 minutes');
  process.exit(1);
}, 5 * 60_000);

try {
  await sharedWorkerScenario();
  await dedicatedWorkerScenario();
  assert.deepEqual(pageErrors, [], 'the page threw errors');
  log(`all checks passed; screenshot at ${SCREENSHOT}`);
  clearTimeout(watchdog);
} catch (e) {
  console.error(`[dashboard] FAILED: ${e.stack ?? e}`);
  if (pageErrors.length) console.error(`[dashboard] page errors:\n${pageErrors.join('\n')}`);
  process.exit(1);
}
