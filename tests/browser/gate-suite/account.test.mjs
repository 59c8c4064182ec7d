// Account pages of the example shop, seen by a real browser on the canary.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VERSION, canaryBrowser, everyResponseFromTheCanary, visit } from './canary.mjs';

describe('account', () => {
  const state = canaryBrowser();

  test('/login answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/login'), VERSION);
  });

  test('/account answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/account'), VERSION);
  });

  test('/account/orders answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/account/orders'), VERSION);
  });

  test('/account/settings answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/account/settings'), VERSION);
  });

  test('every response came from the canary', () => everyResponseFromTheCanary(state));
});
