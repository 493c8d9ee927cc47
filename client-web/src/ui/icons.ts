/**
 * The app's icons as Lit SVG templates (24×24, stroked, drawn for this app): no icon font, no
 * external file, nothing parsed from strings. Decorative: every use sits next to a text label or
 * inside a button that has an accessible name.
 */
import { svg, type TemplateResult } from 'lit'

function icon(body: TemplateResult, className = 'icon'): TemplateResult {
  return svg`<svg class=${className} viewBox="0 0 24 24" width="20" height="20" fill="none" stroke="currentColor"
    stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">${body}</svg>`
}

export const icons = {
  logo: () =>
    svg`<svg class="logo" viewBox="0 0 64 64" width="40" height="40" aria-hidden="true" focusable="false">
      <rect class="logo-tile" width="64" height="64" rx="16"></rect>
      <path class="logo-bubble" d="M17 22a8 8 0 0 1 8-8h14a8 8 0 0 1 8 8v10a8 8 0 0 1-8 8h-9l-8 7v-7a5 5 0 0 1-5-5z"></path>
      <rect class="logo-lock" x="26" y="25" width="12" height="9" rx="2"></rect>
      <path class="logo-shackle" d="M28.5 25v-2.5a3.5 3.5 0 0 1 7 0V25" fill="none" stroke-width="2.4"></path>
    </svg>`,
  search: () => icon(svg`<circle cx="11" cy="11" r="7"></circle><path d="m20 20-3.5-3.5"></path>`),
  send: () => icon(svg`<path d="M4 12 20 4l-4 16-4-7z"></path><path d="m12 13 8-9"></path>`),
  back: () => icon(svg`<path d="M15 18 9 12l6-6"></path>`),
  settings: () =>
    icon(
      svg`<circle cx="12" cy="12" r="3"></circle><path d="M19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-1.8-.3 1.7 1.7 0 0 0-1 1.5V21a2 2 0 1 1-4 0v-.1a1.7 1.7 0 0 0-1.1-1.5 1.7 1.7 0 0 0-1.8.3l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1a1.7 1.7 0 0 0 .3-1.8 1.7 1.7 0 0 0-1.5-1H3a2 2 0 1 1 0-4h.1a1.7 1.7 0 0 0 1.5-1.1 1.7 1.7 0 0 0-.3-1.8l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1a1.7 1.7 0 0 0 1.8.3H9a1.7 1.7 0 0 0 1-1.5V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 1 1.5 1.7 1.7 0 0 0 1.8-.3l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0-.3 1.8V9a1.7 1.7 0 0 0 1.5 1H21a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z"></path>`,
    ),
  info: () =>
    icon(svg`<circle cx="12" cy="12" r="9"></circle><path d="M12 16v-5"></path><path d="M12 8h.01"></path>`),
  shield: () =>
    icon(
      svg`<path d="M12 3 5 6v5c0 4.5 3 8.3 7 10 4-1.7 7-5.5 7-10V6z"></path><path d="m9 12 2 2 4-4"></path>`,
    ),
  alert: () =>
    icon(
      svg`<path d="M10.3 4 2.6 17.5A2 2 0 0 0 4.3 20.5h15.4a2 2 0 0 0 1.7-3L13.7 4a2 2 0 0 0-3.4 0z"></path><path d="M12 9v4"></path><path d="M12 17h.01"></path>`,
    ),
  check: () => icon(svg`<path d="m5 12.5 4.5 4.5L19 7.5"></path>`, 'icon mark'),
  checks: () =>
    icon(svg`<path d="m2 12.5 4.5 4.5L16 7.5"></path><path d="m11.5 16 1 1L22 7.5"></path>`, 'icon mark'),
  clock: () => icon(svg`<circle cx="12" cy="12" r="8"></circle><path d="M12 8v4l2.5 2"></path>`, 'icon mark'),
  failed: () =>
    icon(
      svg`<circle cx="12" cy="12" r="9"></circle><path d="M12 7.5v5"></path><path d="M12 16.5h.01"></path>`,
      'icon mark',
    ),
  plus: () => icon(svg`<path d="M12 5v14"></path><path d="M5 12h14"></path>`),
  bell: () =>
    icon(
      svg`<path d="M6 9a6 6 0 0 1 12 0c0 6 2.5 7.5 2.5 7.5h-17S6 15 6 9z"></path><path d="M10 20a2.2 2.2 0 0 0 4 0"></path>`,
    ),
  download: () =>
    icon(svg`<path d="M12 4v11"></path><path d="m7 10 5 5 5-5"></path><path d="M5 20h14"></path>`),
  logout: () =>
    icon(
      svg`<path d="M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3"></path><path d="M10 17l-5-5 5-5"></path><path d="M5 12h11"></path>`,
    ),
  down: () => icon(svg`<path d="m6 9 6 6 6-6"></path>`),
  close: () => icon(svg`<path d="M6 6l12 12"></path><path d="M18 6 6 18"></path>`),
  lock: () =>
    icon(
      svg`<rect x="5" y="11" width="14" height="10" rx="2"></rect><path d="M8 11V8a4 4 0 0 1 8 0v3"></path>`,
    ),
  device: () =>
    icon(svg`<rect x="7" y="2.5" width="10" height="19" rx="2"></rect><path d="M11 18h2"></path>`),
  chat: () =>
    icon(
      svg`<path d="M5 5h14a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-7l-5 4v-4H5a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2z"></path>`,
    ),
}
