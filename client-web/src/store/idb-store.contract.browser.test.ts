/** The PWA's IndexedDB store against the ClientStore contract, in Chromium. */
import { describeStoreContract } from '../../../shared/client/test/store-contract.js'
import { IdbStore } from './idb-store.js'

let counter = 0

describeStoreContract('IdbStore', {
  open: () => {
    counter++
    return IdbStore.openNamed(`secure-chat:contract-${Date.now().toString(36)}-${counter}`)
  },
  reopen: (closed) => IdbStore.openNamed((closed as IdbStore).name),
  dispose: async (closed) => {
    // Opening again and wiping makes the close delete the database.
    const store = await IdbStore.openNamed((closed as IdbStore).name)
    await store.wipe()
    await store.close()
  },
})
