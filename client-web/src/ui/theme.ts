/**
 * Styles every component shares: buttons, fields, the focus ring, avatars, visually hidden text.
 * Colours come from the tokens in styles/global.css.
 */
import { css } from 'lit'

export const base = css`
  :host {
    font-family: var(--font);
    color: var(--text);
  }
  *,
  *::before,
  *::after {
    box-sizing: border-box;
  }
  [hidden] {
    display: none !important;
  }
  h1,
  h2,
  h3,
  p {
    margin: 0;
  }
  .icon {
    flex: none;
    width: 20px;
    height: 20px;
  }
  .visually-hidden {
    position: absolute;
    width: 1px;
    height: 1px;
    padding: 0;
    margin: -1px;
    overflow: hidden;
    clip: rect(0 0 0 0);
    white-space: nowrap;
    border: 0;
  }
  :focus-visible {
    outline: 3px solid var(--focus);
    outline-offset: 2px;
  }

  button {
    font: inherit;
    color: inherit;
    cursor: pointer;
  }
  button:disabled {
    cursor: not-allowed;
  }
  .btn {
    display: inline-flex;
    align-items: center;
    justify-content: center;
    gap: 8px;
    min-height: 44px;
    padding: 0 18px;
    border-radius: 10px;
    border: 1px solid transparent;
    font-weight: 600;
    font-size: 15px;
    line-height: 1;
    white-space: nowrap;
    transition:
      background-color 120ms ease,
      border-color 120ms ease,
      color 120ms ease;
  }
  .btn.primary {
    background: var(--accent);
    color: var(--on-accent);
  }
  .btn.primary:hover:not(:disabled) {
    background: var(--accent-hover);
  }
  .btn.secondary {
    background: var(--surface);
    border-color: var(--border);
    color: var(--text);
  }
  .btn.secondary:hover:not(:disabled) {
    background: var(--surface-2);
  }
  .btn.danger {
    background: var(--danger);
    color: var(--on-danger);
  }
  .btn.ghost {
    background: transparent;
    color: var(--accent-text);
    padding: 0 10px;
  }
  .btn.ghost:hover:not(:disabled) {
    background: var(--accent-soft);
  }
  .btn:disabled {
    opacity: 0.55;
  }
  .btn.block {
    width: 100%;
  }
  .icon-btn {
    display: inline-grid;
    place-items: center;
    width: 40px;
    height: 40px;
    flex: none;
    border-radius: 50%;
    border: 0;
    background: transparent;
    color: var(--text-2);
  }
  .icon-btn:hover {
    background: var(--surface-2);
    color: var(--text);
  }

  .field {
    display: grid;
    gap: 6px;
  }
  .field > label,
  .label {
    font-size: 13px;
    font-weight: 600;
    color: var(--text-2);
  }
  input[type='text'],
  input[type='password'],
  input[type='search'],
  textarea {
    font: inherit;
    color: var(--text);
    width: 100%;
    min-height: 44px;
    padding: 10px 12px;
    border: 1px solid var(--border);
    border-radius: 10px;
    background: var(--surface);
    transition:
      border-color 120ms ease,
      box-shadow 120ms ease;
  }
  input:focus,
  textarea:focus {
    outline: none;
    border-color: var(--accent);
    box-shadow: 0 0 0 3px var(--accent-soft);
  }
  input[aria-invalid='true'] {
    border-color: var(--danger);
  }
  .hint {
    font-size: 13px;
    color: var(--text-3);
  }

  .avatar {
    position: relative;
    display: inline-grid;
    place-items: center;
    flex: none;
    width: 44px;
    height: 44px;
    border-radius: 50%;
    color: #fff;
    font-weight: 700;
    font-size: 17px;
    text-transform: uppercase;
    user-select: none;
  }
  .avatar.small {
    width: 36px;
    height: 36px;
    font-size: 15px;
  }
  .avatar.large {
    width: 88px;
    height: 88px;
    font-size: 36px;
  }
  .avatar .dot {
    position: absolute;
    right: 0;
    bottom: 0;
    width: 13px;
    height: 13px;
    border-radius: 50%;
    background: var(--online);
    border: 2px solid var(--surface);
  }

  .banner {
    display: flex;
    gap: 12px;
    align-items: flex-start;
    padding: 12px 14px;
    border-radius: var(--radius);
    font-size: 14px;
  }
  .banner.warning {
    background: var(--warning-soft);
    color: var(--warning);
    border: 1px solid var(--warning-border);
  }
  .banner.error {
    background: var(--danger-soft);
    color: var(--danger);
  }
  .banner.info {
    background: var(--accent-soft);
    color: var(--accent-text);
  }
  .chip {
    display: inline-flex;
    align-items: center;
    gap: 4px;
    padding: 2px 8px;
    border-radius: 999px;
    font-size: 12px;
    font-weight: 600;
  }
  .chip.verified {
    background: var(--success-soft);
    color: var(--success);
  }
  .chip.unverified {
    background: var(--surface-3);
    color: var(--text-2);
  }
  .chip .icon {
    width: 14px;
    height: 14px;
  }

  .logo .logo-tile {
    fill: var(--accent);
  }
  .logo .logo-bubble {
    fill: #fff;
  }
  .logo .logo-lock {
    fill: var(--accent);
  }
  .logo .logo-shackle {
    stroke: var(--accent);
  }
`
