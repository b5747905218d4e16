// Runs the Node.js client against a real gateway and the fake upstream (both
// started here, from the repository's Python environment). The root's
// `npm test` first copies the contract into the package (scripts/bundle-contract.js).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, spawn } = require('node:child_process');
const dgram = require('node:dgram');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { GatewayClient, GatewayError, toStruct } = require('llmgateway-grpc-client');

const ROOT = path.join(__dirname, '..', '..');
const PYTHON = process.env.PYTHON || path.join(ROOT, '.venv', 'bin', 'python');
const children = [];
let client;
let gatewayTarget;
let configDir;
let gatewayEnv; // how every gateway here reaches the fake upstream

// A route over the fake's models, so routed calls and explainRoute have something to decide.
const ROUTES = `
[routes.default]
default = "zai/glm-4.5-flash"
code = [{ model = "zai/glm-4.7", zai_endpoint = "coding" }, "openrouter/anthropic/claude-sonnet-4.5"]
`;
const CODE_PLAN = ['zai/glm-4.7@coding', 'openrouter/anthropic/claude-sonnet-4.5'];

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function start(args, env) {
  const child = spawn(PYTHON, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: 'ignore' });
  children.push(child);
  return child;
}

async function waitForPort(port, host = '127.0.0.1') {
  for (let i = 0; i < 300; i++) {
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, host, () => resolve(socket.end() || true));
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listened on ${host}:${port}`);
}

before(async () => {
  const fakePort = await freePort();
  const gatewayPort = await freePort();
  start(['-m', 'llmgateway.testing.fake_upstream', '--port', String(fakePort)]);
  await waitForPort(fakePort);
  const base = `http://127.0.0.1:${fakePort}`;
  configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'llmgateway-node-test-'));
  const config = path.join(configDir, 'llmgateway.toml');
  fs.writeFileSync(config, ROUTES);
  gatewayEnv = {
    OPENROUTER_API_KEY: 'sk-or-v1-fake-test-key',
    OPENROUTER_BASE_URL: `${base}/openrouter/api/v1`,
    ZAI_API_KEY: 'fake-zai-id.fake-zai-secret',
    ZAI_BASE_URL: `${base}/zai/api/paas/v4`,
    ZAI_CODING_BASE_URL: `${base}/zai/api/coding/paas/v4`,
    // The fake's Retry-After is 7 s: hand it back at once rather than wait it out.
    LLMGATEWAY_MAX_RETRY_AFTER: '0',
  };
  start(['-m', 'llmgateway.server.process.cli', 'serve', '--address', `127.0.0.1:${gatewayPort}`, '--workers', '1',
    '--log-level', 'WARNING'], { ...gatewayEnv, LLMGATEWAY_CONFIG: config });
  gatewayTarget = `127.0.0.1:${gatewayPort}`;
  client = new GatewayClient(gatewayTarget);
  await client.waitForReady();
});

after(() => {
  if (client) client.close();
  for (const child of children) child.kill('SIGTERM');
  if (configDir) fs.rmSync(configDir, { recursive: true, force: true });
});

const user = (content) => ({ role: 'ROLE_USER', content });

test('unary Complete', async () => {
  const reply = await client.complete({ model: 'zai/glm-4.7', messages: [user('hi from node')] });
  assert.equal(reply.content, 'Hello from the fake upstream! You said: hi from node');
  assert.equal(reply.finish_reason, 'FINISH_REASON_STOP');
  assert.equal(reply.provider, 'PROVIDER_ZAI');
  assert.ok(reply.usage.total_tokens > 0);
  // proto3 optional fields carry no synthetic oneof marker keys (`_cost_usd`).
  assert.ok(reply.usage.cost_usd > 0);
  const markers = JSON.stringify(reply).match(/"_[a-z_]+":/g);
  assert.equal(markers, null, `synthetic oneof keys in ${JSON.stringify(reply)}`);
});

test('ListModels replies carry no synthetic oneof keys either', async () => {
  const reply = await client.listModels();
  assert.ok(reply.models.length > 0);
  assert.equal(JSON.stringify(reply).match(/"_[a-z_]+":/g), null);
});

test('StreamComplete delivers deltas then exactly one done', async () => {
  const kinds = [];
  let text = '';
  for await (const event of client.stream({
    model: 'openrouter/openai/gpt-4o-mini',
    messages: [user('stream please')],
  })) {
    kinds.push(event.event);
    if (event.event === 'content_delta') text += event.content_delta.text;
    if (event.event === 'done') assert.equal(JSON.stringify(event).match(/"_[a-z_]+":/g), null);
  }
  assert.equal(text, 'Hello from the fake upstream! You said: stream please');
  assert.equal(kinds.filter((k) => k === 'done').length, 1);
  assert.equal(kinds.at(-1), 'done');
});

