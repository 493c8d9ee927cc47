/**
 * Every limit the server enforces on accounts and keys, in one place, each with its reason.
 * Protocol-wide limits (username length, prekey batch size, message size) live in shared/limits.ts.
 */

import { base64UrlLength } from '../shared/codec/schema.js'
import { USER_SEARCH_MAX_RESULTS } from '../shared/limits.js'
import { MAX_PROVISIONING_SEALED_BYTES } from '../shared/provisioning.js'

const SECOND = 1000
const MINUTE = 60 * SECOND
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

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

/**
 * Devices one account may have at once (linked and not removed). Each device is one more copy of
 * every message a contact sends and of every message the account sends (the sent copies), and one
 * more place the identity key lives; Signal allows 6 (its primary and 5 linked devices).
 * Configurable (`--max-devices`, MAX_DEVICES_PER_ACCOUNT).
 */
export const MAX_DEVICES_PER_ACCOUNT = 6

/**
 * How long a link token lives (POST /devices/link-token): it is made when the user approves a new
 * device and used within seconds; as long as a link code (PROVISIONING_CHANNEL_TTL_MS), so that
 * an approval near the end of the code's life still works.
 */
export const LINK_TOKEN_TTL_MS = 10 * 60 * 1000

/** Live link tokens per account: a new one beyond it replaces the oldest (links are one at a time). */
export const MAX_LINK_TOKENS_PER_ACCOUNT = 3

/** Session tokens are 256-bit random values (the protocol fixes 32 bytes). */
export const TOKEN_BYTES = 32

/**
 * Live tokens per device of an account. Each login issues a new token and leaves the others valid
 * (one device may hold several: the terminal's scripts and its interactive client on one store,
 * a log-in again before an older session expired), so the
 * oldest of that device beyond this count are revoked at login to keep the table bounded; a log-in
 * on one device never ends another device's sessions.
 */
export const MAX_TOKENS_PER_DEVICE = 10

/**
 * Failed log-ins from unknown devices per account (from any address) beyond which /reinstall for
 * that account is refused with 429 until no failure has come for LOGIN_FAILURE_WINDOW_MS. Reinstall
 * replaces every key with the password alone, so it keeps this strict limit even though anyone can
 * trigger it; log-ins are only slowed instead (LOGIN_ACCOUNT_DELAY_AFTER).
 */
export const LOGIN_FAILURES_PER_ACCOUNT = 10

/**
 * Failed logins allowed per client address (an IPv6 /64) within the window, across accounts. Higher
 * than the per-account limits
 * because many users may share one address (NAT, a campus), low enough to stop one address from
 * spraying a common password across many accounts.
 */
export const LOGIN_FAILURES_PER_ADDRESS = 100

/** The window of the failed-log-in counts (per account it restarts with each failure). */
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

/**
 * One-time prekeys handed out per target user per window, across all requesters. Without it, many
 * accounts (each within BUNDLE_RATE_LIMIT) could take a user's keys as fast as the user's client
 * makes them (every `prekeys.low` asks for another ONE_TIME_PREKEY_BATCH). Beyond it the bundle is
 * still served, without a one-time prekey: X3DH proceeds on the signed prekey alone (a first message
 * without the one-time key's extra forward secrecy), so a drain cannot stop anyone from starting a
 * conversation. Thirty an hour is far more new sessions than a person starts being asked for; a
 * sliding window over the claims recorded in one_time_prekey_claims, so several server processes
 * on one database share it.
 */
export const ONE_TIME_PREKEY_CLAIMS_PER_TARGET = { max: 30, timeWindowMs: HOUR }

/**
 * A requester that fetches the same user's bundle again within this long after being handed one of
 * their one-time prekeys gets the bundle without a one-time prekey, so re-fetching claims nothing.
 * The earlier key is not handed out again: the requester may already have used it (a session that
 * a retry request, docs/protocol.md §8.6, replaces within the window), and a second prekey message
 * naming a key the target has deleted could not be opened, whereas the signed prekey alone always
 * can. One requester therefore takes at most six of a target's keys an hour.
 */
export const BUNDLE_REFETCH_WINDOW_MS = 10 * MINUTE

/** One-time prekeys stored per user at most: five uploads of shared/limits.ts ONE_TIME_PREKEY_BATCH. */
export const MAX_ONE_TIME_PREKEYS_PER_USER = 500

/**
 * Signed prekeys kept per user: the current one and two predecessors. Only the newest is handed
 * out; the older rows record what peers may still be using while messages to them drain.
 */
