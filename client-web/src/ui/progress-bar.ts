/**
 * The progress bar of a history transfer (received in the app shell, sent there and in the approve
 * dialog): `done` of `total`, labelled for assistive technology. Its look (`.bar`, `.fill`) is the
 * host component's, which styles both classes.
 */
import { html, type TemplateResult } from 'lit'
import { styleProps } from './style-props.js'

export function progressBar(label: string, done: number, total: number): TemplateResult {
  const percent = total === 0 ? 0 : Math.round((100 * done) / total)
  return html`<div
    class="bar"
    role="progressbar"
    aria-label=${label}
    aria-valuemin="0"
    aria-valuemax=${total}
    aria-valuenow=${done}
  >
    <div class="fill" ${styleProps({ width: `${percent}%` })}></div>
  </div>`
}
