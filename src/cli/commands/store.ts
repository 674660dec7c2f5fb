import type { Command } from 'commander';

/** Registers the `store` command group (not implemented yet). */
export function register(_program: Command): void {}
