/**
 * Every limit the protocol enforces, in one place, each with the reason it exists. docs/protocol.md
 * repeats these numbers; a test keeps the two in step.
 */

/**
 * How many message keys one incoming message may make the receiver derive and skip, counting both
 * the rest of the previous receiving chain and the start of a new one. Bounds the CPU a single
 * forged header can cost (each skip is two HMACs). Olm uses 2,000; SimpleX 512; libsignal 25,000.
 * A real sender never runs this far ahead of a live peer.
 */
export const MAX_FORWARD_JUMP = 2_000

/**
 * How many skipped message keys a session keeps in total, oldest dropped first. Bounds session size
 * (each entry is 32 + 36 bytes) while leaving room for a long burst delivered out of order.
 */
export const MAX_SKIPPED_MESSAGE_KEYS = 2_000

/**
 * Earlier sessions kept per remote address beside the current one (libsignal's
 * ARCHIVED_STATES_MAX_LENGTH): a message sent on any of them still decrypts, so two people who
 * start sessions at the same moment, or a peer that starts over, lose nothing. Bounds the record's
 * size and the work a message for no session costs (one attempt per session).
 */
export const MAX_ARCHIVED_SESSIONS = 40

/** Largest plaintext a single ratchet message may carry (before padding). Attachments go elsewhere. */
export const MAX_PLAINTEXT_BYTES = 64 * 1024

/**
 * Plaintexts are padded to a multiple of this many bytes (ISO/IEC 7816-4: 0x80 then zeros) so that
 * ciphertext lengths reveal only a coarse size class. Signal uses 160.
 */
export const PADDING_BLOCK_BYTES = 160

/**
 * Largest encoded message envelope: the prekey message's 211-byte header, the largest padded
 * plaintext (MAX_PLAINTEXT_BYTES + 1 rounded up to a whole block: 65600) and the 16-byte tag.
 */
export const MAX_ENVELOPE_BYTES =
  211 + Math.ceil((MAX_PLAINTEXT_BYTES + 1) / PADDING_BLOCK_BYTES) * PADDING_BLOCK_BYTES + 16

/**
 * The most devices any server lets one account have (an operator chooses up to this many,
 * server/config.ts): the bound of every list of device ids on the wire (GET /devices, a
 * `send.devices` frame's envelopes, a `devices.mismatch` answer).
 */
export const MAX_DEVICES_LIMIT = 64

/**
 * Largest `send.devices` frame (docs/protocol.md §13.2): one envelope per device of the recipient
 * and one per other device of the sender. Eleven copies of the largest envelope (a recipient with
 * the default 6 devices, a sender with 6: MAX_ENVELOPE_BYTES is 87,770 base64url characters each)
 * fit in it with the JSON around them. A client whose copies would not fit says the message is
 * too long for this many devices rather than sending it; any other frame is bounded by the
 * server's much smaller limit for one envelope.
 */
export const MAX_DEVICE_SEND_FRAME_BYTES = 1024 * 1024

/** One-time prekeys a client uploads at once; also the most the server accepts in one request. */
export const ONE_TIME_PREKEY_BATCH = 100

/** When the server reports fewer one-time prekeys than this, the client uploads another batch. */
export const ONE_TIME_PREKEY_REFILL_THRESHOLD = 10

/**
 * Most one-time prekey ids GET /keys/one-time lists (its schema's maxItems). Servers keep fewer
 * (the reference server 500, server/limits.ts MAX_ONE_TIME_PREKEYS_PER_USER); a client never has
 * more than MAX_LOCAL_ONE_TIME_PREKEYS to upload.
 */
export const MAX_LISTED_ONE_TIME_PREKEY_IDS = 1_000

/**
 * One-time private keys a client keeps at most: those the server still holds plus those it handed
 * out that no message has used yet. A refill makes only as many as fit under it, so a drain that
 * gets past the server's per-target limit fills this and then stops costing the victim anything:
 * no more keys are made until handed-out ones expire (ONE_TIME_PREKEY_UNUSED_LIFETIME_MS) or are
 * used, and meanwhile new sessions start on the signed prekey alone. Ten batches: room for a full
 * server stock and many handed out.
 */
export const MAX_LOCAL_ONE_TIME_PREKEYS = 1_000