export const SIGNED_PREKEYS_KEPT = 3

/** Results of a username search at most (the response schema's maxItems, shared/limits.ts). */
export const USER_SEARCH_LIMIT = USER_SEARCH_MAX_RESULTS

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

/**
 * How long /ready waits for one dependency (a `select 1`, a bus ping) before calling it failed. A
 * PostgreSQL behind a firewall that drops packets never answers, and the pool has no connect timeout
 * (db/connect.ts), so without one the probe would hang instead of saying "not ready". Shorter than
 * the probe timeouts of common orchestrators (Kubernetes: 1 s by default, usually raised; load
 * balancers 2–5 s), so the answer is a 503 rather than a timeout where it can be.
 */
export const READY_CHECK_TIMEOUT_MS = 2 * SECOND

/**
 * /metrics counts queue rows up to this many (`secure_chat_queue_depth` saturates there): counting
 * stops at the bound, so a scrape costs at most this many index entries, a few milliseconds, even
 * when a backlog runs into the millions. Beyond it the exact figure matters less than "a lot".
 */
export const QUEUE_DEPTH_SCRAPE_BOUND = 100_000

// --- Relay (WSS /ws) and the offline queue ------------------------------------------------------

/**
 * Largest client frame the relay processes: a `send` frame carrying the largest envelope
 * (shared/limits.ts MAX_ENVELOPE_BYTES, 65,827 bytes, so 87,770 base64url characters) plus room for
 * the JSON around it (the id, a recipient name of up to 64 characters even if every one is escaped,
 * the field names). Frames above it are answered with E2E_ERR_TOO_LARGE and count as bad frames.
 */
export const MAX_FRAME_BYTES = 90 * 1024

/**
 * Largest `send.devices` frame (shared/limits.ts, 1,048,576 bytes): one envelope per device of the
 * recipient and per other device of the sender, eleven of the largest at the default of 6 devices
 * per account. Any other frame stays within MAX_FRAME_BYTES.
 */
export { MAX_DEVICE_SEND_FRAME_BYTES } from '../shared/limits.js'

/**
 * Hard cap on one WebSocket message (ws `maxPayload`): the receiver refuses a longer frame from its
 * header, before buffering it, and closes with 1009 (Message Too Big). Between
 * MAX_DEVICE_SEND_FRAME_BYTES and this the client still gets an error frame it can understand;
 * beyond it, memory matters more.
 */
export const WS_MAX_PAYLOAD_BYTES = 1024 * 1024 + 64 * 1024

/**
 * Time a new socket has to authenticate (its first frame must be `auth`). An unauthenticated socket
 * costs a TLS session and a file descriptor; ten seconds covers a slow mobile link's round trips.
 */
export const AUTH_TIMEOUT_MS = 10 * SECOND

/**
 * Bad frames (malformed, oversized, wrongly typed, out of order) one authenticated connection may
 * send before the server closes it with 1008. A correct client sends none; a small allowance keeps
 * one client bug from causing a reconnect loop, and the cap bounds the log and CPU a hostile client
 * can cost. The count never decays: reconnecting (and authenticating again) resets it.
 */
export const MAX_BAD_FRAMES_PER_CONNECTION = 10

/**
 * Undelivered messages one recipient may have queued. Beyond it, senders get E2E_ERR_QUEUE_FULL and
 * retry later. Ten thousand is weeks of a busy chat for an offline user, and drains in well under a
 * second on reconnect (bench/server.ts measures it).
 */
export const MAX_QUEUED_MESSAGES_PER_RECIPIENT = 10_000

/**
 * Bytes of undelivered envelopes one recipient may have queued. A typical message is ~300 bytes, but
 * an envelope may be 64 KiB: without this, one hostile sender could make a single offline recipient
 * cost 640 MiB of disk.
 */
export const MAX_QUEUED_BYTES_PER_RECIPIENT = 64 * 1024 * 1024

/**
 * How long an undelivered message waits for its recipient before it expires and is purged. Signal
 * keeps undelivered messages at least 30 days; so do we. The same row (without its body) also
 * remembers the (sender, message id) of an acknowledged message until this time has passed since it
 * was first accepted, so a sender's retry within that window is never queued a second time.
 */
export const MESSAGE_TTL_MS = 30 * DAY

/**
 * How long the name of a deleted account stays reserved: nobody can register it before this has
 * passed, so nobody can take it over and pass for its old owner with the contacts who still hold
 * the conversation. Three times MESSAGE_TTL_MS: every message sent to the account before it went
 * has long expired, and a contact who is away for weeks still meets "this account was deleted"
 * (E2E_ERR_ACCOUNT_DELETED) rather than a stranger under the old name. Signal likewise keeps a
 * deleted account's username from being claimed at once.
 */
