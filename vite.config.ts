import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'

/**
 * Builds the PWA in client-web/ into dist/client-web/, which the server serves at `/`.
 * The protocol core in shared/ is imported as source, exactly as the server and tests use it.
 */
export default defineConfig({
  root: fileURLToPath(new URL('./client-web', import.meta.url)),
  build: {
    outDir: fileURLToPath(new URL('./dist/client-web', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
  },
})
