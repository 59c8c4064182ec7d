// Checkout pages of the example shop, seen by a real browser on the canary.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VERSION, canaryBrowser, everyResponseFromTheCanary, visit } from './canary.mjs';

describe('checkout', () => {
  const state = canaryBrowser();

  test('/checkout answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/checkout'), VERSION);
  });

  test('/checkout/address answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/checkout/address'), VERSION);
  });

  test('/checkout/payment answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/checkout/payment'), VERSION);
  });

  test('/checkout/confirm answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/checkout/confirm'), VERSION);
  });

  test('every response came from the canary', () => everyResponseFromTheCanary(state));
});
