import type { Command } from 'commander';

/** Registers the `digest` command group (not implemented yet). */
export function register(_program: Command): void {}
