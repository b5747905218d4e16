// A Node.js client for llmgateway, loading the contract from protos/ at run time.
// It proves the contract works beyond Python: unary, streaming, and errors with
// their google.rpc.Status details decoded.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_DIR = path.join(__dirname, '..', '..', 'protos');

function loadService() {
  const definition = protoLoader.loadSync('llmgateway/v1/completion_service.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true, // field names exactly as in the .proto files
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).llmgateway.v1.CompletionService;
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
    super(`${details.code} ${details.reason}: ${message}`);
    Object.assign(this, rest);
    this.details = message; // the server's message alone; `message` keeps code and reason
  }
}

class GatewayClient {
  constructor(target, { apiKey, credentials } = {}) {
    const Service = loadService();
    this.stub = new Service(target, credentials || grpc.credentials.createInsecure());
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

  /** One whole completion; rejects with a GatewayError. */
  complete(request, { timeoutMs } = {}) {
    return new Promise((resolve, reject) => {
      this.stub.Complete(request, this._metadata(), this._deadline(timeoutMs), (error, reply) =>
        error ? reject(new GatewayError(decodeError(error))) : resolve(reply),
      );
    });
  }

  /** Stream events as an async iterator; breaking out cancels the call. */
  async *stream(request, { timeoutMs } = {}) {
    const call = this.stub.StreamComplete(request, this._metadata(), this._deadline(timeoutMs));
    try {
      for await (const event of call) yield event;
    } catch (error) {
      throw new GatewayError(decodeError(error));
    } finally {
      call.cancel();
    }
  }

  listModels(request = {}, { timeoutMs } = {}) {
    return new Promise((resolve, reject) => {
      this.stub.ListModels(request, this._metadata(), this._deadline(timeoutMs), (error, reply) =>
        error ? reject(new GatewayError(decodeError(error))) : resolve(reply),
      );
    });
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

module.exports = { GatewayClient, GatewayError, decodeError };
