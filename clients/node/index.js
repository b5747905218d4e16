// llmgateway-grpc-client: a Node.js client for llmgateway (CommonJS; index.mjs
// re-exports it for `import`). It loads the contract's .proto files bundled in
// this package at run time: unary, streaming, and errors with their
// google.rpc.Status details decoded.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The package's own copy of protos/ (copied in by scripts/bundle-contract.js at
// pack time, and by `npm test` in the repository): an installed package never
// reads anything outside itself.
const PROTO_DIR = path.join(__dirname, 'protos');
const SERVICE_PROTO = 'llmgateway/v1/completion_service.proto';

let serviceConstructor = null;

function loadService() {
  if (serviceConstructor) return serviceConstructor;
  if (!fs.existsSync(path.join(PROTO_DIR, SERVICE_PROTO))) {
    throw new Error(
      `llmgateway-grpc-client: the bundled contract ${path.join(PROTO_DIR, SERVICE_PROTO)} is missing; ` +
        'in the repository, run `node clients/node/scripts/bundle-contract.js` (npm test and npm pack run it)',
    );
  }
  const definition = protoLoader.loadSync(SERVICE_PROTO, {
    includeDirs: [PROTO_DIR],
    keepCase: true, // field names exactly as in the .proto files
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  serviceConstructor = grpc.loadPackageDefinition(definition).llmgateway.v1.CompletionService;
  return serviceConstructor;
}

// proto-loader's `oneofs: true` names the member set of every oneof (how a stream
// event says which it is: `event.event === 'content_delta'`), but proto3 `optional`
// fields are oneofs too, synthetic ones named `_<field>`: their marker keys
// (`usage._cost_usd === 'cost_usd'`) are noise in replies, JSON and Object.entries.
// The field itself stays; absence still means "not set".
function withoutSyntheticOneofs(value) {
  if (Array.isArray(value)) {
    for (const item of value) withoutSyntheticOneofs(item);
  } else if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value)) {
    for (const [key, inner] of Object.entries(value)) {
      if (key.startsWith('_') && inner === key.slice(1)) delete value[key];
      else withoutSyntheticOneofs(inner);
    }
  }
  return value;
}

// The google.rpc types the gateway puts in grpc-status-details-bin.
const rpcTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            BadRequest: {
              nested: {
                FieldViolation: {
                  fields: { field: { type: 'string', id: 1 }, description: { type: 'string', id: 2 } },
                },
              },
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
            },
            RetryInfo: { fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } } },
          },
        },
      },
    },
  },
});

/** The gateway's error details from a grpc-js ServiceError. */
function decodeError(error) {
  const decoded = {
    code: grpc.status[error.code],
    message: error.details,
    reason: '',
    domain: '',
    metadata: {},
    fieldViolations: {},
    retryAfterSeconds: null,
  };
  const raw = error.metadata && error.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return decoded;
  const status = rpcTypes.lookupType('google.rpc.Status').decode(raw);
  for (const detail of status.details) {
    const name = detail.type_url.split('/').pop();
    if (name === 'google.rpc.ErrorInfo') {
      const info = rpcTypes.lookupType(name).decode(detail.value);
      Object.assign(decoded, { reason: info.reason, domain: info.domain, metadata: info.metadata });
    } else if (name === 'google.rpc.BadRequest') {
      const bad = rpcTypes.lookupType(name).decode(detail.value);
      for (const v of bad.field_violations) decoded.fieldViolations[v.field] = v.description;
    } else if (name === 'google.rpc.RetryInfo') {
      const retry = rpcTypes.lookupType(name).decode(detail.value);
      decoded.retryAfterSeconds = Number(retry.retry_delay.seconds) + retry.retry_delay.nanos / 1e9;
    }
  }
  return decoded;
}

class GatewayError extends Error {
  constructor(details) {
    const { message, ...rest } = details;
    // `CODE (REASON): details`, as the Python client's errors read. The reason adds nothing
    // when it is empty or repeats the code (UNAUTHENTICATED).
    const shown = rest.reason && rest.reason !== rest.code ? ` (${rest.reason})` : '';
    super(`${rest.code}${shown}: ${message}`);
    this.name = 'GatewayError';
    Object.assign(this, rest);
    this.details = message; // the server's message alone; `message` keeps code and reason
  }
}

/** A google.protobuf.Struct (tool parameters, JSON schemas) from a plain JSON object. */
function toStruct(object) {
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw new TypeError('toStruct takes a plain JSON object, such as a JSON Schema');
  }
  return structOf(object, '');
}

