// Content pages of the example shop, seen by a real browser on the canary.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VERSION, canaryBrowser, everyResponseFromTheCanary, visit } from './canary.mjs';

describe('content', () => {
  const state = canaryBrowser();

  test('/help answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/help'), VERSION);
  });

  test('/help/shipping answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/help/shipping'), VERSION);
  });

  test('/help/returns answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/help/returns'), VERSION);
  });

  test('/blog answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/blog'), VERSION);
  });

  test('every response came from the canary', () => everyResponseFromTheCanary(state));
});
