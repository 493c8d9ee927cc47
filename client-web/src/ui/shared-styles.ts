/**
 * Styles some of the components share, on top of `base` from theme.ts: the main pane with its
 * header bar (conversation, contact details, settings), and the scrolling page of cards (contact
 * details, settings). A component lists them after `base` and before its own styles, which set
 * what differs (a page's spacing, a heading's extras).
 */
import { css } from 'lit'

/** A full-height pane in the main column, with a header bar at the top (back button, title). */
export const pane = css`
  :host {
    display: flex;
    flex-direction: column;
    height: 100%;
    min-height: 0;
    background: var(--bg);
  }
  header {
    display: flex;
    align-items: center;
    gap: 10px;
    padding: 10px 12px;
    min-height: 64px;
    background: var(--surface);
    border-bottom: 1px solid var(--border);
  }
  header h2 {
    font-size: 17px;
    font-weight: 700;
  }
`

/**
 * Below the header, a scrolling page of cards with a heading and text each, and rows of buttons.
 * The gaps of `.content` and `.card` and the card's padding are the component's to set.
 */
export const cardPage = css`
  .scroll {
    flex: 1;
    overflow-y: auto;
    padding: 24px 16px 40px;
  }
  .content {
    display: grid;
    max-width: 640px;
    margin: 0 auto;
  }
  .card {
    display: grid;
    border-radius: 16px;
    background: var(--surface);
    box-shadow: var(--shadow-1);
  }
  .card h3 {
    font-size: 16px;
    font-weight: 700;
  }
  .card p {
    color: var(--text-2);
    font-size: 14px;
  }
  .actions {
    display: flex;
    flex-wrap: wrap;
    gap: 10px;
  }
`

/**
 * A modal `<dialog>` card over a dimmed page (the warnings, the device dialogs): its frame and
 * backdrop. A component sets its own width and the layout of what is inside.
 */
export const modalDialog = css`
  dialog {
    padding: 0;
    border: 0;
    border-radius: 18px;
    background: var(--surface);
    color: var(--text);
    box-shadow: var(--shadow-2);
  }
  dialog::backdrop {
    background: rgb(10 15 25 / 55%);
  }
`

/** A small turning ring for work under way (`<span class="spinner">`), still under reduced motion. */
export const spinner = css`
  .spinner {
    width: 14px;
    height: 14px;
    border-radius: 50%;
    border: 2px solid var(--border);
    border-top-color: var(--accent);
    animation: spin 900ms linear infinite;
  }
  @keyframes spin {
    to {
      transform: rotate(360deg);
    }
  }
  @media (prefers-reduced-motion: reduce) {
    .spinner {
      animation: none;
    }
  }
`
