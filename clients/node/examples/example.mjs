// An llmgateway call from Node.js (ESM): one whole completion, one stream, and
// a failed call with its error details decoded. Needs a gateway: for one on
// localhost:50051 against a fake upstream, no keys needed, run
// `llmgateway demo --keep-running --address localhost:50051`.
//   npm install llmgateway-grpc-client
//   node example.mjs
import { GatewayClient, GatewayError } from 'llmgateway-grpc-client';

const target = process.env.LLMGATEWAY_TARGET ?? 'localhost:50051';
const client = new GatewayClient(target, { apiKey: process.env.LLMGATEWAY_API_KEY });
const ask = (content) => [{ role: 'ROLE_USER', content }];

try {
  const reply = await client.complete({ model: 'zai/glm-4.7', messages: ask('Hi!') });
  console.log(`complete: ${reply.content} [${reply.finish_reason}, ${reply.usage?.total_tokens} tokens]`);

  process.stdout.write('stream: ');
  for await (const event of client.stream({ model: 'openrouter/openai/gpt-4o-mini', messages: ask('Stream, please.') })) {
    if (event.event === 'content_delta') process.stdout.write(event.content_delta.text);
    if (event.event === 'done') console.log(` [${event.done.finish_reason}, served by ${event.done.model}]`);
  }

  try {
    await client.complete({ model: 'no-such-model', messages: ask('Hi!') });
  } catch (error) {
    if (!(error instanceof GatewayError)) throw error;
    console.log(`error: ${error.code} ${error.reason}`);
    for (const [field, problem] of Object.entries(error.fieldViolations)) console.log(`  ${field}: ${problem}`);
    console.log(`  request id ${error.metadata.requestId}, retry after ${error.retryAfterSeconds ?? '-'} s`);
  }
} finally {
  client.close();
}
