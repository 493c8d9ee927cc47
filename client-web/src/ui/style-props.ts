/**
 * Sets inline style properties through the CSSOM (`element.style.setProperty`), which the app's
 * Content-Security-Policy allows, unlike a `style` attribute (Lit's styleMap writes the attribute on
 * first render, which `style-src 'self'` blocks). Used on an element: `<div ${styleProps({...})}>`.
 */
import { type ElementPart, noChange, nothing } from 'lit'
import { Directive, directive, type PartInfo, PartType } from 'lit/directive.js'

class StyleProps extends Directive {
  private previous = new Set<string>()

  constructor(partInfo: PartInfo) {
    super(partInfo)
    if (partInfo.type !== PartType.ELEMENT) {
      throw new Error('styleProps: expected to be used on an element, got another binding')
    }
  }

  render(_properties: Readonly<Record<string, string>>) {
    return nothing
  }

  override update(part: ElementPart, [properties]: [Readonly<Record<string, string>>]) {
    const style = (part.element as HTMLElement | SVGElement).style
    for (const name of this.previous) if (!(name in properties)) style.removeProperty(name)
    for (const [name, value] of Object.entries(properties)) style.setProperty(name, value)
    this.previous = new Set(Object.keys(properties))
    return noChange
  }
}

export const styleProps = directive(StyleProps)
