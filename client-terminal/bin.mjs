#!/usr/bin/env node
// The `secure-chat` command (and `npm run chat`): runs main.ts from a bundle that launcher.mjs
// builds with esbuild on the first start after any source changed, or through tsx (a runtime
// dependency of this package) when the bundle cannot be built.
import { launch } from './launcher.mjs'

await launch()
