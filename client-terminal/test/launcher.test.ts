/**
 * launcher.mjs, which bin.mjs runs: the bundle is rebuilt whenever a file that went into it changed
 * (and only then), concurrent first starts each get a complete bundle, stack traces name the .ts
 * files, and when the bundle cannot be built the entry point runs through tsx, quietly. Small
 * projects in temporary directories stand in for the client; the last cases start the real one.
 */
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { USAGE } from '../args.js'
import {
  buildBundle,
  bundleFile,
  defaultBuildDir,
  ensureBundle,
  readManifest,
  staleReason,
} from '../launcher.mjs'
import { binScript, repositoryRoot } from './e2e-helpers.js'

const launcherUrl = pathToFileURL(join(repositoryRoot, 'client-terminal', 'launcher.mjs')).href

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

function node(args: readonly string[], env: Record<string, string> = {}, cwd = repositoryRoot): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { cwd, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1
        resolve({ code, stdout, stderr })
      },
    )
  })
}

let root: string
let buildDir: string
let entry: string

/** A project: main.ts prints the value of dep.ts and of a dynamically imported module (and JSX). */
function writeProject(): void {
  writeFileSync(join(root, 'package.json'), JSON.stringify({ type: 'module' }))
  writeFileSync(
    join(root, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { jsx: 'react-jsx', module: 'NodeNext', strict: true } }),
  )
  writeFileSync(
    join(root, 'main.ts'),
    [
      "import { value } from './dep.js'",
      "const later: { lazy: string } = await import('./lazy.js')",
      "process.stdout.write([value, later.lazy].join(' ') + '\\n')",
      "if (process.argv[2] === 'throw') throw new Error('thrown on purpose')",
      '',
    ].join('\n'),
  )
  writeFileSync(join(root, 'dep.ts'), "export const value: string = 'one'\n")
  writeFileSync(join(root, 'lazy.ts'), "export const lazy: string = 'lazy'\n")
}

/** Runs a built bundle, as bin.mjs would import it. */
async function runBundle(file: string, ...args: string[]): Promise<string> {
  const result = await node([file, ...args])
  expect(result).toMatchObject({ code: 0, stderr: '' })
  return result.stdout
}

/** Starts `launch()` in a child process; `way` is what it returned ('bundle' or 'tsx'). */
async function launchInChild(
  options: { buildDir: string; entry?: string; root?: string },
  args: readonly string[] = [],
  env: Record<string, string> = {},
): Promise<Run & { way: string }> {
  const wayFile = join(root, `way-${Math.random().toString(36).slice(2)}`)
  const runner = join(root, 'run-launch.mjs')
  writeFileSync(
    runner,
    [
      `import { writeFileSync } from 'node:fs'`,
      `import { launch } from ${JSON.stringify(launcherUrl)}`,
      `const way = await launch(JSON.parse(process.env.LAUNCH_OPTIONS))`,
      `writeFileSync(process.env.LAUNCH_WAY_FILE, way)`,
    ].join('\n'),
  )
  const result = await node([runner, ...args], {
    LAUNCH_OPTIONS: JSON.stringify({ root, entry, ...options }),
    LAUNCH_WAY_FILE: wayFile,
    ...env,
  })
  let way = 'none'
  try {
    way = readFileSync(wayFile, 'utf8')
  } catch {
    // launch() did not return.
  }
  return { ...result, way }
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'secure-chat-launcher-'))
  buildDir = join(root, '.build')
  entry = join(root, 'main.ts')
  writeProject()
})

afterEach(() => {
  rmSync(root, { recursive: true, force: true })
})

