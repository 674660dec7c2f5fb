/** The client side: remotes, pull and push. */
export * from './errors.js';
export * from './remote.js';
export * from './http.js';
export * from './http-remote.js';
export * from './ingest.js';
export * from './pull.js';
export * from './push.js';
export * from './progress.js';
