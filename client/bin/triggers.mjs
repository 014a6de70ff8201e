#!/usr/bin/env node
// The `triggers` command: registers tsx's loader, then runs the TypeScript CLI.
import { register } from 'tsx/esm/api';

register();
await import('../cli.ts');