test('an upstream rate limit arrives as RESOURCE_EXHAUSTED with its details', async () => {
  await assert.rejects(
    client.complete({ model: 'openrouter/x/fault-http-429', messages: [user('hi')] }),
    (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.code, 'RESOURCE_EXHAUSTED');
      assert.equal(error.reason, 'UPSTREAM_RATE_LIMITED');
      assert.equal(error.domain, 'llmgateway.v1');
      assert.equal(error.metadata.upstreamStatus, '429');
      assert.equal(error.retryAfterSeconds, 7);
      return true;
    },
  );
});

test('a stream that breaks upstream ends with a typed error', async () => {
  await assert.rejects(
    (async () => {
      for await (const event of client.stream({ model: 'zai/fault-truncated', messages: [user('hi')] })) {
        assert.notEqual(event.event, 'done');
      }
    })(),
    (error) => error.code === 'UNAVAILABLE' && error.reason === 'UPSTREAM_STREAM_TRUNCATED',
  );
});

test('invalid requests name the offending field', async () => {
  await assert.rejects(
    client.complete({ model: 'zai/glm-4.7', messages: [] }),
    (error) => error.code === 'INVALID_ARGUMENT' && 'messages' in error.fieldViolations,
  );
});

test('an unknown model is INVALID_ARGUMENT / UNKNOWN_MODEL naming the field, message not doubled', async () => {
  await assert.rejects(client.complete({ model: 'no-such-model', messages: [user('hi')] }), (error) => {
    assert.equal(error.code, 'INVALID_ARGUMENT');
    assert.equal(error.reason, 'UNKNOWN_MODEL');
    assert.match(error.fieldViolations.model, /openrouter\/<vendor>\/<model>/);
    assert.ok(error.metadata.requestId);
    assert.equal(error.message, `INVALID_ARGUMENT (UNKNOWN_MODEL): ${error.details}`);
    return true;
  });
});

test('a gateway that cannot be reached is UNAVAILABLE with no reason', async () => {
  // A port nothing listens on: the channel's own failure, not an answer from a gateway.
  const nowhere = new GatewayClient(`127.0.0.1:${await freePort()}`);
  try {
    await assert.rejects(nowhere.complete({ model: 'zai/glm-4.7', messages: [user('hi')] }), (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.code, 'UNAVAILABLE');
      assert.equal(error.reason, '');
      assert.equal(error.message, `UNAVAILABLE: ${error.details}`);
      return true;
    });
  } finally {
    nowhere.close();
  }
});

test('a tool from a JSON schema via toStruct reaches the model', async () => {
  const reply = await client.complete({
    model: 'zai/glm-4.7',
    messages: [user('what is the weather in Paris?')],
    tools: [
      {
        name: 'get_weather',
        parameters: toStruct({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
      },
    ],
  });
  // The fake model calls the first tool with arguments built from its schema:
  // the schema arrived whole.
  assert.equal(reply.finish_reason, 'FINISH_REASON_TOOL_CALLS');
  assert.equal(reply.tool_calls[0].name, 'get_weather');
  assert.equal(typeof JSON.parse(reply.tool_calls[0].arguments).city, 'string');
});

test('toStruct refuses what JSON cannot hold, saying where', () => {
  assert.throws(() => toStruct({ a: { b: undefined } }), /a\.b is undefined/);
  assert.throws(() => toStruct([1]), /plain JSON object/);
});

test('import and require give the same classes', async () => {
  const esm = await import('llmgateway-grpc-client');
  assert.equal(esm.GatewayError, GatewayError);
  assert.equal(esm.GatewayClient, GatewayClient);
});

test('examples/example.mjs runs as written against a gateway', async () => {
  const stdout = await new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [path.join(__dirname, 'examples', 'example.mjs')],
      { env: { ...process.env, LLMGATEWAY_TARGET: gatewayTarget }, timeout: 60000 },
      (error, out, err) => (error ? reject(new Error(`${error.message}\n${err}`)) : resolve(out)),
    );
  });
  assert.match(stdout, /^complete: Hello from the fake upstream! You said: Hi! \[FINISH_REASON_STOP, \d+ tokens\]$/m);
  assert.match(stdout, /^stream: Hello from the fake upstream! You said: Stream, please\. \[FINISH_REASON_STOP, served by openrouter\/openai\/gpt-4o-mini\]$/m);
  assert.match(stdout, /^error: INVALID_ARGUMENT UNKNOWN_MODEL$/m);
  assert.match(stdout, /^  model: name models /m);
  assert.match(stdout, /^  request id \w+, retry after - s$/m);
});

