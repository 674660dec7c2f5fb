export { parseDumpfile, DumpfileError, type ParseOptions } from './parser.js';
export { formatDumpfile, dumpfileChunks } from './writer.js';
export { escapeField, unescapeField } from './escape.js';