describe('the bundle', () => {
  it('is built when there is none, then reused while nothing changed', async () => {
    expect(staleReason(readManifest(buildDir), { root, entry, buildDir })).toBe('there is no bundle yet')
    const first = await ensureBundle({ root, entry, buildDir })
    expect(first).toBeDefined()
    expect(await runBundle(first!)).toBe('one lazy\n')

    const manifest = readManifest(buildDir)!
    expect(Object.keys(manifest.inputs).sort()).toEqual(
      expect.arrayContaining(['dep.ts', 'lazy.ts', 'main.ts', 'tsconfig.json']),
    )
    expect(staleReason(manifest, { root, entry, buildDir })).toBeUndefined()
    expect(await ensureBundle({ root, entry, buildDir })).toBe(first)
  })

  it('is rebuilt after a source was edited, and runs the edited code', async () => {
    const first = (await ensureBundle({ root, entry, buildDir }))!
    writeFileSync(join(root, 'dep.ts'), "export const value: string = 'two, edited'\n")

    expect(staleReason(readManifest(buildDir), { root, entry, buildDir })).toBe('dep.ts changed size')
    const second = (await ensureBundle({ root, entry, buildDir }))!
    expect(second).not.toBe(first)
    expect(await runBundle(second)).toBe('two, edited lazy\n')
    expect(staleReason(readManifest(buildDir), { root, entry, buildDir })).toBeUndefined()
  })

  it('is rebuilt after an edit that kept the size (the mtime differs), also of a lazily imported file', async () => {
    await buildBundle({ root, entry, buildDir })
    writeFileSync(join(root, 'lazy.ts'), "export const lazy: string = 'LAZY'\n")
    const { mtime } = statSync(join(root, 'lazy.ts'))
    // Whatever the file system's timestamp resolution: the edit is seen as one a second later.
    utimesSync(join(root, 'lazy.ts'), mtime, new Date(mtime.getTime() + 1000))

    expect(staleReason(readManifest(buildDir), { root, entry, buildDir })).toBe('lazy.ts was modified')
    expect(await runBundle((await ensureBundle({ root, entry, buildDir }))!)).toBe('one LAZY\n')
  })

  it('bundles npm packages, and is rebuilt when one is upgraded in place with sizes and mtimes kept', async () => {
    // npm writes every installed file with one fixed mtime: an upgrade that keeps a file's size is
    // seen only through the package's version.
    const pkg = join(root, 'node_modules', '@scope', 'greeting')
    mkdirSync(pkg, { recursive: true })
    const writePackage = (version: string, word: string) => {
      writeFileSync(
        join(pkg, 'package.json'),
        JSON.stringify({ name: '@scope/greeting', version, main: 'index.js' }),
      )
      writeFileSync(join(pkg, 'index.js'), `exports.word = '${word}'\n`)
      const fixed = new Date('1985-10-26T08:15:00Z')
      for (const file of ['package.json', 'index.js']) utimesSync(join(pkg, file), fixed, fixed)
    }
    writePackage('1.0.0', 'hello')
    writeFileSync(
      join(root, 'main.ts'),
      "import { word } from '@scope/greeting'\nprocess.stdout.write(word + '\\n')\n",
    )
    const first = (await ensureBundle({ root, entry, buildDir }))!
    expect(await runBundle(first)).toBe('hello\n')
    const manifest = readManifest(buildDir)!
    expect(manifest.packages).toEqual({ 'node_modules/@scope/greeting': '1.0.0' })
    expect(Object.keys(manifest.inputs)).toContain('node_modules/@scope/greeting/index.js')

    writePackage('1.0.1', 'howdy')
    expect(staleReason(readManifest(buildDir), { root, entry, buildDir })).toBe(
      'node_modules/@scope/greeting is now 1.0.1',
    )
    expect(await runBundle((await ensureBundle({ root, entry, buildDir }))!)).toBe('howdy\n')
  })

  it('is stale when tsconfig.json changed, an input is gone, or an output is missing or cut short', async () => {
    const manifest = await buildBundle({ root, entry, buildDir })
    const options = { root, entry, buildDir }
    const tsconfig = join(root, 'tsconfig.json')
    const { mtime } = statSync(tsconfig)
    utimesSync(tsconfig, mtime, new Date(mtime.getTime() + 1000))
    expect(staleReason(manifest, options)).toBe('tsconfig.json was modified')

    const rebuilt = await buildBundle(options)
    const lazy = readFileSync(join(root, 'lazy.ts'))
    rmSync(join(root, 'lazy.ts'))
    expect(staleReason(rebuilt, options)).toBe('lazy.ts is missing')
    writeFileSync(join(root, 'lazy.ts'), lazy)

    const again = await buildBundle(options)
    const main = bundleFile(again, buildDir)
    writeFileSync(main, readFileSync(main, 'utf8').slice(0, 10))
    expect(staleReason(again, options)).toBe("the bundle's main.mjs changed size")
    rmSync(main)
    expect(staleReason(again, options)).toBe("the bundle's main.mjs is missing")
    // A manifest that is not one (cut short, or of another format) means no bundle.
    writeFileSync(join(buildDir, 'manifest.json'), '{"format": 1, "dir": "bundle-x"')
    expect(readManifest(buildDir)).toBeUndefined()
    writeFileSync(join(buildDir, 'manifest.json'), JSON.stringify({ ...again, format: 0 }))
    expect(readManifest(buildDir)).toBeUndefined()
    expect(await runBundle((await ensureBundle(options))!)).toBe('one lazy\n')
    // A manifest for another entry point is not this one's.
    expect(staleReason(again, { ...options, entry: join(root, 'dep.ts') })).toBe('the bundle is of main.ts')
  })

  it('that cannot be built is not used: ensureBundle says why and leaves the current bundle alone', async () => {
    const first = (await ensureBundle({ root, entry, buildDir }))!
    writeFileSync(join(root, 'dep.ts'), 'export const value: string = \n')
    const reasons: string[] = []
    expect(await ensureBundle({ root, entry, buildDir }, (text) => reasons.push(text))).toBeUndefined()
    expect(reasons[0]).toBe('building the bundle: dep.ts changed size')
    expect(reasons[1]).toMatch(/^running through tsx: Build failed/)
    expect(readManifest(buildDir)?.dir).toBe(basename(dirname(first)))
    expect(await runBundle(first)).toBe('one lazy\n')
  })

  it('built by several processes starting at once: each runs a complete bundle, the manifest is valid', async () => {
    const starts = await Promise.all(Array.from({ length: 4 }, () => launchInChild({ buildDir })))
    for (const start of starts)
      expect(start).toMatchObject({ code: 0, stdout: 'one lazy\n', stderr: '', way: 'bundle' })
    const manifest = readManifest(buildDir)
    expect(staleReason(manifest, { root, entry, buildDir })).toBeUndefined()
    expect(await runBundle(bundleFile(manifest!, buildDir))).toBe('one lazy\n')
  })

  it('maps stack traces to the .ts files', async () => {
    const result = await launchInChild({ buildDir }, ['throw'])
    expect(result.code).not.toBe(0)
    expect(result.stdout).toBe('one lazy\n')
    expect(result.stderr).toContain('thrown on purpose')
    expect(result.stderr).toContain(`${entry}:4:`)
  })
})