/**
 * How long a client keeps the private half of a one-time prekey that the server has handed out
 * (it no longer lists the id) but no prekey message has used, counted from when the client first
 * saw it gone. A peer's first message can arrive that late (the peer fetched the bundle and went
 * offline before sending; the message then waits in the server's queue, which keeps it 30 days),
 * and still decrypts. Longer keeps more keys of a drained account (bounded by
 * MAX_LOCAL_ONE_TIME_PREKEYS either way, but the cap then stops refills for longer); shorter makes
 * a late first message undecryptable, recovered only by a retry request (docs/protocol.md §8.6).
 * Thirty days, the server's message lifetime.
 */
export const ONE_TIME_PREKEY_UNUSED_LIFETIME_MS = 30 * 24 * 60 * 60 * 1000

/** Signed prekeys are replaced after this long (Signal-Desktop: about 1.5 days; we round to 2). */
export const SIGNED_PREKEY_ROTATION_MS = 2 * 24 * 60 * 60 * 1000

/** Iterations of SHA-512 per safety-number half (Signal's value; makes a collision search costly). */
export const SAFETY_NUMBER_ITERATIONS = 5_200

/** Usernames: 3–32 characters after NFKC normalisation and lower-casing. */
export const USERNAME_MIN_LENGTH = 3
/**
 * Characters of a username a directory search needs at least (after normalisation): a shorter
 * prefix would page through the whole directory a letter at a time.
 */
export const USER_SEARCH_MIN_LENGTH = 3
/**
 * Usernames one directory search answers at most (one page, in byte order): enough to find
 * someone by a few letters of their name, never a dump of the directory.
 */
export const USER_SEARCH_MAX_RESULTS = 50
/** Usernames one `presence.subscribe` or `presence.share` frame may carry. */
export const MAX_PRESENCE_NAMES_PER_FRAME = 500
export const USERNAME_MAX_LENGTH = 32

/** Passwords: OWASP ASVS 5 minimum; the maximum keeps bcrypt pre-hashing and requests bounded. */
export const PASSWORD_MIN_LENGTH = 12
export const PASSWORD_MAX_LENGTH = 256

/** Bytes in a client-chosen message id (random, so retries are idempotent without coordination). */
export const MESSAGE_ID_BYTES = 16

/**
 * Recovery from messages that cannot be decrypted (docs/protocol.md §8.6). A sender keeps the
 * content of what it sent, sealed, for this long, so that a recipient whose session broke can ask
 * for it again; Signal-Desktop keeps its send log for a day, we keep a week for people who are
 * offline for days. Older content is deleted and a retry for it is answered "unavailable".
 */
export const SENT_CONTENT_KEEP_MS = 7 * 24 * 60 * 60 * 1000
/** At most this many sent contents are kept (the oldest go first), so the log stays bounded. */
export const MAX_SENT_CONTENT_ENTRIES = 10_000
/** A message is sent again at most this many times, however often it is asked for. */
export const MAX_RESENDS_PER_MESSAGE = 2
/**
 * A client asks one peer to send again at most once per this interval; failures in between are
 * gathered into the next request. Each request starts a fresh session and so claims one of the
 * peer's one-time prekeys: this bounds how fast a broken session can drain them.
 */
export const RETRY_REQUEST_INTERVAL_MS = 60_000
/** Retry requests from one peer answered per hour; more are ignored (a loop or an abuse). */
export const MAX_RETRY_REQUESTS_ANSWERED_PER_HOUR = 20

/**
 * Largest provisioning message a device sends to one it links (provisioning.ts): the identity
 * keys, the account name, the contacts with their verification states (about 150 bytes each, so
 * some 1,500 of them) and a link token. The server's channel carries nothing larger; contacts
 * beyond it and the history travel afterwards, in chunks, over the new device's own sessions.
 */
export const MAX_PROVISIONING_PLAINTEXT_BYTES = 256 * 1024

/**
 * Most conversation history one device sends a device it links (docs/protocol.md §13.10), as
 * content bytes: the newest messages of every conversation up to this, the rest left out (and
 * counted). 4 MiB is some 20,000 short messages, and stays well inside the server's per-sender share
 * of a queue (8 MiB), so the new device's queue takes all of it while it is still offline.
 */
export const MAX_HISTORY_TRANSFER_BYTES = 4 * 1024 * 1024