// protobufjs defines the well-known types with camelCase field names
// (stringValue, not string_value), whatever keepCase says for the contract's own.
function structOf(object, where) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = valueOf(value, where ? `${where}.${key}` : key);
  return { fields };
}

function valueOf(value, where) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (typeof value === 'number' && Number.isFinite(value)) return { numberValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map((item, i) => valueOf(item, `${where}[${i}]`)) } };
  if (typeof value === 'object') return { structValue: structOf(value, where) };
  throw new TypeError(`toStruct: ${where} is ${String(value)}, which JSON cannot hold`);
}

// The policies `loadBalancing` may name: grpc-js's built-in ones that need no configuration.
const LOAD_BALANCING_POLICIES = ['pick_first', 'round_robin'];

/** grpc-js channel options from the client's: the policy's service config, then `channelOptions` over it. */
function channelOptionsFor(loadBalancing, channelOptions) {
  const options = {};
  if (loadBalancing !== undefined && loadBalancing !== null) {
    if (!LOAD_BALANCING_POLICIES.includes(loadBalancing)) {
      throw new TypeError(
        `loadBalancing must be one of ${LOAD_BALANCING_POLICIES.join(', ')} ` +
          `(or left out for grpc-js's default, pick_first), got ${JSON.stringify(loadBalancing)}`,
      );
    }
    options['grpc.service_config'] = JSON.stringify({ loadBalancingConfig: [{ [loadBalancing]: {} }] });
  }
  return { ...options, ...channelOptions };
}

class GatewayClient {
  constructor(target, { apiKey, credentials, loadBalancing, channelOptions } = {}) {
    const Service = loadService();
    this.stub = new Service(
      target,
      credentials || grpc.credentials.createInsecure(),
      channelOptionsFor(loadBalancing, channelOptions),
    );
    this.apiKey = apiKey;
  }

  _metadata() {
    const metadata = new grpc.Metadata();
    if (this.apiKey) metadata.set('authorization', `Bearer ${this.apiKey}`);
    return metadata;
  }

  // timeoutMs: undefined means 60 s; null means no deadline at all.
  _deadline(timeoutMs) {
    if (timeoutMs === null) return {};
    return { deadline: Date.now() + (timeoutMs === undefined ? 60000 : timeoutMs) };
  }

  // A unary call as a promise: the reply, or a GatewayError with its details.
  _unary(method, request, timeoutMs) {
    return new Promise((resolve, reject) => {
      this.stub[method](request, this._metadata(), this._deadline(timeoutMs), (error, reply) =>
        error ? reject(new GatewayError(decodeError(error))) : resolve(withoutSyntheticOneofs(reply)),
      );
    });
  }

  /** One whole completion; rejects with a GatewayError. */
  complete(request, { timeoutMs } = {}) {
    return this._unary('Complete', request, timeoutMs);
  }

  /** Stream events as an async iterator; breaking out cancels the call. */
  async *stream(request, { timeoutMs } = {}) {
    const call = this.stub.StreamComplete(request, this._metadata(), this._deadline(timeoutMs));
    try {
      for await (const event of call) yield withoutSyntheticOneofs(event);
    } catch (error) {
      // Only a call's status is the gateway's answer; anything else (a request
      // the stub cannot serialize, say) goes up as it is.
      if (typeof error.code !== 'number') throw error;
      throw new GatewayError(decodeError(error));
    } finally {
      call.cancel();
    }
  }

  listModels(request = {}, { timeoutMs } = {}) {
    return this._unary('ListModels', request, timeoutMs);
  }

  getUsage(request = {}, { timeoutMs } = {}) {
    return this._unary('GetUsage', request, timeoutMs);
  }

  /**
   * How a `route/<name>` call would be routed, as a dry run (no upstream request, no spend):
   * takes the request complete() would take and resolves to its RoutingDecision.
   */
  explainRoute(request, { timeoutMs } = {}) {
    return this._unary('ExplainRoute', { request }, timeoutMs).then((reply) => reply.decision);
  }

  waitForReady(timeoutMs = 30000) {
    return new Promise((resolve, reject) => {
      this.stub.waitForReady(Date.now() + timeoutMs, (error) => (error ? reject(error) : resolve()));
    });
  }

  close() {
    this.stub.close();
  }
}

module.exports = { GatewayClient, GatewayError, decodeError, toStruct };
