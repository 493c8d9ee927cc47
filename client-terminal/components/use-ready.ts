import { useEffect, useState } from 'react'

/**
 * True once this component's effects have run: React runs effects children first and in order,
 * so a component that calls this after `useInput` (and renders a TextInput) knows that keystrokes
 * now reach it. Before that, Ink drops what is typed; inputs show their prompt only when ready, so
 * neither a person nor a test types into the void.
 */
export function useReady(): boolean {
  const [ready, setReady] = useState(false)
  useEffect(() => setReady(true), [])
  return ready
}
