/**
 * A QR code drawn from uqr's module matrix as one SVG path in a Lit template: no SVG string is
 * ever parsed into the page.
 */
import { css, html, LitElement, svg, type TemplateResult } from 'lit'
import { customElement, property } from 'lit/decorators.js'
import { encode } from 'uqr'

/** The path of every dark module, one 1×1 square each, in module coordinates. */
export function qrPath(payload: Uint8Array): { size: number; d: string } {
  // Level M: survives smudges on a phone screen and stays small for a 65-byte payload.
  const qr = encode(Array.from(payload), { ecc: 'M', border: 2 })
  let d = ''
  qr.data.forEach((row, y) => {
    row.forEach((dark, x) => {
      if (dark) d += `M${x} ${y}h1v1h-1z`
    })
  })
  return { size: qr.size, d }
}

@customElement('sc-qr-code')
export class QrCode extends LitElement {
  static override styles = css`
    :host {
      display: inline-block;
      line-height: 0;
    }
    svg {
      width: 100%;
      height: 100%;
      shape-rendering: crispEdges;
    }
    .light {
      fill: #fff;
    }
    .dark {
      fill: #0b1220;
    }
  `

  @property({ attribute: false }) payload: Uint8Array | undefined
  @property() label = 'QR code'

  override render(): TemplateResult {
    if (!this.payload) return html``
    const { size, d } = qrPath(this.payload)
    return html`<svg viewBox="0 0 ${size} ${size}" role="img" aria-label=${this.label}>
      ${svg`<rect class="light" width=${size} height=${size}></rect><path class="dark" d=${d}></path>`}
    </svg>`
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-qr-code': QrCode
  }
}
