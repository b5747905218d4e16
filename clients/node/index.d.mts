// Types for `import` (index.mjs re-exports index.js, so the types are the same).
export * from './index.js';