export const DELETED_USERNAME_HOLD_MS = 90 * DAY

/** Expired messages deleted per statement by the maintenance purge (it repeats until done). */
export const MESSAGE_PURGE_BATCH = 10_000

/**
 * Simultaneous authenticated connections per user (several clients or tabs of one account). A new
 * connection beyond it closes the user's oldest one (likely a dead link not yet noticed by the
 * heartbeat). Bounds what one stolen token can hold open.
 */
export const MAX_CONNECTIONS_PER_USER = 10

/**
 * Sends per user (all of the user's connections together) as a token bucket: a sustained rate and a
 * burst. A person types far slower; the burst lets a client flush an outbox written while offline.
 * Beyond it a send is refused with E2E_ERR_RATE_LIMITED (and the client retries later).
 */
export const SEND_RATE_PER_USER = { perSecond: 100, burst: 1_000 }

/**
 * In a cluster the send rate's bucket is in Redis (ws/cluster-send-rate.ts), and a node takes
 * tokens from it a lease at a time: this fraction of the burst (50 sends as shipped), at least one.
 * Between leases the node decides alone, with no round trip on a message's path. Each node may hold
 * one lease unspent, so the cluster allows at most burst + rate·t + nodes × lease: a twentieth
 * keeps that within 15% of the burst on three nodes, while a user sending at the full rate costs
 * Redis two requests a second per node.
 */
export const SEND_RATE_LEASE_FRACTION = 1 / 20

/**
 * Frames per connection (every kind; a presence subscription costs one plus one per name) as a token
 * bucket. Bounds the CPU one socket can take with cheap frames such as acks and subscriptions.
 */
export const FRAME_RATE_PER_CONNECTION = { perSecond: 400, burst: 4_000 }

/**
 * Messages delivered to one connection and not yet acknowledged, at most. The server sends no more
 * until acknowledgements arrive, so a slow or stuck client holds a bounded amount of server memory,
 * and a reconnecting client gets its queue in a steady stream rather than all at once.
 */
export const DELIVERY_WINDOW = 500

/**
 * How often, with a bus that can lose events (several nodes over Redis), each node asks the
 * database whether the queues of its caught-up connections grew without a signal reaching it: a
 * lost publish delays a delivery by at most about this much. One query per tick for all of them.
 */
export const RELAY_RECHECK_INTERVAL_MS = 5 * SECOND

/**
 * How often, with a bus that can lose events, each node checks that the sessions of its open
 * sockets still exist: a logout, reinstall or account deletion whose event was lost (on the
 * publisher's side or this one's) ends the socket after at most about this long instead of never.
 * One query per thousand sockets per tick.
 */
export const RELAY_SESSION_RECHECK_INTERVAL_MS = 30 * SECOND

/** Queued messages read from the database per query while draining. */
export const DRAIN_BATCH = 250

/**
 * Bytes waiting in a socket's send buffer above which the relay stops writing deliveries to it and
 * stops reading its frames, until the buffer drains (a slow reader slows its own sends, nobody else's).
 */
export const SOCKET_HIGH_WATER_BYTES = 1024 * 1024

/**
 * Bytes waiting in a socket's send buffer at which the connection is dropped: only frames that are
 * not flow-controlled (accepted, errors, presence) can push it this far, so the reader has stopped.
 */
export const SOCKET_MAX_BUFFERED_BYTES = 16 * 1024 * 1024

/**
 * Frames received while the connection waits for a lookup (an unknown recipient, a subscription)
 * that are held in order; beyond it the socket stops being read until the backlog is handled.
 */
export const MAX_PENDING_FRAMES_PER_CONNECTION = 64

/**
 * Ping interval. A connection that has not answered the previous ping (nor sent anything) when the
 * next one is due is terminated, so a dead link is noticed within one to two intervals; 30 s stays
 * under common NAT and proxy idle timeouts (nginx's proxy_read_timeout is 60 s).
 */
export const HEARTBEAT_INTERVAL_MS = 30 * SECOND

/** Users one connection may watch for presence (a contact list; the frame itself allows 500 names). */
export const MAX_PRESENCE_SUBSCRIPTIONS_PER_CONNECTION = 1_000

/**
 * Relations one user may keep (presence grants and blocks together, db/relations.ts): a contact
 * list with room to spare. Bounds the rows one account can make the server store.
 */
