// Catalog pages of the example shop, seen by a real browser on the canary.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VERSION, canaryBrowser, everyResponseFromTheCanary, visit } from './canary.mjs';

describe('catalog', () => {
  const state = canaryBrowser();

  test('/products answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/products'), VERSION);
  });

  test('/products/1 answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/products/1'), VERSION);
  });

  test('/products/2 answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/products/2'), VERSION);
  });

  test('/search?q=shoes answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/search?q=shoes'), VERSION);
  });

  test('every response came from the canary', () => everyResponseFromTheCanary(state));
});
