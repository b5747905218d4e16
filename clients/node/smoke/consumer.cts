// Type-checked (never run) by scripts/package-node.sh against the installed
// package's types, as a CommonJS consumer.
import client = require('llmgateway-grpc-client');

async function main(): Promise<void> {
  const gateway = new client.GatewayClient('localhost:50051');
  const usage = await gateway.getUsage({ group_by: 'USAGE_GROUPING_MODEL', start_time: { seconds: 0 } });
  for (const row of usage.rows) console.log(row.group, row.calls, row.cost_usd);
  const byRoute = await gateway.getUsage({ group_by: 'USAGE_GROUPING_ROUTE' });
  console.log(byRoute.rows.length);
  const decision: client.RoutingDecision = await gateway.explainRoute({ model: 'route/default', messages: [] });
  console.log(decision.chosen, decision.passed_over.map((skip: client.PassedOver) => `${skip.target}: ${skip.id}`));
  const decoded: client.DecodedError = client.decodeError({ code: 3, details: 'bad' });
  console.log(new client.GatewayError(decoded).details);
  gateway.close();
}
void main();
