// Type-checked (never run) by scripts/package-node.sh against the installed
// package's types, as an ESM consumer.
import { GatewayClient, GatewayError, toStruct, type CompleteResponse, type StreamCompleteResponse } from 'llmgateway-grpc-client';

const client = new GatewayClient('localhost:50051', { apiKey: 'fake-key' });
const reply: CompleteResponse = await client.complete(
  {
    model: 'zai/glm-4.7',
    messages: [{ role: 'ROLE_USER', content: 'Hi' }],
    sampling: { temperature: 0.2, max_tokens: 100 },
    tools: [{ name: 'get_weather', parameters: toStruct({ type: 'object' }) }],
  },
  { timeoutMs: null },
);
const total: number | undefined = reply.usage?.total_tokens;
const cost: number | undefined = reply.usage?.cost_usd;
console.log(total, cost, reply.tool_calls.map((call) => JSON.parse(call.arguments)));

for await (const event of client.stream({ model: 'zai/glm-4.7', messages: [{ role: 2, content: 'Hi' }] })) {
  const narrowed: StreamCompleteResponse = event;
  if (narrowed.event === 'content_delta') console.log(narrowed.content_delta.text.length);
  if (narrowed.event === 'done') console.log(narrowed.done.finish_reason === 'FINISH_REASON_STOP');
}

try {
  await client.listModels({ provider: 'PROVIDER_ZAI' });
} catch (error) {
  if (error instanceof GatewayError) {
    const retry: number | null = error.retryAfterSeconds;
    console.log(error.code === 'INVALID_ARGUMENT', error.reason, error.fieldViolations['model'], retry);
  }
}
client.close();
