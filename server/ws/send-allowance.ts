/**
 * A user's allowance of sends on this node, shared by all of their connections here: `take`
 * answers whether one more send may go through. On a single node it is a TokenBucket
 * (token-bucket.ts) and answers at once. A cluster member's (cluster-send-rate.ts) answers at once
 * too while it holds tokens leased from Redis, and with a promise only when it must ask for more;
 * sends that take meanwhile are answered in the order they came.
 */
export interface SendAllowance {
  take(now: number): boolean | Promise<boolean>
}
