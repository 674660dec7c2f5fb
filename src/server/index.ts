/** The cfsdist distribution server and its wire protocol. */
export * from './protocol.js';
export * from './compress.js';
export * from './server.js';