/**
 * Most content bytes of one history part (one message to the new device): a chunk small enough that
 * a padded part stays a message like any other (MAX_PLAINTEXT_BYTES), large enough that a full
 * transfer is some 90 parts.
 */
export const HISTORY_PART_BYTES = 48 * 1024

/**
 * Sealed bytes one message of the new device to the existing device on a provisioning channel may
 * hold (docs/protocol.md §13.7): its name, sealed with the link's keys (provisioning.ts), and room
 * for a few more fields. The existing device's messages may be as large as
 * MAX_PROVISIONING_SEALED_BYTES; the new device has nothing large to say, so whoever holds a link
 * code cannot make the account's device fetch much.
 */
export const MAX_PROVISIONING_ANSWER_BYTES = 4096

/**
 * Messages one provisioning channel carries, both sides together. Linking takes three (the existing
 * device's ephemeral key, the new device's sealed name, the sealed provisioning message), which
 * leaves room for a resend or two: a channel is a handshake, not a mailbox.
 */
export const MAX_PROVISIONING_MESSAGES_PER_CHANNEL = 8

/**
 * Longest a read of a provisioning channel waits for a message before the server answers that
 * there is nothing new (a long poll: the client asks again). Below the clients' request timeout
 * (30 s, shared/client/transport.ts and the terminal's) and common proxies' idle timeouts (nginx:
 * 60 s), so the answer arrives before anyone on the way gives up; long enough that a waiting
 * device asks a couple of times a minute.
 */
export const PROVISIONING_POLL_WAIT_MS = 25_000

/**
 * Longest device name, in code points ("Work laptop", "Terminal on build box"): a line in a list of
 * devices. At most 256 bytes of UTF-8, which MAX_SEALED_DEVICE_NAME_BYTES holds sealed.
 */
export const MAX_DEVICE_NAME_LENGTH = 64

/**
 * Largest sealed device name the server stores (opaque to it: sealed by the account's devices).
 * A name of up to 64 characters of UTF-8 (at most 256 bytes) plus what sealing adds, with room.
 */
export const MAX_SEALED_DEVICE_NAME_BYTES = 384

/**
 * Group messages (sender keys, shared/group/sender-key.ts). How many message keys one group
 * message may make the receiver derive in a sender's chain (libsignal's MAX_FORWARD_JUMPS). Higher
 * than the pairwise MAX_FORWARD_JUMP: a receiver can be offline while a busy group runs far ahead,
 * and the sender's chain never resets (no reply ratchets it). The signature is checked before any
 * derivation, so only a member holding the chain's signing key can make anyone do this work, and
 * it costs at most 50,000 HMACs.
 */
export const MAX_SENDER_KEY_FORWARD_JUMP = 25_000

/**
 * Skipped message keys one sender-key state keeps (libsignal's MAX_MESSAGE_KEYS), oldest dropped
 * first: room for a burst of group messages delivered out of order, while a record stays bounded
 * (36 bytes each serialized).
 */
export const MAX_SENDER_KEY_SKIPPED_KEYS = 2_000

/**
 * Sender-key states one record (one sender device, one distribution id) keeps, newest first
 * (libsignal's MAX_SENDER_KEY_STATES): messages sent just before a rotation still decrypt after the
 * new key arrived; an older chain is dropped and its messages need the key again.
 */
export const MAX_SENDER_KEY_STATES = 5

/**
 * Largest group message: the 25-byte header, the largest padded plaintext (65600), the 16-byte tag
 * and the 64-byte signature.
 */
export const MAX_GROUP_MESSAGE_BYTES =
  25 + Math.ceil((MAX_PLAINTEXT_BYTES + 1) / PADDING_BLOCK_BYTES) * PADDING_BLOCK_BYTES + 16 + 64

/**
 * Largest serialized sender-key record (docs/protocol.md §19.5): its 18-byte head and
 * MAX_SENDER_KEY_STATES states, each at most 110 bytes of fields and MAX_SENDER_KEY_SKIPPED_KEYS
 * skipped keys of 36 bytes. Refused before parsing when larger.
 */
export const MAX_SENDER_KEY_RECORD_BYTES =
  18 + MAX_SENDER_KEY_STATES * (110 + MAX_SENDER_KEY_SKIPPED_KEYS * 36)