test('explainRoute resolves to the decision a route would make, with its plan', async () => {
  const decision = await client.explainRoute({
    model: 'route/default',
    messages: [user('hello')],
    routing: { task: 'TASK_CODE' },
  });
  assert.equal(decision.route, 'route/default');
  assert.equal(decision.task, 'TASK_CODE');
  assert.equal(decision.task_source, 'TASK_SOURCE_CALLER');
  assert.equal(decision.entry, 'code');
  assert.equal(decision.chosen, 'zai/glm-4.7@coding');
  assert.deepEqual(decision.plan, CODE_PLAN);
  assert.deepEqual(decision.passed_over, []);
  assert.equal(typeof decision.estimated_prompt_tokens, 'number');
  assert.equal(JSON.stringify(decision).match(/"_[a-z_]+":/g), null);
});

test('a routed complete says which task it inferred and where it went', async () => {
  const reply = await client.complete({
    model: 'route/default',
    messages: [user('```js\nconst sum = (a, b) => a - b;\n```\nWhy is the sum wrong?')],
  });
  assert.equal(reply.routing.task, 'TASK_CODE');
  assert.equal(reply.routing.task_source, 'TASK_SOURCE_RULE');
  assert.equal(reply.routing.rule, 'code-fences');
  assert.equal(reply.routing.chosen, 'zai/glm-4.7@coding');
  assert.equal(reply.provider, 'PROVIDER_ZAI');
  assert.equal(reply.zai_endpoint, 'ZAI_ENDPOINT_CODING');
  // Plan and signals come only when asked for.
  assert.deepEqual(reply.routing.plan, []);
  assert.deepEqual(reply.routing.signals, {});
});

test("a routed stream's done carries the decision", async () => {
  let done = null;
  for await (const event of client.stream({
    model: 'route/default',
    messages: [user('hi')],
    routing: { task: 'TASK_CODE', session_id: 'node-session', explain: true },
  })) {
    if (event.event === 'done') done = event.done;
  }
  assert.equal(done.routing.task, 'TASK_CODE');
  assert.equal(done.routing.chosen, 'zai/glm-4.7@coding');
  assert.deepEqual(done.routing.plan, CODE_PLAN);
});

test('a named model is served as named: no decision, and explainRoute refuses it', async () => {
  const reply = await client.complete({ model: 'zai/glm-4.7', messages: [user('hi')], routing: { task: 'TASK_CODE' } });
  assert.equal(reply.routing, null);
  assert.equal(reply.zai_endpoint, 'ZAI_ENDPOINT_GENERAL');
  await assert.rejects(client.explainRoute({ model: 'zai/glm-4.7', messages: [user('hi')] }), (error) => {
    assert.ok(error instanceof GatewayError);
    assert.equal(error.code, 'INVALID_ARGUMENT');
    assert.ok('request.model' in error.fieldViolations, JSON.stringify(error.fieldViolations));
    return true;
  });
});

// ---- Client-side balancing over a headless DNS name ----
//
// Three gateways on 127.0.0.2-4 and one port, and a DNS server of the test's own that
// resolves one name to all three, as a Kubernetes headless Service does. grpc-js asks the
// DNS server a `dns://HOST:PORT/name` target names only with its alternative resolver,
// which it picks when it loads: the client runs in a child process with
// GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true. (In Kubernetes, where the cluster's DNS resolves
// the name, `dns:///name:port` needs no such variable.)

const REPLICA_HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];

/** A UDP DNS server on 127.0.0.1 answering A queries for `name` with `addresses` (TTL 0). */
async function startDns(name, addresses) {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (query, peer) => {
    let offset = 12;
    const labels = [];
    while (query[offset] !== 0) {
      labels.push(query.subarray(offset + 1, offset + 1 + query[offset]).toString('ascii'));
      offset += 1 + query[offset];
    }
    const end = offset + 5; // the name's zero byte, QTYPE, QCLASS
    const known = labels.join('.').toLowerCase() === name;
    const isA = query.readUInt16BE(offset + 1) === 1;
    const answers = known && isA ? addresses : [];
    const header = Buffer.alloc(12);
    header.writeUInt16BE(query.readUInt16BE(0), 0); // the query's id
    header.writeUInt16BE(0x8580 | (known ? 0 : 3), 2); // a response, authoritative; NXDOMAIN if unknown
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    const records = answers.map((address) => {
      const record = Buffer.alloc(16);
      record.writeUInt16BE(0xc00c, 0); // the question's name
      record.writeUInt16BE(1, 2); // A
      record.writeUInt16BE(1, 4); // IN
      record.writeUInt32BE(0, 6); // TTL
      record.writeUInt16BE(4, 10);
      address.split('.').forEach((part, i) => record.writeUInt8(Number(part), 12 + i));
      return record;
    });
    socket.send(Buffer.concat([header, query.subarray(12, end), ...records]), peer.port, peer.address);
  });
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, close: () => socket.close() };
}

