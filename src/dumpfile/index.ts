export { parseDumpfile, DumpfileError, type ParseOptions } from './parser.js';
export { formatDumpfile, dumpfileLines, formatEntry } from './writer.js';
export { escapeField, unescapeField } from './escape.js';