describe('without a bundle', () => {
  it('runs the entry point through tsx, quietly, when the build directory cannot be made', async () => {
    const blocker = join(root, 'not-a-directory')
    writeFileSync(blocker, '')
    const result = await launchInChild({ buildDir: join(blocker, '.build') })
    expect(result).toEqual({ code: 0, stdout: 'one lazy\n', stderr: '', way: 'tsx' })

    const debug = await launchInChild({ buildDir: join(blocker, '.build') }, [], {
      SECURE_CHAT_DEBUG_LAUNCHER: '1',
    })
    expect(debug.stdout).toBe('one lazy\n')
    expect(debug.stderr).toMatch(/^secure-chat launcher: building the bundle: there is no bundle yet\n/)
    expect(debug.stderr).toMatch(/secure-chat launcher: running through tsx: ENOTDIR/)
  })

  it.skipIf(process.getuid?.() === 0)('runs through tsx when the build directory is read-only', async () => {
    mkdirSync(buildDir, { mode: 0o555 })
    const result = await launchInChild({ buildDir })
    expect(result).toEqual({ code: 0, stdout: 'one lazy\n', stderr: '', way: 'tsx' })
  })

  it('runs through tsx when the build fails, so the error is reported as without a bundle', async () => {
    writeFileSync(join(root, 'dep.ts'), 'export const value: string = \n')
    const result = await launchInChild({ buildDir })
    expect(result.way).toBe('none')
    expect(result.code).not.toBe(0)
    expect(result.stdout).toBe('')
    expect(result.stderr).toContain('dep.ts')
    expect(readManifest(buildDir)).toBeUndefined()
  })
})

describe('the real secure-chat', () => {
  it('starts through bin.mjs from an up-to-date bundle and prints only its own output', async () => {
    const result = await node([binScript, 'help'])
    expect(result).toEqual({ code: 0, stdout: `${USAGE}\n`, stderr: '' })
    const manifest = readManifest(defaultBuildDir)
    expect(staleReason(manifest)).toBeUndefined()
    expect(Object.keys(manifest!.inputs)).toEqual(
      expect.arrayContaining([
        'client-terminal/main.ts',
        'client-terminal/cli.ts',
        'client-terminal/app.tsx',
        'client-terminal/migrations/2026-11-26-01-initial.ts',
        'shared/session.ts',
        'tsconfig.json',
        'client-terminal/launcher.mjs',
      ]),
    )
    // npm packages are bundled (kysely, typebox, ws), with their versions recorded; the native
    // SQLite addon and the interactive client's Ink and React are loaded as installed.
    const bundledPackages = Object.keys(manifest!.packages)
    expect(bundledPackages).toEqual(
      expect.arrayContaining(['node_modules/kysely', 'node_modules/typebox', 'node_modules/ws']),
    )
    for (const external of ['better-sqlite3', 'ink', 'react']) {
      expect(
        Object.keys(manifest!.inputs).filter((key) => key.startsWith(`node_modules/${external}/`)),
      ).toEqual([])
    }
    const kysely = JSON.parse(readFileSync(join(repositoryRoot, 'node_modules/kysely/package.json'), 'utf8'))
    expect(manifest!.packages['node_modules/kysely']).toBe(kysely.version)
  })

  it('runs through tsx when its bundle cannot be built', async () => {
    const blocker = join(root, 'not-a-directory')
    writeFileSync(blocker, '')
    const result = await launchInChild(
      {
        buildDir: join(blocker, '.build'),
        root: repositoryRoot,
        entry: join(repositoryRoot, 'client-terminal', 'main.ts'),
      },
      ['help'],
    )
    expect(result).toEqual({ code: 0, stdout: `${USAGE}\n`, stderr: '', way: 'tsx' })
  })
})
