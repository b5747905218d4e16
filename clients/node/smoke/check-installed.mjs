// Run by scripts/package-node.sh from a fresh npm project that installed the
// packed tarball: the package resolves inside that project, works through both
// `import` and `require`, and calls the gateway at LLMGATEWAY_TARGET (unary,
// streaming, and an error with its details decoded).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { GatewayClient, GatewayError } from 'llmgateway-grpc-client';

const require = createRequire(path.join(process.cwd(), 'package.json'));
const installed = require.resolve('llmgateway-grpc-client');
assert.ok(
  installed.startsWith(path.join(process.cwd(), 'node_modules', 'llmgateway-grpc-client') + path.sep),
  `resolved ${installed}, not the installed copy`,
);
const fromRequire = require('llmgateway-grpc-client');
assert.equal(fromRequire.GatewayError, GatewayError, 'import and require must share one GatewayError');

const client = new GatewayClient(process.env.LLMGATEWAY_TARGET ?? 'localhost:50051');
const ask = (content) => [{ role: 'ROLE_USER', content }];
try {
  const reply = await client.complete({ model: 'zai/glm-4.7', messages: ask('unary from npm') });
  assert.equal(reply.content, 'Hello from the fake upstream! You said: unary from npm');
  assert.equal(reply.finish_reason, 'FINISH_REASON_STOP');
  assert.ok(reply.usage.total_tokens > 0);

  let text = '';
  const kinds = [];
  for await (const event of client.stream({ model: 'openrouter/openai/gpt-4o-mini', messages: ask('stream from npm') })) {
    kinds.push(event.event);
    if (event.event === 'content_delta') text += event.content_delta.text;
  }
  assert.equal(text, 'Hello from the fake upstream! You said: stream from npm');
  assert.ok(kinds.filter((kind) => kind === 'content_delta').length > 1, `deltas: ${kinds}`);
  assert.deepEqual(kinds.filter((kind) => kind === 'done'), ['done']);
  assert.equal(kinds.at(-1), 'done');

  await assert.rejects(client.complete({ model: 'no-such-model', messages: ask('hi') }), (error) => {
    assert.ok(error instanceof GatewayError);
    assert.equal(error.code, 'INVALID_ARGUMENT');
    assert.equal(error.reason, 'UNKNOWN_MODEL');
    assert.equal(error.domain, 'llmgateway.v1');
    // As the Python client's errors read: `CODE (REASON): details`.
    assert.equal(error.message, `INVALID_ARGUMENT (UNKNOWN_MODEL): ${error.details}`);
    assert.match(error.fieldViolations.model, /zai\/<model>/);
    return true;
  });
} finally {
  client.close();
}
console.log(`installed package ${installed}: unary, stream and error details OK`);