export const MAX_RELATIONS_PER_USER = 10_000

/** Usernames the relay keeps resolved in memory (users are never renamed; deletions are told). */
export const DIRECTORY_CACHE_ENTRIES = 100_000

/**
 * In a cluster, how long a resolved username is trusted: the `account.deleted` that makes a node
 * forget it travels on a bus that may lose it, and a send to the stale id is refused by the
 * database anyway (a foreign-key violation, E2E_ERR_ACCOUNT_DELETED), so this only bounds how long
 * a presence subscription could still resolve a deleted name. A single node never loses the event.
 */
export const DIRECTORY_CLUSTER_ENTRY_TTL_MS = 60 * SECOND

/**
 * In a cluster, how often a node renews its entry in Redis (ws/cluster-presence.ts) and sweeps the
 * nodes that stopped renewing theirs.
 */
export const CLUSTER_PRESENCE_REFRESH_INTERVAL_MS = 5 * SECOND

/**
 * How long after its last renewal a node that stopped (killed, cut off from Redis) still counts:
 * its users' sockets there then no longer make them online, nor count against their connection
 * limit, and their watchers hear "offline". Three refreshes, so one slow one is not a death.
 */
export const CLUSTER_PRESENCE_NODE_TTL_MS = 3 * CLUSTER_PRESENCE_REFRESH_INTERVAL_MS

/** How long shutdown waits for clients to answer the 1001 close before dropping their sockets. */
export const WS_CLOSE_GRACE_MS = 2 * SECOND

// --- Failed log-ins, device proofs and per-address limits (docs/protocol.md §13.3) --------------

/**
 * Failed log-ins allowed per (account, client address) within LOGIN_FAILURE_WINDOW_MS; beyond it
 * that address is refused for that account (429) until the window ends. Ten wrong guesses is far
 * beyond typing mistakes, and the refusal touches only the guesser's own address.
 */
export const LOGIN_FAILURES_PER_ACCOUNT_ADDRESS = 10

/**
 * Failed log-ins from unknown devices per account after which each further attempt from an unknown
 * device waits: LOGIN_ACCOUNT_DELAY_BASE_MS after the last failure, doubling with every failure up
 * to LOGIN_ACCOUNT_DELAY_MAX_MS. Twice the per-address allowance, so only an account attacked from
 * several addresses is slowed. A device that proves it holds the account's login key never waits,
 * and a wait is seconds to minutes, never a lockout: it caps distributed guessing at about 700 a
 * day per account, against the 960 of the former hard per-account lock.
 */
export const LOGIN_ACCOUNT_DELAY_AFTER = 20
export const LOGIN_ACCOUNT_DELAY_BASE_MS = SECOND
export const LOGIN_ACCOUNT_DELAY_MAX_MS = 2 * MINUTE

/**
 * Failed log-ins per window from a device that proved it holds the login key (its own typos, or a
 * stolen device guessing the password): counted apart from every address, so nobody else can use
 * them up.
 */
export const LOGIN_FAILURES_PER_DEVICE = 10

/**
 * How long a device proof (the decrypted login challenge) stays valid: it is bound to the 5-minute
 * period it was made in and accepted during the next one, so it cannot be kept for later.
 */
export const LOGIN_PROOF_PERIOD_MS = 5 * MINUTE

/**
 * IPv6 prefix length by which clients are counted for every per-address limit: one subscriber is
 * usually given a whole /64, and could rotate through its addresses past any per-address count.
 */
export const IPV6_ADDRESS_PREFIX_BITS = 64

/**
 * WebSocket upgrades from one address (an IPv6 /64) that have not authenticated yet, at most; a
 * further upgrade is refused with 429 before the WebSocket handshake. Each costs a TLS session and
 * a file descriptor for up to AUTH_TIMEOUT_MS; a client authenticates within a round trip, so even
 * a household or office behind one NAT rarely has more than a few unauthenticated at once.
 */
export const MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS = 32

// --- Fair queue: each sender's share of a recipient's queue (issue 10) ---------------------------

/**
 * Undelivered messages one sender may have queued for one recipient: a tenth of the recipient's
 * whole queue (MAX_QUEUED_MESSAGES_PER_RECIPIENT). Without a share, one account could fill an
 * offline user's queue within one burst of the send rate limit and everyone else would be refused
 * for up to MESSAGE_TTL_MS. A thousand is still days of a busy chat from one person. Beyond it the
 * sender gets E2E_ERR_QUEUE_SHARE_FULL (and retries once the recipient has drained some).
 */
