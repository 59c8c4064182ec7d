// Cart pages of the example shop, seen by a real browser on the canary.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VERSION, canaryBrowser, everyResponseFromTheCanary, visit } from './canary.mjs';

describe('cart', () => {
  const state = canaryBrowser();

  test('/cart answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/cart'), VERSION);
  });

  test('/cart/add?id=1 answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/cart/add?id=1'), VERSION);
  });

  test('/cart/remove?id=1 answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/cart/remove?id=1'), VERSION);
  });

  test('/cart/summary answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/cart/summary'), VERSION);
  });

  test('every response came from the canary', () => everyResponseFromTheCanary(state));
});