/** A TCP port free on every one of `hosts` (other processes share this machine). */
async function sharedPort(hosts) {
  const listen = (host, port) =>
    new Promise((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(port, host, () => resolve(server));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const servers = [];
    try {
      servers.push(await listen(hosts[0], 0));
      const { port } = servers[0].address();
      for (const host of hosts.slice(1)) servers.push(await listen(host, port));
      return port;
    } catch {
      // taken on one of them: try another
    } finally {
      await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    }
  }
  throw new Error(`no port free on all of ${hosts.join(', ')}`);
}

// Run by the child: calls through one name with round_robin, then with the default policy,
// counting what each gateway served from its own metrics (llmgateway_requests_total).
const BALANCING_CHILD = `
const { GatewayClient } = require(process.env.CLIENT_MODULE);
const metricsUrls = JSON.parse(process.env.METRICS_URLS);
async function served() {
  return Promise.all(metricsUrls.map(async (url) => {
    const text = await (await fetch(url)).text();
    return text.split('\\n').filter((line) => line.startsWith('llmgateway_requests_total{'))
      .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
  }));
}
const call = (client) => client.complete({ model: 'zai/glm-4.7', messages: [{ role: 'ROLE_USER', content: 'hi' }] });
async function spread(client, calls) {
  const before = await served();
  for (let i = 0; i < calls; i++) await call(client);
  return (await served()).map((count, i) => count - before[i]);
}
(async () => {
  const balanced = new GatewayClient(process.env.TARGET, { loadBalancing: 'round_robin' });
  // The first calls go to whichever connection is ready first: warm up until each has served.
  const giveUp = Date.now() + 30000;
  while ((await served()).some((count) => count === 0)) {
    if (Date.now() > giveUp) throw new Error('round_robin did not reach every gateway in 30 s');
    await call(balanced);
  }
  const roundRobin = await spread(balanced, 30);
  balanced.close();
  const plain = new GatewayClient(process.env.TARGET);
  const pickFirst = await spread(plain, 30);
  plain.close();
  process.stdout.write(JSON.stringify({ roundRobin, pickFirst }));
})().catch((error) => { console.error(error); process.exit(1); });
`;

test('loadBalancing round_robin spreads calls over every gateway a DNS name resolves to', async (t) => {
  const port = await sharedPort(REPLICA_HOSTS);
  const dns = await startDns('gw.test', REPLICA_HOSTS);
  t.after(dns.close);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'llmgateway-node-lb-'));
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const metricsUrls = [];
  const replicas = [];
  for (const [i, host] of REPLICA_HOSTS.entries()) {
    const metricsPort = await freePort();
    metricsUrls.push(`http://127.0.0.1:${metricsPort}/metrics`);
    replicas.push(
      start(['-m', 'llmgateway.server.process.cli', 'serve', '--address', `${host}:${port}`, '--workers', '1',
        '--log-level', 'WARNING'], {
        ...gatewayEnv,
        LLMGATEWAY_DB: path.join(dataDir, `replica-${i}.db`),
        LLMGATEWAY_METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
      }),
    );
  }
  t.after(() => replicas.forEach((replica) => replica.kill('SIGTERM')));
  await Promise.all(REPLICA_HOSTS.map((host) => waitForPort(port, host)));
  const stdout = await new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['-e', BALANCING_CHILD],
      {
        env: {
          ...process.env,
          GRPC_NODE_USE_ALTERNATIVE_RESOLVER: 'true',
          CLIENT_MODULE: path.join(__dirname, 'index.js'),
          TARGET: `dns://127.0.0.1:${dns.port}/gw.test:${port}`,
          METRICS_URLS: JSON.stringify(metricsUrls),
        },
        timeout: 90000,
      },
      (error, out, err) => (error ? reject(new Error(`${error.message}\n${err}`)) : resolve(out)),
    );
  });
  const { roundRobin, pickFirst } = JSON.parse(stdout);
  // Once every connection is ready, round_robin takes each gateway in turn.
  assert.equal(roundRobin.reduce((a, b) => a + b, 0), 30);
  assert.ok(Math.min(...roundRobin) >= 5, JSON.stringify(roundRobin));
  // The default policy sends every call to one gateway, whatever the name resolves to.
  assert.deepEqual([...pickFirst].sort((a, b) => a - b), [0, 0, 30]);
});

test('loadBalancing names a policy grpc-js has, or the client refuses it saying which', () => {
  assert.throws(
    () => new GatewayClient('localhost:1', { loadBalancing: 'round-robin' }),
    (error) => error instanceof TypeError && /pick_first, round_robin/.test(error.message) && /"round-robin"/.test(error.message),
  );
});
