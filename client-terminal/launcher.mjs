/**
 * How `secure-chat` starts (bin.mjs): from a prebuilt bundle of main.ts and everything it imports,
 * from this repository (client-terminal/, shared/) and from npm, kept in `client-terminal/.build/`
 * (git-ignored). Loading the TypeScript sources through tsx's loader took about a second of every
 * command, and loading kysely and typebox from their hundreds of files another 0.4 s; the bundle
 * is a few files of plain JavaScript that Node loads directly. Left out (EXTERNAL_PACKAGES): the
 * native SQLite addon, and Ink and React, which only the interactive client loads.
 *
 * The bundle is never stale: its manifest records the size and mtime of every file that went into
 * it (stat before the file was read, so an edit during a build makes the next start rebuild), plus
 * tsconfig.json and this file, and the version of every npm package in it. Each start stats them
 * (about a thousand stats and a dozen package.json reads, ~10 ms) and rebuilds with esbuild when
 * anything differs or the bundle is missing. When the build directory cannot be written (a
 * read-only install) or the build fails (a syntax error), it runs main.ts through tsx as before, which then reports any error the usual way. Nothing is printed
 * about any of this unless SECURE_CHAT_DEBUG_LAUNCHER is set (stdout and stderr belong to the
 * commands: scripts parse them).
 *
 * The bundle is split (esbuild's ESM code splitting): main.ts imports the interactive client and
 * the script commands dynamically, so that a script command does not load Ink and React (~0.7 s);
 * one file would load every package up front. Each build goes to its own new directory
 * and the manifest is replaced by a rename once the build is complete, so starts running at the
 * same time never see a half-written bundle, and concurrent builds (the first starts of a clean
 * clone in parallel) each use their own complete one; the last rename wins.
 */
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { basename, extname, isAbsolute, join, relative, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/** Bumped when the manifest's shape or the build's meaning changes. */
export const MANIFEST_FORMAT = 2
export const MANIFEST_FILE = 'manifest.json'
/** Prefix of each build's own directory inside the build directory. */
const BUILD_PREFIX = 'bundle-'
/** Build directories and temporary files left by others are removed only when older than this. */
const LEFTOVER_AGE_MS = 10 * 60_000
const DEBUG_ENV = 'SECURE_CHAT_DEBUG_LAUNCHER'

const here = import.meta.dirname
/** The package's root: the bundle's inputs are recorded relative to it. */
export const packageRoot = resolve(here, '..')
export const defaultEntry = join(here, 'main.ts')
export const defaultBuildDir = join(here, '.build')
const launcherFile = import.meta.filename

const LOADERS = {
  '.ts': 'ts',
  '.mts': 'ts',
  '.cts': 'ts',
  '.tsx': 'tsx',
  '.js': 'js',
  '.mjs': 'js',
  '.cjs': 'js',
  '.jsx': 'jsx',
  '.json': 'json',
}

/**
 * npm packages left out of the bundle and loaded by Node as installed: better-sqlite3 (a native
 * addon, found through its own directory), ws's optional native helpers, and what only the
 * interactive client loads (Ink and React, in their own chunk's imports). Every other package
 * is bundled.
 */
export const EXTERNAL_PACKAGES = [
  'better-sqlite3',
  'bufferutil',
  'utf-8-validate',
  'ink',
  'ink-*',
  'react',
  'react/*',
  'react-dom',
]

const keyOf = (root, file) => relative(root, file).split('\\').join('/')

/** The manifest in `buildDir`, or undefined when there is none (or it cannot be read). */
export function readManifest(buildDir) {
  try {
    const manifest = JSON.parse(readFileSync(join(buildDir, MANIFEST_FILE), 'utf8'))
    const wellFormed =
      manifest?.format === MANIFEST_FORMAT &&
      ['entry', 'dir', 'main'].every((key) => typeof manifest[key] === 'string') &&
      ['outputs', 'inputs', 'packages'].every(
        (key) => typeof manifest[key] === 'object' && manifest[key] !== null,
      )
    return wellFormed ? manifest : undefined
  } catch {
    return undefined
  }
}

function differs(file, recorded) {
  const stats = statSync(file, { throwIfNoEntry: false })
  if (stats === undefined) return 'is missing'
  if (stats.size !== recorded.size) return 'changed size'
  if (recorded.mtimeMs !== undefined && stats.mtimeMs !== recorded.mtimeMs) return 'was modified'
  return undefined
}

/**
 * Why the bundle that `manifest` describes cannot be used for `entry` (a sentence), or undefined
 * when it is up to date: every input has the size and mtime recorded, every output is there with
 * its size.
 */
export function staleReason(
  manifest,
  { root = packageRoot, entry = defaultEntry, buildDir = defaultBuildDir } = {},
) {
  if (manifest === undefined) return 'there is no bundle yet'
  if (manifest.entry !== keyOf(root, entry)) return `the bundle is of ${manifest.entry}`
  const outDir = join(buildDir, manifest.dir)
  for (const [name, recorded] of Object.entries(manifest.outputs)) {
    const problem = differs(join(outDir, name), recorded)
    if (problem !== undefined) return `the bundle's ${name} ${problem}`
  }
  // npm installs every file with the same mtime: a package upgraded in place can keep a file's
  // size and mtime while its content changed, so each bundled package's version is compared too.
  for (const [dir, version] of Object.entries(manifest.packages)) {
    const installed = packageVersion(root, dir)
    if (installed !== version) return `${dir} is ${installed === undefined ? 'gone' : `now ${installed}`}`
  }
  for (const [key, recorded] of Object.entries(manifest.inputs)) {
    const problem = differs(resolve(root, key), recorded)
    if (problem !== undefined) return `${key} ${problem}`
  }
  return undefined
}

/**
 * The package directory (relative to the root, as inputs are keyed) that an input under
 * node_modules belongs to, or undefined for the project's own files.
 */
function packageDirOf(key) {
  const marker = 'node_modules/'
  const at = key.lastIndexOf(marker)
  if (at === -1) return undefined
  const rest = key.slice(at + marker.length).split('/')
  const depth = rest[0]?.startsWith('@') ? 2 : 1
  return key.slice(0, at + marker.length) + rest.slice(0, depth).join('/')
}

/** The version in a package directory's package.json, or undefined when it has none. */
function packageVersion(root, dir) {
  try {
    return JSON.parse(readFileSync(join(resolve(root, dir), 'package.json'), 'utf8')).version
  } catch {
    return undefined
  }
}

/** The bundle's entry file for `manifest`. */
export function bundleFile(manifest, buildDir = defaultBuildDir) {
  return join(buildDir, manifest.dir, manifest.main)
}

function writeAtomically(file, text) {
  const temporary = `${file}.${process.pid}-${Math.random().toString(36).slice(2)}.tmp`
  try {
    writeFileSync(temporary, text)
    renameSync(temporary, file)
  } catch (error) {
    rmSync(temporary, { force: true })
    throw error
  }
}

/**
 * Builds the bundle of `entry` into a new directory of `buildDir`, then makes it the current one
 * (the manifest, replaced by a rename). Returns the new manifest. Throws when the directory cannot
 * be written or esbuild fails.
 */
export async function buildBundle({
  root = packageRoot,
  entry = defaultEntry,
  buildDir = defaultBuildDir,
} = {}) {
  mkdirSync(buildDir, { recursive: true })
  const outDir = mkdtempSync(join(buildDir, BUILD_PREFIX))
  try {
    const tsconfig = join(root, 'tsconfig.json')
    /** @type {Record<string, {size: number, mtimeMs: number}>} */
    const inputs = {}
    const record = (file, stats) => {
      inputs[keyOf(root, file)] = { size: stats.size, mtimeMs: stats.mtimeMs }
    }
    // Stat before esbuild reads anything: a later edit then always differs from what is recorded.
    record(tsconfig, statSync(tsconfig))
    record(launcherFile, statSync(launcherFile))
    const recordInputs = {
      name: 'record-inputs',
      setup(build) {
        build.onLoad({ filter: /.*/, namespace: 'file' }, (args) => {
          const loader = LOADERS[extname(args.path)]
          if (loader === undefined) return undefined
          const stats = statSync(args.path)
          const contents = readFileSync(args.path)
          record(args.path, stats)
          return { contents, loader }
        })
      },
    }
    const esbuild = await import('esbuild')
    const result = await esbuild
      .build({
        absWorkingDir: root,
        entryPoints: { main: entry },
        bundle: true,
        splitting: true,
        outdir: outDir,
        outExtension: { '.js': '.mjs' },
        external: EXTERNAL_PACKAGES,
        // The ES module build of a package that ships both: its named exports are then the
        // module's own, as when Node imports it (a CommonJS build's land under `default`).
        mainFields: ['module', 'main'],
        // CommonJS packages in the bundle (ws) require Node's built-in modules, which an ES module
        // can only do through a require of its own.
        banner: {
          js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
        },
        platform: 'node',
        format: 'esm',
        target: 'node20',
        tsconfig,
        jsx: 'automatic', // tsconfig's "react-jsx"
        sourcemap: 'linked',
        sourcesContent: false,
        metafile: true,
        logLevel: 'silent',
        plugins: [recordInputs],
      })
      // esbuild's service process is not needed while the client runs.
      .finally(() => esbuild.stop())
    // Anything esbuild read by itself (none expected): recorded as it is now.
    for (const key of Object.keys(result.metafile.inputs)) {
      const file = resolve(root, key)
      if (inputs[keyOf(root, file)] === undefined) record(file, statSync(file))
    }
    /** @type {Record<string, string | undefined>} */
    const packages = {}
    for (const key of Object.keys(inputs)) {
      const dir = packageDirOf(key)
      if (dir !== undefined && !(dir in packages)) packages[dir] = packageVersion(root, dir)
    }
    const outputs = {}
    for (const file of Object.keys(result.metafile.outputs)) {
      const absolute = resolve(root, file)
      outputs[keyOf(outDir, absolute)] = { size: statSync(absolute).size }
    }
    const manifest = {
      format: MANIFEST_FORMAT,
      entry: keyOf(root, entry),
      dir: basename(outDir),
      main: 'main.mjs',
      outputs,
      inputs,
      packages,
    }
    const previous = readManifest(buildDir)
    writeAtomically(join(buildDir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 1)}\n`)
    removeLeftovers(buildDir, [manifest.dir, previous?.dir])
    return manifest
  } catch (error) {
    rmSync(outDir, { recursive: true, force: true })
    throw error
  }
}

/**
 * Removes older builds and temporary files: never the current build or the one it replaced (a
 * start that read the previous manifest may be about to import it), and nothing recent (another
 * process may be building into it).
 */
function removeLeftovers(buildDir, keep) {
  const cutoff = Date.now() - LEFTOVER_AGE_MS
  for (const name of readdirSync(buildDir)) {
    if (keep.includes(name)) continue
    if (!name.startsWith(BUILD_PREFIX) && !name.endsWith('.tmp')) continue
    try {
      const path = join(buildDir, name)
      if (statSync(path).mtimeMs < cutoff) rmSync(path, { recursive: true, force: true })
    } catch {
      // Someone else removed it first.
    }
  }
}

/**
 * The bundle to run for `entry`, built first when missing or stale; undefined when it can neither
 * be found up to date nor built (the reason goes to `debug`).
 */
export async function ensureBundle(options = {}, debug = () => {}) {
  const buildDir = options.buildDir ?? defaultBuildDir
  try {
    const manifest = readManifest(buildDir)
    const reason = staleReason(manifest, options)
    if (reason === undefined) return bundleFile(manifest, buildDir)
    debug(`building the bundle: ${reason}`)
    return bundleFile(await buildBundle(options), buildDir)
  } catch (error) {
    debug(`running through tsx: ${error instanceof Error ? error.message : String(error)}`)
    return undefined
  }
}

/**
 * Runs `entry` (main.ts): from its bundle when it can, else through tsx. Resolves once the entry
 * module has run (main.ts sets process.exitCode). Returns which way it ran.
 */
export async function launch({ entry = defaultEntry, env = process.env, ...options } = {}) {
  const debug =
    env[DEBUG_ENV] === undefined || env[DEBUG_ENV] === ''
      ? () => {}
      : (text) => process.stderr.write(`secure-chat launcher: ${text}\n`)
  const bundle = await ensureBundle({ ...options, entry }, debug)
  if (bundle !== undefined) {
    debug(`running ${bundle}`)
    // Stack traces in terms of the .ts files (tsx does the same for the sources it loads).
    process.setSourceMapsEnabled(true)
    await import(pathToFileURL(bundle).href)
    return 'bundle'
  }
  const { register } = await import('tsx/esm/api')
  register()
  await import(pathToFileURL(isAbsolute(entry) ? entry : resolve(entry)).href)
  return 'tsx'
}
