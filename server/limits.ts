/**
 * Every limit the server enforces on accounts and keys, in one place, each with its reason.
 * Protocol-wide limits (username length, prekey batch size, message size) live in shared/limits.ts.
 */

const SECOND = 1000
const MINUTE = 60 * SECOND
const DAY = 24 * 60 * MINUTE

/**
 * bcrypt work factor. Cost 12 is about 220 ms per hash on the target machines: slow enough to make
 * offline guessing expensive, fast enough that login stays interactive. The hash runs on libuv's
 * thread pool (bcrypt's async API), never on the event loop.
 */
export const BCRYPT_COST = 12

/**
 * Session tokens live 30 days from login, then the client logs in again (it still holds the
 * password-derived state and the RSA key). Long enough not to nag; short enough that a token lifted
 * from a lost device stops working on its own. Absolute, not sliding: use does not extend it.
 */
export const TOKEN_LIFETIME_MS = 30 * DAY

/** Session tokens are 256-bit random values (the protocol fixes 32 bytes). */
export const TOKEN_BYTES = 32

/**
 * Live tokens per user. Each login issues a new token and leaves the others valid (a user may run
 * the web and the terminal client at once), so the oldest beyond this count are revoked at login to
 * keep the table bounded.
 */
export const MAX_TOKENS_PER_USER = 10

/**
 * Failed logins allowed per account within LOGIN_FAILURE_WINDOW_MS before further attempts for it are
 * refused with 429 until the window ends. Ten wrong guesses in 15 minutes is far beyond typing
 * mistakes and caps online guessing at about 1,000 a day per account.
 */
export const LOGIN_FAILURES_PER_ACCOUNT = 10

/**
 * Failed logins allowed per client address within the window. Higher than the per-account limit
 * because many users may share one address (NAT, a campus), low enough to stop one address from
 * spraying a common password across many accounts.
 */
export const LOGIN_FAILURES_PER_ADDRESS = 100

export const LOGIN_FAILURE_WINDOW_MS = 15 * MINUTE

/**
 * Counters the in-memory login limiter keeps at most. Bounds memory against an attacker who sends
 * failures for millions of invented usernames; when full, expired entries go first, then the oldest.
 */
export const LOGIN_LIMITER_MAX_ENTRIES = 100_000

/** Requests per address per window to /register (each costs a bcrypt hash and many signature checks). */
export const REGISTER_RATE_LIMIT = { max: 20, timeWindowMs: 15 * MINUTE }

/** Requests per address per window to /login (a bcrypt compare each), on top of the failure limits. */
export const LOGIN_RATE_LIMIT = { max: 60, timeWindowMs: MINUTE }

/**
 * Bundle fetches per user per window. Each fetch consumes one of the target's one-time prekeys, so
 * an unbounded rate would let one account drain everybody's supply (Signal limits this too).
 */
export const BUNDLE_RATE_LIMIT = { max: 100, timeWindowMs: MINUTE }

/** One-time prekeys stored per user at most: five uploads of shared/limits.ts ONE_TIME_PREKEY_BATCH. */
export const MAX_ONE_TIME_PREKEYS_PER_USER = 500

/**
 * Signed prekeys kept per user: the current one and two predecessors. Only the newest is handed
 * out; the older rows record what peers may still be using while messages to them drain.
 */
export const SIGNED_PREKEYS_KEPT = 3

/** Results of a username search at most (the response schema's maxItems). */
export const USER_SEARCH_LIMIT = 50

/**
 * Largest REST body. A registration with 100 one-time prekeys is about 20 KiB of JSON; 64 KiB
 * leaves room without letting a client make the server parse megabytes.
 */
export const HTTP_BODY_LIMIT_BYTES = 64 * 1024

/**
 * Time allowed to receive a whole HTTP request (headers and body). Bounds slow-sending clients that
 * would otherwise hold sockets open; WebSocket connections are unaffected once upgraded.
 */
export const HTTP_REQUEST_TIMEOUT_MS = 30 * SECOND

/** How long shutdown waits for in-flight requests before exiting anyway. */
export const SHUTDOWN_GRACE_MS = 10 * SECOND

/** How often expired session tokens are deleted (also once at startup). */
export const MAINTENANCE_INTERVAL_MS = 60 * MINUTE
