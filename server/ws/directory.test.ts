/**
 * The username cache (directory.ts): in a cluster an entry is trusted for a bounded time only,
 * and a send refused because its recipient is gone makes the id unresolvable at once.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../test/databases.js'
import { UserDirectory } from './directory.js'

describe('UserDirectory', () => {
  let database: TestDatabase
  let clock = 1_700_000_000_000
  const now = () => clock

  beforeEach(async () => {
    database = await createTestDatabase('sqlite')
  })

  afterEach(async () => {
    await database.dispose()
  })

  it('without a TTL keeps an entry until it is forgotten (a single node hears every deletion)', () => {
    const directory = new UserDirectory(database.db, 10, now)
    directory.remember({ id: 7, username: 'bob' })
    clock += 365 * 24 * 3600 * 1000
    expect(directory.cached('bob')).toEqual({ id: 7, username: 'bob' })
    directory.forget('bob')
    expect(directory.cached('bob')).toBeUndefined()
  })

  it('with a TTL drops an entry once it has passed, so a lost account.deleted is not trusted for ever', async () => {
    const directory = new UserDirectory(database.db, 10, now, 1_000)
    directory.remember({ id: 7, username: 'bob' })
    clock += 999
    expect(directory.cached('bob')).toEqual({ id: 7, username: 'bob' })
    clock += 1
    expect(directory.cached('bob')).toBeUndefined()
    // lookup reads the database again: no such user there, so nothing resolves.
    expect((await directory.lookup(['bob'])).size).toBe(0)
  })

  it('forgets every name of an id found deleted by a refused send', () => {
    const directory = new UserDirectory(database.db, 10, now, 60_000)
    directory.remember({ id: 7, username: 'bob' })
    directory.remember({ id: 8, username: 'carol' })
    directory.forgetId(7)
    expect(directory.cached('bob')).toBeUndefined()
    expect(directory.cached('carol')).toEqual({ id: 8, username: 'carol' })
  })
})
