#!/usr/bin/env node
// The `secure-chat` command: runs the TypeScript entry point through tsx (a runtime dependency of
// this package), without a build step.
import { register } from 'tsx/esm/api'

register()
await import('./main.ts')
