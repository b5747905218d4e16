// index.d.ts is written by hand; this keeps it from drifting from the contract. It loads
// protos/llmgateway/v1 with @grpc/proto-loader (as the client does) and requires, for each
// enum of llmgateway.v1, an `export type <Enum>` listing exactly its value names, and for each
// message an `export interface <Message>` or `export type <Message>` declaring every one of
// its fields. Run by the repository's `npm test`.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.join(__dirname, '..', '..');
const PROTO_ROOT = path.join(ROOT, 'protos');
const PACKAGE = 'llmgateway.v1';
// ErrorReason travels as google.rpc.ErrorInfo.reason: the value's name without this prefix,
// and never UNSPECIFIED (see service/llmgateway/server/errors.py).
const ERROR_REASON_PREFIX = 'ERROR_REASON_';

function loadContract() {
  const folder = path.join(PROTO_ROOT, 'llmgateway', 'v1');
  const files = fs
    .readdirSync(folder)
    .filter((name) => name.endsWith('.proto'))
    .map((name) => path.join('llmgateway', 'v1', name));
  const definition = protoLoader.loadSync(files, { includeDirs: [PROTO_ROOT], keepCase: true });
  const enums = new Map();
  const messages = new Map();
  for (const [fullName, entry] of Object.entries(definition)) {
    if (!fullName.startsWith(`${PACKAGE}.`) || !entry.format) continue; // services have no format
    const name = fullName.slice(PACKAGE.length + 1);
    if (entry.format.endsWith('EnumDescriptorProto')) {
      enums.set(name, entry.type.value.map((value) => value.name));
    } else {
      messages.set(name, entry.type.field.map((field) => field.name));
    }
  }
  return { enums, messages };
}

/** The .d.ts text without comments (no string literal in it holds `//` or `/*`). */
function withoutComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

/**
 * Each top-level `export interface Name { ... }` and `export type Name = ...;`, by name: the
 * interface's braces, or the type's right-hand side up to its `;` outside any brackets.
 */
function declarations(source) {
  const found = new Map();
  const head = /export\s+(interface|type)\s+(\w+)\b/g;
  for (let match = head.exec(source); match; match = head.exec(source)) {
    const [, kind, name] = match;
    let depth = 0;
    let start = head.lastIndex;
    let end = source.length;
    if (kind === 'interface') start = source.indexOf('{', start);
    for (let i = start; i < source.length; i++) {
      const char = source[i];
      if ('{(['.includes(char)) depth++;
      else if ('})]'.includes(char)) depth--;
      if ((kind === 'interface' && depth === 0 && char === '}') || (kind === 'type' && depth === 0 && char === ';')) {
        end = i + 1;
        break;
      }
    }
    found.set(name, source.slice(start, end));
  }
  return found;
}

/** The property names a declaration's body declares (`name:`, `name?:`, `readonly name:`). */
function propertyNames(body) {
  return new Set([...body.matchAll(/(?:^|[{;,\s])(?:readonly\s+)?(\w+)\??\s*:/g)].map((m) => m[1]));
}

function stringLiterals(body) {
  return new Set([...body.matchAll(/'([^']*)'/g)].map((m) => m[1]));
}

/** A declaration's body, following `export type A = B;` to B's. */
function resolve(types, name) {
  let body = types.get(name);
  for (let hops = 0; body !== undefined && hops < 5; hops++) {
    const alias = body.match(/^\s*=\s*(\w+)\s*;$/);
    if (!alias) break;
    body = types.get(alias[1]);
  }
  return body;
}

const contract = loadContract();
const types = declarations(withoutComments(fs.readFileSync(path.join(__dirname, 'index.d.ts'), 'utf8')));

test('the contract loads with enums and messages to compare', () => {
  assert.ok(contract.enums.size >= 10, `enums: ${[...contract.enums.keys()]}`);
  assert.ok(contract.messages.size >= 20, `messages: ${[...contract.messages.keys()]}`);
});

test('index.d.ts lists exactly the value names of every llmgateway.v1 enum', () => {
  const problems = [];
  for (const [name, values] of contract.enums) {
    const expected =
      name === 'ErrorReason'
        ? values.filter((v) => v !== `${ERROR_REASON_PREFIX}UNSPECIFIED`).map((v) => v.slice(ERROR_REASON_PREFIX.length))
        : values;
    const body = types.get(name);
    if (body === undefined) {
      problems.push(`no \`export type ${name}\` for the enum ${PACKAGE}.${name}`);
      continue;
    }
    const listed = stringLiterals(body);
    for (const value of expected) if (!listed.has(value)) problems.push(`${name} lacks '${value}'`);
    for (const value of listed) if (!expected.includes(value)) problems.push(`${name} has '${value}', not in the contract`);
  }
  assert.deepEqual(problems, [], `index.d.ts and protos/${PACKAGE.replace('.', '/')} disagree`);
});

test('index.d.ts declares every field of every llmgateway.v1 message', () => {
  const problems = [];
  for (const [name, fields] of contract.messages) {
    const body = resolve(types, name);
    if (body === undefined) {
      problems.push(`no \`export interface ${name}\` or \`export type ${name}\` for the message ${PACKAGE}.${name}`);
      continue;
    }
    const declared = propertyNames(body);
    for (const field of fields) if (!declared.has(field)) problems.push(`${name} lacks the field ${field}`);
  }
  assert.deepEqual(problems, [], `index.d.ts and protos/${PACKAGE.replace('.', '/')} disagree`);
});
