// What every file of the example gate suite shares: a headless Chromium whose every request
// carries the rollout's CANARY_HEADERS (the trusted override that sends it to the canary), and
// a check that every response came from the canary under test.
//
// Run by the controller as a release gate (crates/canary/tests/gates.rs starts it), with:
//   CANARY_URL, CANARY_HEADERS, CANARY_VERSION, CANARY_SHARD, CANARY_SHARDS, CANARY_REPORT
//   CHROMIUM  the browser (default /usr/bin/chromium)

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

export const URL_BASE = required('CANARY_URL');
export const VERSION = required('CANARY_VERSION');
const HEADERS = JSON.parse(required('CANARY_HEADERS'));

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: this suite runs as a canary release gate`);
  return value;
}

/** Opens one browser for a test file; returns the page factory and the responses seen. */
export function canaryBrowser() {
  const state = { browser: null, context: null, responses: [] };
  before(async () => {
    state.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
    state.context = await state.browser.newContext({ extraHTTPHeaders: HEADERS });
    state.context.on('response', (response) => {
      state.responses.push({ url: response.url(), version: response.headers()['x-canary-version'] });
    });
  });
  after(async () => {
    await state.browser?.close();
  });
  return state;
}

/** Opens `path` in a new page and checks the canary answered it with `status`. */
export async function visit(state, path, status = 200) {
  const page = await state.context.newPage();
  try {
    const response = await page.goto(`${URL_BASE}${path}`);
    assert.equal(response.status(), status, `GET ${path}: expected ${status}, got ${response.status()}`);
    assert.equal(response.headers()['x-canary-version'], VERSION, `GET ${path} was not served by the canary`);
    return (await page.textContent('body')).trim();
  } finally {
    await page.close();
  }
}

/** Every response the browser got in this file came from the canary. */
export function everyResponseFromTheCanary(state) {
  assert.ok(state.responses.length > 0, 'the browser saw no response');
  const others = state.responses.filter((r) => r.version !== VERSION);
  assert.deepEqual(others, [], `responses not from ${VERSION}`);
}
