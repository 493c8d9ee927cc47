/**
 * What the app's modal warnings share (the key-change warning, the start-over confirmation): a
 * `<dialog>` shown with `showModal` while the component has something to warn about, laid out as a
 * warning badge, a title, the text, anything more, and the actions; and the styles for all that.
 *
 * A dialog's `close` event comes a task after it closed, so it may come after the dialog was
 * opened again (for the same subject or another): that close is over, and is not told. Nor is a
 * close its owner asked for (the subject unset): only a close by the user, or by the component's
 * own buttons, reaches `onClose`, once, with the subject that was shown.
 */
import { type CSSResultGroup, css, html, LitElement, type TemplateResult } from 'lit'
import { query } from 'lit/decorators.js'
import { icons } from './icons.js'
import { modalDialog } from './shared-styles.js'
import { base } from './theme.js'

export interface WarningDialogContent<Subject> {
  /** Prefix of the title's and the text's ids (`<id>-title`, `<id>-text`), which name the dialog. */
  readonly id: string
  readonly title: TemplateResult | string
  readonly text: TemplateResult
  /** Between the text and the actions. */
  readonly more?: TemplateResult | string
  readonly actions: TemplateResult
  /** The dialog was closed by the user or by the component (not by its owner), showing `subject`. */
  readonly onClose: (subject: Subject) => void
  /** On `cancel` (Escape): may call `preventDefault` to keep the dialog open. */
  readonly onCancel: (event: Event) => void
}

export abstract class WarningDialog<Subject> extends LitElement {
  static override styles: CSSResultGroup = [
    base,
    modalDialog,
    css`
      dialog {
        width: min(480px, calc(100vw - 32px));
      }
      .body {
        display: grid;
        gap: 14px;
        padding: 26px 24px 22px;
      }
      .badge {
        display: grid;
        place-items: center;
        width: 48px;
        height: 48px;
        border-radius: 50%;
        background: var(--warning-soft);
        color: var(--warning);
      }
      .badge .icon {
        width: 26px;
        height: 26px;
      }
      h2 {
        font-size: 19px;
        font-weight: 700;
      }
      p {
        color: var(--text-2);
        font-size: 14.5px;
      }
      .text {
        display: grid;
        gap: 10px;
      }
      .actions {
        display: flex;
        flex-wrap: wrap-reverse;
        justify-content: flex-end;
        gap: 10px;
        padding-top: 6px;
      }
    `,
  ]

  @query('dialog') protected dialog!: HTMLDialogElement

  /** The subject on screen; undefined once its close was told, or when its owner closed it. */
  private shownFor: Subject | undefined

  /**
   * Keeps the dialog showing while there is a `subject` to warn about: shows it as a modal when
   * one is set and it is not showing, runs `opening` first for each subject it shows (one that
   * takes the place of another while open too), and closes it when none is.
   */
  protected showWhileSet(subject: Subject | undefined, opening?: (subject: Subject) => void): void {
    if (subject && (!this.dialog.open || subject !== this.shownFor)) {
      opening?.(subject)
      this.shownFor = subject
      if (!this.dialog.open) this.dialog.showModal()
    } else if (!subject && this.dialog.open) {
      // Its owner closes it: nothing to tell the owner.
      this.shownFor = undefined
      this.dialog.close()
    }
  }

  private closed(onClose: (subject: Subject) => void): void {
    // Opened again since this close: the close is over.
    if (this.dialog.open) return
    const subject = this.shownFor
    if (subject === undefined) return
    this.shownFor = undefined
    onClose(subject)
  }

  protected renderDialog(content: WarningDialogContent<Subject>): TemplateResult {
    return html`<dialog
      aria-labelledby="${content.id}-title"
      aria-describedby="${content.id}-text"
      @close=${() => this.closed(content.onClose)}
      @cancel=${content.onCancel}
    >
      <div class="body">
        <span class="badge">${icons.alert()}</span>
        <h2 id="${content.id}-title">${content.title}</h2>
        <div id="${content.id}-text" class="text">${content.text}</div>
        ${content.more ?? ''}
        <div class="actions">${content.actions}</div>
      </div>
    </dialog>`
  }
}
