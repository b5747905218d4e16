// Type-checked (never run) by scripts/package-node.sh against the installed
// package's types, as an ESM consumer.
import {
  GatewayClient,
  GatewayError,
  toStruct,
  type CompleteResponse,
  type RoutingDecision,
  type RoutingHints,
  type SkipReason,
  type StreamCompleteResponse,
} from 'llmgateway-grpc-client';

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
  if (narrowed.event === 'done') console.log(narrowed.done.routing?.chosen);
}

// A routed call: hints in, the decision out (null unless a route served).
const hints: RoutingHints = { task: 'TASK_CODE', cost_tier: 1, session_id: 'conversation-1', explain: true };
const routed = await client.complete({ model: 'route/default', messages: [{ role: 'ROLE_USER', content: 'Hi' }], routing: hints });
const decision: RoutingDecision | null = routed.routing;
const code: boolean = decision?.task === 'TASK_CODE';
const reasons: SkipReason[] = decision?.passed_over.map((skip) => skip.reason) ?? [];
console.log(code, reasons, decision?.task_source === 'TASK_SOURCE_RULE', decision?.signals['chinese']);
const explained: RoutingDecision = await client.explainRoute({ model: 'route/default', messages: [] });
console.log(explained.plan.join(' > '), explained.estimated_prompt_tokens + 1);

try {
  await client.listModels({ provider: 'PROVIDER_ZAI' });
} catch (error) {
  if (error instanceof GatewayError) {
    const retry: number | null = error.retryAfterSeconds;
    console.log(error.code === 'INVALID_ARGUMENT', error.reason, error.fieldViolations['model'], retry);
  }
}
client.close();
