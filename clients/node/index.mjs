// ESM entry point: the same objects as the CommonJS one (index.js), so
// `import` and `require` in one program share one GatewayError class.
import client from './index.js';

export const { GatewayClient, GatewayError, decodeError, toStruct } = client;