export const MAX_QUEUED_MESSAGES_PER_SENDER = 1_000

/**
 * Bytes of undelivered envelopes one sender may have queued for one recipient: an eighth of the
 * recipient's whole queue (MAX_QUEUED_BYTES_PER_RECIPIENT), so about 127 of the largest envelopes
 * (64 KiB) or 25,000 typical ones. Eight accounts would have to collude to fill a queue by bytes.
 */
export const MAX_QUEUED_BYTES_PER_SENDER = 8 * 1024 * 1024

// --- TLS handshakes per address (issue 10, item 8) -----------------------------------------------

/**
 * Time a new TCP connection has to finish its TLS handshake before the server drops it (Node's
 * default is 120 s). A connection that never sends its ClientHello, or stops half-way, holds a file
 * descriptor and a TLS state while costing its sender nothing; ten seconds covers the two round
 * trips of a handshake over a slow mobile link, as AUTH_TIMEOUT_MS does for the `auth` frame.
 */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10 * SECOND

/**
 * TLS handshakes in progress (TCP connected, handshake not yet finished) from one address (an IPv6
 * /64) at once; a further connection is closed at once, before any TLS work. With the timeout above
 * this bounds what one address can hold open without ever completing a handshake. A browser opens
 * at most six connections to a host and the terminal client two, so even an office behind one NAT
 * address rarely has this many handshakes under way at the same moment.
 */
export const MAX_TLS_HANDSHAKES_IN_PROGRESS_PER_ADDRESS = 64

/**
 * New TCP connections (each a TLS handshake: an ECDHE and a signature on the server's CPU) per
 * address as a token bucket; beyond it a connection is closed before any TLS work. The burst lets a
 * NAT full of clients reconnect after a server restart; the sustained rate is far beyond what
 * keep-alive clients need (they reuse their connections) but stops one address from making the
 * server sign thousands of handshakes a second.
 */
export const TLS_HANDSHAKE_RATE_PER_ADDRESS = { perSecond: 50, burst: 500 }

/**
 * Addresses whose handshake rate the server remembers at most. Bounds memory against an attacker
 * rotating through many addresses (a /48 holds 65,536 /64s); when full, addresses whose bucket has
 * refilled go first, then the oldest.
 */
export const TLS_HANDSHAKE_LIMITER_MAX_ADDRESSES = 100_000

// --- Provisioning channels: linking a device (issue 12, docs/protocol.md §13.7) ------------------

/**
 * How long a provisioning channel, and so the link code that names it, lives after it is opened.
 * Long enough to fetch the other device, unlock it and compare the check on both screens; short
 * enough that a code photographed off a screen or left in a chat is soon worth nothing.
 */
export const PROVISIONING_CHANNEL_TTL_MS = 10 * MINUTE

/**
 * Channels opened per address per window (POST /provisioning, unauthenticated). Each costs a row
 * for PROVISIONING_CHANNEL_TTL_MS; a person retries a link a few times at most.
 */
export const PROVISIONING_OPEN_RATE_LIMIT = { max: 20, timeWindowMs: 15 * MINUTE }

/**
 * Channels one address (an IPv6 /64) may have open at once (neither closed nor expired); one more
 * is refused with E2E_ERR_TOO_MANY_LINKS until one of them ends. A device links one device at a
 * time, and a household behind one NAT a few; without it an address could keep
 * PROVISIONING_OPEN_RATE_LIMIT × TTL worth of channels (and their messages) alive. Counted in the
 * database, so the nodes of a cluster share it.
 */
export const MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS = 5

/**
 * Requests per address per window to each route of an open channel (post, read, close). A linking
 * device reads about twice a minute (PROVISIONING_POLL_WAIT_MS) and posts a few times; this bounds
 * what a client that loops on a channel costs.
 */
export const PROVISIONING_RATE_LIMIT = { max: 120, timeWindowMs: MINUTE }

/**
 * How often a waiting read checks the database for a message posted through another node of a
 * cluster (a post on the same node wakes it at once), and whether the channel closed or expired.
 * The bus is not needed for it; a message reaches the other device within about this long.
 */
export const PROVISIONING_POLL_INTERVAL_MS = SECOND

/**
 * Largest body of the existing device's post: the largest sealed provisioning message as base64url
 * (349,564 characters) and room for the JSON around it. Above HTTP_BODY_LIMIT_BYTES, on this one
 * route, whose session token is checked before the body is read.
 */
export const PROVISIONING_BODY_LIMIT_BYTES = base64UrlLength(MAX_PROVISIONING_SEALED_BYTES) + 1024
