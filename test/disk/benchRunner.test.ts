import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { run } from '../helpers/tools.js';

const BENCH = fileURLToPath(new URL('../../bench/run.js', import.meta.url));
const SOAK = fileURLToPath(new URL('../../bench/soak.js', import.meta.url));

test('bench runner: an unknown bench name is a usage error listing the benches; soak likewise', () => {
  const b = run(process.execPath, [BENCH, 'no-such-bench'], { allowFail: true });
  assert.equal(b.status, 2);
  assert.match(b.stderr, /no benchmark named no-such-bench; available: .*\bdisk\b/);
  assert.doesNotMatch(b.stderr, /available: .*\b(run|soak)\b/);
  const s = run(process.execPath, [SOAK, 'no-such-soak'], { allowFail: true });
  assert.equal(s.status, 2);
  assert.match(s.stderr, /no soak named no-such-soak/);
});
