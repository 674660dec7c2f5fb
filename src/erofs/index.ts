export { writeImage, ErofsWriteError, type WriteOptions } from './writer.js';
