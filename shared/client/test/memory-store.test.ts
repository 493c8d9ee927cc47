/** MemoryStore, the reference the core's unit tests run on, against the ClientStore contract. */
import { MemoryStore } from '../store.js'
import { describeStoreContract } from './store-contract.js'

describeStoreContract('MemoryStore', {
  open: async () => new MemoryStore(),
  // Closing a MemoryStore keeps its records: tests "reopen" a client on the same object.
  reopen: async (closed) => closed,
})
