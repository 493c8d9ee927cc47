/**
 * A safety number as twelve groups of five digits in a grid (three columns on a narrow screen), or
 * "Computing…" until it is known. The element itself is the box: its user gives it a role and a
 * name (`role="group" aria-label="Safety number"`) and sets its size (gap, padding, font size).
 */
import { css, html, LitElement, type TemplateResult } from 'lit'
import { customElement, property } from 'lit/decorators.js'
import type { SafetyNumber } from '../../../shared/safety-number.js'

@customElement('sc-safety-number')
export class SafetyNumberView extends LitElement {
  static override styles = css`
    :host {
      display: grid;
      grid-template-columns: repeat(4, auto);
      justify-content: center;
      border-radius: 12px;
      background: var(--surface-2);
      font-family: var(--mono);
      font-variant-numeric: tabular-nums;
    }
    @media (max-width: 400px) {
      :host {
        grid-template-columns: repeat(3, auto);
      }
    }
  `

  @property({ attribute: false }) safety: SafetyNumber | undefined

  override render(): TemplateResult {
    return this.safety
      ? html`${this.safety.groups.map((group) => html`<span>${group}</span>`)}`
      : html`<span>Computing…</span>`
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-safety-number': SafetyNumberView
  }
}
