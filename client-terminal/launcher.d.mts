/** Types of launcher.mjs (plain JavaScript: bin.mjs runs it before any TypeScript loader exists). */

export interface RecordedFile {
  readonly size: number
  readonly mtimeMs?: number
}

export interface Manifest {
  readonly format: number
  /** The entry point, relative to the root. */
  readonly entry: string
  /** This build's directory inside the build directory. */
  readonly dir: string
  /** The bundle's entry file inside `dir`. */
  readonly main: string
  /** Every file of the build (relative to `dir`) with its size. */
  readonly outputs: Readonly<Record<string, RecordedFile>>
  /** Every file that went into the build (relative to the root), as it was before it was read. */
  readonly inputs: Readonly<Record<string, RecordedFile>>
  /** Each bundled npm package's directory (relative to the root) and the version it had. */
  readonly packages: Readonly<Record<string, string>>
}

/** npm packages loaded as installed rather than bundled. */
export declare const EXTERNAL_PACKAGES: readonly string[]

export interface BundleOptions {
  /** Where inputs are recorded relative to, and where tsconfig.json is (the package's root). */
  readonly root?: string
  /** The TypeScript entry point (client-terminal/main.ts). */
  readonly entry?: string
  /** Where builds and the manifest go (client-terminal/.build). */
  readonly buildDir?: string
}

export const MANIFEST_FORMAT: number
export const MANIFEST_FILE: string
export const packageRoot: string
export const defaultEntry: string
export const defaultBuildDir: string

export function readManifest(buildDir: string): Manifest | undefined
export function staleReason(manifest: Manifest | undefined, options?: BundleOptions): string | undefined
export function bundleFile(manifest: Manifest, buildDir?: string): string
export function buildBundle(options?: BundleOptions): Promise<Manifest>
export function ensureBundle(
  options?: BundleOptions,
  debug?: (text: string) => void,
): Promise<string | undefined>
export function launch(
  options?: BundleOptions & { readonly env?: NodeJS.ProcessEnv },
): Promise<'bundle' | 'tsx'>
