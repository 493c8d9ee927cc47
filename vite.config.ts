import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { brotliCompressSync, constants, gzipSync } from 'node:zlib'
import { build as esbuild } from 'esbuild'
import { defineConfig, type Plugin } from 'vite'
import { generateValidators, schemaModules } from './client-web/build/precompiled-validators.js'

const root = fileURLToPath(new URL('./client-web', import.meta.url))
const publicDir = join(root, 'public')
const outDir = fileURLToPath(new URL('./dist/client-web', import.meta.url))
const repositoryRoot = fileURLToPath(new URL('.', import.meta.url))
const sharedDir = join(repositoryRoot, 'shared')

/** The module client-web/src/main.ts imports first: every shared schema's check, compiled here. */
export const VALIDATORS_MODULE = 'virtual:secure-chat/validators'

/** The placeholder in client-web/sw.ts that the build replaces with the app shell's file list. */
const PRECACHE_PLACEHOLDER = '__SECURE_CHAT_PRECACHE__'

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)).replaceAll('\\', '/'))
}

/**
 * Writes the app shell's file list (every emitted file and every public file, except the service
 * worker itself) into sw.js, with a version derived from it: a new build changes sw.js, the browser
 * installs the new worker, and it replaces the old cache in one step.
 */
function precacheManifest(): Plugin {
  return {
    name: 'secure-chat:precache-manifest',
    apply: 'build',
    generateBundle(_options, bundle) {
      const worker = Object.values(bundle).find((file) => file.type === 'chunk' && file.fileName === 'sw.js')
      if (worker?.type !== 'chunk') throw new Error('expected sw.js in the bundle, got none')
      const emitted = Object.keys(bundle).filter((name) => name !== 'sw.js' && !name.endsWith('.map'))
      // (The .br and .gz copies are written after this, by precompress, and never precached.)
      const urls = [...new Set(['/', ...[...emitted, ...filesUnder(publicDir)].map((name) => `/${name}`)])]
        .filter((url) => url !== '/index.html')
        .sort()
      // Emitted files carry a content hash in their names; public files may change in place.
      const hash = createHash('sha256').update(JSON.stringify(urls))
      for (const file of filesUnder(publicDir)) hash.update(readFileSync(join(publicDir, file)))
      const version = hash.digest('hex').slice(0, 16)
      if (!worker.code.includes(PRECACHE_PLACEHOLDER))
        throw new Error('expected the precache placeholder in sw.js, got none')
      worker.code = worker.code.replaceAll(PRECACHE_PLACEHOLDER, `(${JSON.stringify({ version, urls })})`)
    },
  }
}

/**
 * The modules' namespaces, imported in this Node process: bundled into one file first (esbuild,
 * npm packages left external), which loads in a fraction of the time of one TypeScript import each.
 */
async function importInNode(modules: readonly string[]): Promise<Record<string, unknown>[]> {
  const result = await esbuild({
    stdin: {
      contents: modules.map((file, index) => `export * as m${index} from ${JSON.stringify(file)}`).join('\n'),
      resolveDir: repositoryRoot,
      loader: 'ts',
    },
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    logLevel: 'silent',
  })
  // Inside the repository, so that the bundle's package imports resolve from its node_modules.
  const cache = join(repositoryRoot, 'node_modules', '.cache', 'secure-chat')
  mkdirSync(cache, { recursive: true })
  const file = join(cache, `schemas-${process.pid}-${Date.now()}.mjs`)
  writeFileSync(file, result.outputFiles[0]!.contents)
  try {
    const namespace: Record<string, Record<string, unknown>> = await import(pathToFileURL(file).href)
    return modules.map((_, index) => namespace[`m${index}`]!)
  } finally {
    rmSync(file, { force: true })
  }
}

/**
 * Serves VALIDATORS_MODULE: the schemas shared/ exports, compiled in Node at build time, since the
 * page's policy forbids the `eval` TypeBox would compile them with (client-web/build/
 * precompiled-validators.ts; test/precompiled-validators.test.ts checks the result).
 */
function precompiledValidators(): Plugin {
  const resolved = `\0${VALIDATORS_MODULE}`
  return {
    name: 'secure-chat:precompiled-validators',
    resolveId(id) {
      return id === VALIDATORS_MODULE ? resolved : undefined
    },
    async load(id) {
      if (id !== resolved) return undefined
      const modules = schemaModules(sharedDir)
      const namespaces = await importInNode(modules)
      const generated = generateValidators(
        modules,
        namespaces,
        join(sharedDir, 'codec', 'schema.ts'),
        repositoryRoot,
      )
      for (const file of modules) this.addWatchFile(file)
      if (generated.skipped.length > 0) {
        this.warn(`checked at run time (not precompiled): ${generated.skipped.join(', ')}`)
      }
      return generated.code
    },
  }
}

/** Text files worth compressing; images are compressed already. */
const COMPRESSIBLE = /\.(js|css|html|svg|webmanifest|json)$/
const COMPRESS_MIN_BYTES = 1024

/**
 * Writes a Brotli (.br) and a gzip (.gz) copy beside each text file of the build, which the server
 * sends to browsers that accept them (@fastify/static `preCompressed`): the server compresses
 * nothing at run time, and the app loads a quarter of the bytes.
 */
function precompress(): Plugin {
  let written = outDir
  return {
    name: 'secure-chat:precompress',
    apply: 'build',
    configResolved(config) {
      written = config.build.outDir
    },
    closeBundle() {
      for (const file of filesUnder(written)) {
        if (!COMPRESSIBLE.test(file)) continue
        const path = join(written, file)
        const content = readFileSync(path)
        if (content.length < COMPRESS_MIN_BYTES) continue
        writeFileSync(
          `${path}.br`,
          brotliCompressSync(content, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
        )
        writeFileSync(`${path}.gz`, gzipSync(content, { level: 9 }))
      }
    },
  }
}

/**
 * Builds the PWA in client-web/ into dist/client-web/, which the server serves at `/`.
 * The protocol core in shared/ is imported as source, exactly as the server and tests use it.
 * The service worker is a second entry, emitted unhashed as /sw.js (its scope is the whole origin).
 */
export default defineConfig({
  root,
  build: {
    outDir,
    emptyOutDir: true,
    target: 'es2022',
    // Lit templates and the core compress well; no source maps shipped (they would be precached too).
    sourcemap: false,
    rolldownOptions: {
      input: { index: join(root, 'index.html'), sw: join(root, 'sw.ts') },
      output: {
        entryFileNames: (chunk) => (chunk.name === 'sw' ? 'sw.js' : 'assets/[name]-[hash].js'),
      },
    },
  },
  plugins: [precompiledValidators(), precacheManifest(), precompress()],
})
