/**
 * Renders the app icons from their SVG sources with headless Chromium (Debian's, through
 * playwright-core) into the PNGs the manifest names. Run after changing an SVG, then commit the
 * PNGs: `npm run icons`. The output depends only on the SVGs and the Chromium version.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { chromiumArgs } from '../vitest.config.js'

const web = (path: string) => fileURLToPath(new URL(`../client-web/${path}`, import.meta.url))

const outputs = [
  { source: 'public/icons/icon.svg', target: 'public/icons/icon-192.png', size: 192 },
  { source: 'public/icons/icon.svg', target: 'public/icons/icon-512.png', size: 512 },
  { source: 'public/icons/icon.svg', target: 'public/icons/apple-touch-icon.png', size: 180, opaque: true },
  { source: 'icons/maskable.svg', target: 'public/icons/maskable-512.png', size: 512, opaque: true },
]

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: chromiumArgs,
})
try {
  const page = await browser.newPage({ deviceScaleFactor: 1 })
  for (const output of outputs) {
    const svg = await readFile(web(output.source), 'utf8')
    await page.setViewportSize({ width: output.size, height: output.size })
    // Apple draws its own rounded mask over a square icon: give it the tile colour behind the art.
    const background = output.opaque ? '#2f55d4' : 'transparent'
    await page.setContent(
      `<html><body style="margin:0;background:${background}">` +
        `<img src="data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}" ` +
        `width="${output.size}" height="${output.size}" style="display:block"></body></html>`,
    )
    await page.locator('img').evaluate((image: HTMLImageElement) => image.decode())
    const png = await page.screenshot({ omitBackground: !output.opaque, type: 'png' })
    await writeFile(web(output.target), png)
    process.stdout.write(`${output.target} (${output.size}×${output.size})\n`)
  }
} finally {
  await browser.close()
}
