import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir } from '../helpers/tools.js';
import { runCrashRounds } from './crashHarness.js';

test('crash: SIGKILLed writers never lose a changed block (a few dozen rounds)', { timeout: 120_000 }, async (t) => {
  const dir = await tempDir(t, 'tidemark-rct-crash-');
  const started = Date.now();
  const r = await runCrashRounds(dir, 36);
  const ratio = r.changedBytes ? r.reportedBytes / r.changedBytes : 1;
  t.diagnostic(`${r.rounds} crash rounds in ${((Date.now() - started) / 1000).toFixed(1)} s: truly changed ${r.changedBytes} B, reported ${r.reportedBytes} B, superset ratio ${ratio.toFixed(2)}`);
  assert.ok(r.changedBytes > 0, 'the children must have changed something');
  assert.ok(r.reportedBytes >= r.changedBytes);
});
