import { html, nothing, type TemplateResult } from 'lit'
import { avatarColour } from './format.js'
import { styleProps } from './style-props.js'

/** A round initial in the user's colour, with a green dot when they are online. Decorative. */
export function avatar(
  username: string,
  options: { online?: boolean; size?: 'small' | 'large' } = {},
): TemplateResult {
  return html`<span
    class="avatar ${options.size ?? ''}"
    ${styleProps({ background: avatarColour(username) })}
    aria-hidden="true"
    >${username.charAt(0)}${options.online ? html`<span class="dot"></span>` : nothing}</span
  >`
}
