// Package auth holds the security pieces of the vdisk host: users and their
// privileges, login sessions, access tickets, resource limits and TLS
// certificates.
//
// # Overview
//
// A [Store] keeps users (name, [Role], password hash) in a JSON file. A
// [Manager] verifies passwords at login, hands out session bearer tokens,
// and issues access tickets: short-lived, unguessable strings that a backup
// or restore client passes as the NBD export name to reach exactly one disk
// or snapshot in one mode. A [Limiter] counts connections and memory. The
// host (server package) wires them together; auth knows nothing of disks
// beyond the opaque target names the host gives it.
//
// # Privileges
//
// Each role is a fixed set of [Privilege] bits:
//
//	role       Read  Write  Snapshot  ManageAccess  Admin
//	read-only   x
//	backup      x           x
//	restore     x     x     x
//	admin       x     x     x         x             x
//
// What each privilege allows (the host enforces all but the ticket modes,
// which [Manager.Issue] checks itself):
//
//   - Read: list VMs, disks and snapshots; query changed areas; read-only
//     access tickets.
//   - Write: read-write access tickets (restore, writes to a disk).
//   - Snapshot: create and delete snapshots (a backup takes one).
//   - ManageAccess: list and end other users' sessions and revoke their
//     tickets ([Manager.End], [Manager.RevokeSession], [Manager.Revoke]).
//   - Admin: manage users and roles ([Store.Add], [Store.Remove],
//     [Store.SetRole], another user's [Store.SetPassword]) and host settings.
//
// Every user may change their own password and end their own session.
//
// # Sessions
//
// [Manager.Login] checks the password and returns a 256-bit random bearer
// token (43 base64url characters). Only its SHA-256 is kept. A session ends
// after Options.IdleTimeout without use or Options.Lifetime after login,
// whichever comes first, at [Manager.Logout], or at [Manager.End] or
// [Manager.EndUser]. Expiry is checked on every use; [Manager.Cleanup]
// only frees memory and fires Options.OnEnd, through which the host closes
// the session's connections and releases its [Limiter] reservations.
// Ending a session revokes all its tickets. Sessions live in memory only
// and do not survive a restart.
//
// A password change ends the user's other sessions: [Manager.ChangePassword]
// (a user changing their own) keeps the calling session,
// [Manager.ResetPassword] (an admin) ends them all. [Manager.SetRole] and
// [Manager.RemoveUser] end all the user's sessions too, so a new role
// applies at once. Each ended session revokes its tickets and fires
// Options.OnEnd. A login that checked the old password while the change
// was made fails rather than outliving it.
//
// Session limits: Options.MaxSessions on the host, Options.MaxUserSessions
// per user, and Options.AdminSessions of the host's sessions kept for users
// with the Admin privilege, so that no other user, however many sessions
// they open, keeps an admin from logging in. A login over a limit is
// refused with [disk.ErrBusy] (after the password check, so the refusal
// reveals nothing to who does not know the password); existing sessions
// are never ended to make room, since that would cut a running backup off.
//
// # Tickets
//
// [Manager.Issue] makes a ticket for one target (such as "vm/web01/scsi0:0",
// "disk/db" or "disk/db@snapshot-3") in [ReadOnly] mode (needs Read) or
// [ReadWrite] mode (needs Write). The ticket is 43 base64url characters,
// far below the 4096-byte NBD export name limit, safe in URLs and URIs. It
// is stored hashed. [Manager.Redeem] checks it on each NBD connection: it
// must exist, not be revoked, not be expired ("ticket expired"), name the
// wanted target, and have uses and connection slots left. All failures but
// the last are [disk.ErrPermission]; a full ticket is [disk.ErrBusy].
// TicketOptions.MaxConns allows NBD multi-conn (several connections with
// the same export name at once); TicketOptions.MaxUses = 1 makes a
// single-use ticket. Redeem returns a release func the host calls when the
// connection closes. Expiry only gates new connections; the host decides
// whether open connections outlive the ticket (they end with the session).
//
// # Limits
//
// A [Limiter] enforces [Limits]: connections per host, per disk and per
// session ([disk.ErrBusy], the message names the limit) and a memory budget
// per host and per session ([disk.ErrOutOfMemory]). A refusal changes no
// state, so the session stays usable and may retry. Every reservation
// returns an idempotent release func.
//
// # Certificates
//
// [SelfSigned] makes an ECDSA P-256 server certificate with SANs.
// [Thumbprint] is its SHA-256 as colon-separated uppercase hex, the way
// VMware shows thumbprints; [ParseThumbprint] accepts either case, with or
// without colons. [PinnedConfig] makes a client tls.Config that accepts
// only the pinned certificate.
//
// # Security notes
//
//   - Passwords are hashed with PBKDF2-HMAC-SHA256, a random 16-byte salt
//     and [DefaultIterations] iterations (standard library only; the hash
//     string names the scheme so argon2id can be added later). Comparison
//     is constant-time. An unknown user is checked against a dummy hash of
//     the same cost and gets the same error as a wrong password, so neither
//     the answer nor its timing reveals which names exist.
//   - Failed logins are slowed per user name and per client address (see
//     [ThrottleOptions]): past a few free failures each attempt waits,
//     the wait doubling up to a bound, so a lockout always ends. A waiting
//     attempt is refused with a *[ThrottledError] ([disk.ErrBusy], with
//     the time to wait) before any hashing, whether or not the user exists
//     and whether or not the password is right; names that do not exist
//     are tracked like those that do. Attempts in flight count, so
//     parallel guesses gain nothing. The tables are bounded
//     (ThrottleOptions.MaxTracked, least recently failed forgotten
//     first). An address a user logged in from recently is exempt from
//     that user's wait (not from its own), so guesses at the admin's
//     password from elsewhere do not lock the admin out.
//   - Names longer than 64 bytes and passwords longer than 1024 are
//     refused before any hashing, at login and wherever a password is
//     set.
//   - Tokens and tickets come from crypto/rand and are kept only as
//     SHA-256 hashes; a lookup by hash does not leak the secret by timing.
//   - The user file is written with mode 0600 through a temporary file,
//     fsync and rename, so a crash leaves the old or the new file. A file
//     that does not parse is [disk.ErrCorrupt] and is never overwritten.
//   - PinnedConfig (nbd.PinnedTLSConfig) sets InsecureSkipVerify only to
//     replace the CA check: its VerifyConnection compares the leaf's
//     SHA-256 with the pin on every handshake and fails it otherwise. There is no mode without
//     verification.
//   - Nothing here logs secrets; errors never contain passwords, tokens or
//     tickets.
//
// # Concurrency
//
// Store, Manager and Limiter are safe for concurrent use.
package auth
