// Copies the contract (protos/llmgateway/v1/*.proto at the repository root,
// its single source) and the LICENSE into this package, so the packed tarball
// carries them and never reads outside itself. Run by `prepack` and by the
// repository's `npm test`; the copies are gitignored, never committed.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const PACKAGE = path.join(__dirname, '..');
const ROOT = path.join(PACKAGE, '..', '..');
const SOURCE = path.join(ROOT, 'protos', 'llmgateway', 'v1');
const TARGET = path.join(PACKAGE, 'protos', 'llmgateway', 'v1');

if (!fs.existsSync(SOURCE)) {
  console.error(`bundle-contract: ${SOURCE} not found; pack this package from the llmgateway repository`);
  process.exit(1);
}
// Start clean, so a .proto removed from the contract does not linger in the package.
fs.rmSync(path.join(PACKAGE, 'protos'), { recursive: true, force: true });
fs.mkdirSync(TARGET, { recursive: true });
const protos = fs.readdirSync(SOURCE).filter((name) => name.endsWith('.proto'));
for (const name of protos) fs.copyFileSync(path.join(SOURCE, name), path.join(TARGET, name));
fs.copyFileSync(path.join(ROOT, 'LICENSE'), path.join(PACKAGE, 'LICENSE'));
