// Home pages of the example shop, seen by a real browser on the canary.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VERSION, canaryBrowser, everyResponseFromTheCanary, visit } from './canary.mjs';

describe('home', () => {
  const state = canaryBrowser();

  test('/ answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/'), VERSION);
  });

  test('/index.html answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/index.html'), VERSION);
  });

  test('/about answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/about'), VERSION);
  });

  test('/contact answers 200 from the canary', async () => {
    assert.equal(await visit(state, '/contact'), VERSION);
  });

  test('every response came from the canary', () => everyResponseFromTheCanary(state));
});
