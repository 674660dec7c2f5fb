/** Keys, DSSE-signed image statements, trust records and kernel fs-verity signatures. */
export * from './errors.js';
export * from './keys.js';
export * from './dsse.js';
export * from './statement.js';
export * from './image-facts.js';
export * from './records.js';
export * from './fsverity-sig.js';
export * from './sign-image.js';
