package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// tokenLen is the length of session tokens and tickets: 32 random bytes in
// unpadded base64url.
const tokenLen = 43

// Defaults for [Options].
const (
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultSessionLifetime = 12 * time.Hour
	DefaultTicketTTL       = 5 * time.Minute
	DefaultMaxTicketTTL    = 24 * time.Hour
	DefaultMaxSessions     = 1024
	DefaultMaxUserSessions = 64 // per user
	DefaultAdminSessions   = 16 // of MaxSessions, kept for admins
	DefaultMaxTickets      = 64 // per session
)

// Options configures a [Manager]. Zero fields take the defaults above.
type Options struct {
	// IdleTimeout ends a session not used (Authenticate, Issue) for this long.
	IdleTimeout time.Duration
	// Lifetime ends a session this long after login, however busy.
	Lifetime time.Duration
	// MaxTicketTTL caps the ttl given to Issue.
	MaxTicketTTL time.Duration
	// MaxSessions caps live sessions on the host; Login beyond it is
	// disk.ErrBusy.
	MaxSessions int
	// MaxUserSessions caps live sessions of one user; Login beyond it is
	// disk.ErrBusy (the user's existing sessions are not touched). It
	// applies to admins too.
	MaxUserSessions int
	// AdminSessions is how many of MaxSessions are kept for users with the
	// Admin privilege: logins of other users are refused (disk.ErrBusy)
	// once MaxSessions-AdminSessions of their sessions are live, so
	// lower-privileged users can never fill the host up to the point where
	// an admin cannot log in. The default is DefaultAdminSessions, at most
	// a quarter of MaxSessions and at least 1; a value above MaxSessions is
	// MaxSessions (only admins may log in).
	AdminSessions int
	// MaxTickets caps live tickets per session; Issue beyond it is disk.ErrBusy.
	MaxTickets int
	// Throttle slows failed logins; see [ThrottleOptions].
	Throttle ThrottleOptions
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnEnd, if set, is called (without locks held) for each session that
	// ends by Logout, End, expiry (Cleanup, Authenticate, Login) or
	// EndUser (and so by ChangePassword, ResetPassword, SetRole and
	// RemoveUser), so the host can close its connections and release its
	// resources.
	OnEnd func(Session)
}

// Session is an authenticated login.
type Session struct {
	// ID identifies the session in logs and for revocation; it is not a
	// credential (the token is).
	ID         string
	User       string
	Role       Role
	Privileges Privilege
	Created    time.Time
	// Expires is when the session ends unless used again (the earlier of
	// last use + IdleTimeout and Created + Lifetime).
	Expires time.Time
}

// Can reports whether the session holds every privilege in p.
func (s Session) Can(p Privilege) bool { return s.Privileges.Has(p) }

type sessionState struct {
	Session
	lastUsed time.Time
	tickets  map[[32]byte]*ticketState
}

// Manager holds sessions and access tickets in memory. It is safe for
// concurrent use. Sessions and tickets do not survive a restart.
type Manager struct {
	store    *Store
	opts     Options
	throttle *throttle

	mu       sync.Mutex
	sessions map[[32]byte]*sessionState // by token hash
	byID     map[string][32]byte
	tickets  map[[32]byte]*ticketState // by ticket hash
	perUser  map[string]int            // live sessions by user name
	others   int                       // live sessions of non-admins
	// gen counts credential and role changes by user name, so that a
	// Login that verified the old password while the change was made
	// does not add a session after the change ended the others. Entries
	// are never deleted (a removed and re-added user must still differ);
	// there is at most one per user name ever changed.
	gen map[string]uint64

	// testHookAdmitted and testHookVerified, if set, run in Login after
	// the throttle admitted the attempt and after the password check.
	testHookAdmitted, testHookVerified func()
}

// NewManager returns a Manager authenticating users of store.
func NewManager(store *Store, opts *Options) *Manager {
	m := &Manager{store: store, sessions: map[[32]byte]*sessionState{}, byID: map[string][32]byte{}, tickets: map[[32]byte]*ticketState{},
		perUser: map[string]int{}, gen: map[string]uint64{}}
	if opts != nil {
		m.opts = *opts
	}
	o := &m.opts
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultSessionLifetime
	}
	if o.MaxTicketTTL <= 0 {
		o.MaxTicketTTL = DefaultMaxTicketTTL
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.MaxUserSessions <= 0 {
		o.MaxUserSessions = DefaultMaxUserSessions
	}
	if o.AdminSessions <= 0 {
		o.AdminSessions = max(1, min(DefaultAdminSessions, o.MaxSessions/4))
	}
	o.AdminSessions = min(o.AdminSessions, o.MaxSessions)
	if o.MaxTickets <= 0 {
		o.MaxTickets = DefaultMaxTickets
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m.throttle = newThrottle(o.Throttle, o.Now)
	o.Throttle = m.throttle.o
	return m
}

// newToken returns a random 43-character base64url token and its SHA-256.
func newToken() (string, [32]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [32]byte{}, disk.Errorf(disk.ErrAccess, "auth: random token: %w", err)
	}
	t := base64.RawURLEncoding.EncodeToString(b[:])
	if t[0] == '-' {
		// Never hand out a token a command line would take for a flag.
		return newToken()
	}
	return t, sha256.Sum256([]byte(t)), nil
}

// newID returns a random 16-hex-digit ID for a session or ticket: safe on
// any command line (never a leading '-').
func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", disk.Errorf(disk.ErrAccess, "auth: random ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// hashToken checks the shape of a presented token and hashes it. Only the
// hash is stored, so a memory dump does not reveal usable tokens.
func hashToken(t string) ([32]byte, bool) {
	if len(t) != tokenLen {
		return [32]byte{}, false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return [32]byte{}, false
		}
	}
	return sha256.Sum256([]byte(t)), true
}

// endedAt reports whether the session has expired at now. A session whose
// tickets carry live NBD connections is in use however long it makes no
// API call (a backup reads one disk for hours): its idle time starts when
// the last of them closes. Its Lifetime still ends it.
func (s *sessionState) endedAt(o *Options, now time.Time) bool {
	for _, t := range s.tickets {
		if t.conns > 0 {
			if now.After(s.lastUsed) {
				s.lastUsed = now
			}
			break
		}
	}
	return !now.Before(s.expires(o))
}

func (s *sessionState) expires(o *Options) time.Time {
	idle := s.lastUsed.Add(o.IdleTimeout)
	abs := s.Created.Add(o.Lifetime)
	if abs.Before(idle) {
		return abs
	}
	return idle
}

// CheckPassword verifies a user's password without opening a session (a
// user changing their own password proves they know the current one). It
// goes through the same bounds and failed-login throttle as Login.
func (m *Manager) CheckPassword(user, password, client string) error {
	if len(user) > maxName || len(password) > maxPassword {
		return disk.Errorf(disk.ErrInvalid, "auth: user name longer than %d bytes or password longer than %d", maxName, maxPassword)
	}
	done, err := m.throttle.begin(user, client)
	if err != nil {
		return err
	}
	_, err = m.store.Verify(user, password)
	done(err == nil)
	return err
}

// Login verifies the password (deliberately slow) and starts a session. It
// returns the bearer token, shown to the client once. client is the
// client's address (an IP, as net.SplitHostPort gives it from the peer
// address, never a header the client sets) or empty when unknown.
//
// A bad user name or password is disk.ErrPermission, the same for a user
// that does not exist. A name or password longer than any that can be set
// is disk.ErrInvalid, before any hashing. An attempt too soon after failed
// ones for the same user name or address is a *[ThrottledError]
// (disk.ErrBusy) saying when to retry; see [ThrottleOptions]. A session
// limit reached (host, per user, or the host's room for non-admins, see
// [Options]) is disk.ErrBusy and changes nothing: the user's existing
// sessions go on.
func (m *Manager) Login(user, password, client string) (string, Session, error) {
	if len(user) > maxName || len(password) > maxPassword {
		return "", Session{}, disk.Errorf(disk.ErrInvalid, "auth: user name longer than %d bytes or password longer than %d", maxName, maxPassword)
	}
	done, err := m.throttle.begin(user, client)
	if err != nil {
		return "", Session{}, err
	}
	if m.testHookAdmitted != nil {
		m.testHookAdmitted()
	}
	m.mu.Lock()
	gen := m.gen[user]
	m.mu.Unlock()
	u, err := m.store.Verify(user, password)
	done(err == nil)
	if err != nil {
		return "", Session{}, err
	}
	if m.testHookVerified != nil {
		m.testHookVerified()
	}
	tok, h, err := newToken()
	if err != nil {
		return "", Session{}, err
	}
	id, err := newID()
	if err != nil {
		return "", Session{}, err
	}
	now := m.opts.Now()
	st := &sessionState{Session: Session{ID: id, User: u.Name, Role: u.Role, Privileges: u.Role.Privileges(), Created: now}, lastUsed: now, tickets: map[[32]byte]*ticketState{}}
	st.Expires = st.expires(&m.opts)
	m.mu.Lock()
	if m.gen[user] != gen {
		m.mu.Unlock()
		return "", Session{}, disk.Errorf(disk.ErrBusy, "auth: the user's password or role changed during login; log in again")
	}
	err = m.roomLocked(st)
	var ended []Session
	if err != nil {
		// Expired sessions count until Cleanup; end them and look again.
		ended = m.expireLocked(now)
		err = m.roomLocked(st)
	}
	if err == nil {
		m.addLocked(h, st)
	}
	m.mu.Unlock()
	m.notify(ended)
	if err != nil {
		return "", Session{}, err
	}
	return tok, st.Session, nil
}

func isAdmin(st *sessionState) bool { return st.Privileges.Has(Admin) }

// roomLocked reports whether st may be added; m.mu must be held.
func (m *Manager) roomLocked(st *sessionState) error {
	o := &m.opts
	switch {
	case len(m.sessions) >= o.MaxSessions:
		return disk.Errorf(disk.ErrBusy, "auth: session limit of %d reached", o.MaxSessions)
	case !isAdmin(st) && m.others >= o.MaxSessions-o.AdminSessions:
		return disk.Errorf(disk.ErrBusy, "auth: session limit of %d for non-admin users reached (%d kept for admins)", o.MaxSessions-o.AdminSessions, o.AdminSessions)
	case m.perUser[st.User] >= o.MaxUserSessions:
		return disk.Errorf(disk.ErrBusy, "auth: user %q has the most sessions allowed (%d); log out of one or wait for one to expire", st.User, o.MaxUserSessions)
	}
	return nil
}

// addLocked adds a session; m.mu must be held.
func (m *Manager) addLocked(h [32]byte, st *sessionState) {
	m.sessions[h] = st
	m.byID[st.ID] = h
	m.perUser[st.User]++
	if !isAdmin(st) {
		m.others++
	}
}

// expireLocked ends the sessions expired at now; m.mu must be held.
func (m *Manager) expireLocked(now time.Time) []Session {
	var ended []Session
	for h, st := range m.sessions {
		if st.endedAt(&m.opts, now) {
			ended = append(ended, m.endLocked(h)...)
		}
	}
	return ended
}

// Authenticate returns the session for a bearer token and extends its idle
// expiry. An unknown, malformed or expired token is disk.ErrPermission.
func (m *Manager) Authenticate(token string) (Session, error) {
	h, ok := hashToken(token)
	if !ok {
		return Session{}, disk.Errorf(disk.ErrPermission, "auth: invalid session token")
	}
	now := m.opts.Now()
	m.mu.Lock()
	st, ok := m.sessions[h]
	if !ok {
		m.mu.Unlock()
		return Session{}, disk.Errorf(disk.ErrPermission, "auth: invalid session token")
	}
	if st.endedAt(&m.opts, now) {
		ended := m.endLocked(h)
		m.mu.Unlock()
		m.notify(ended)
		return Session{}, disk.Errorf(disk.ErrPermission, "auth: session expired")
	}
	st.lastUsed = now
	st.Expires = st.expires(&m.opts)
	s := st.Session
	m.mu.Unlock()
	return s, nil
}

// endLocked removes a session and its tickets; m.mu must be held.
func (m *Manager) endLocked(h [32]byte) []Session {
	st, ok := m.sessions[h]
	if !ok {
		return nil
	}
	for th, t := range st.tickets {
		t.revoked = true
		delete(m.tickets, th)
	}
	delete(m.sessions, h)
	delete(m.byID, st.ID)
	if m.perUser[st.User]--; m.perUser[st.User] <= 0 {
		delete(m.perUser, st.User)
	}
	if !isAdmin(st) {
		m.others--
	}
	return []Session{st.Session}
}

func (m *Manager) notify(ended []Session) {
	if m.opts.OnEnd == nil {
		return
	}
	for _, s := range ended {
		m.opts.OnEnd(s)
	}
}

// Logout ends the session of token and revokes its tickets. An unknown token
// is disk.ErrPermission.
func (m *Manager) Logout(token string) error {
	h, ok := hashToken(token)
	if !ok {
		return disk.Errorf(disk.ErrPermission, "auth: invalid session token")
	}
	m.mu.Lock()
	ended := m.endLocked(h)
	m.mu.Unlock()
	if ended == nil {
		return disk.Errorf(disk.ErrPermission, "auth: invalid session token")
	}
	m.notify(ended)
	return nil
}

// End ends the session with the given ID (an admin action, needing
// ManageAccess from the caller's session, which the host checks). Unknown
// is disk.ErrNotFound.
func (m *Manager) End(id string) error {
	m.mu.Lock()
	h, ok := m.byID[id]
	var ended []Session
	if ok {
		ended = m.endLocked(h)
	}
	m.mu.Unlock()
	if !ok {
		return disk.Errorf(disk.ErrNotFound, "auth: session %q not found", id)
	}
	m.notify(ended)
	return nil
}

// EndUser ends every session of user, revoking their tickets and calling
// Options.OnEnd for each, and returns how many ended. A Login of user in
// progress at the same time fails. [Manager.SetRole],
// [Manager.RemoveUser] and the password changes call it.
func (m *Manager) EndUser(user string) int { return m.endUser(user, "") }

// endUser ends user's sessions but the one with ID keep.
func (m *Manager) endUser(user, keep string) int {
	m.mu.Lock()
	m.gen[user]++
	var ended []Session
	for h, st := range m.sessions {
		if st.User == user && st.ID != keep {
			ended = append(ended, m.endLocked(h)...)
		}
	}
	m.mu.Unlock()
	m.notify(ended)
	return len(ended)
}

// ChangePassword sets the password of the user of session s (a user
// changing their own) and ends that user's other sessions with their
// tickets; s and its tickets go on. It returns how many sessions ended. A
// session that has ended is disk.ErrPermission; a password outside the
// policy is disk.ErrInvalid.
func (m *Manager) ChangePassword(s Session, password string) (int, error) {
	if err := checkPassword(password); err != nil {
		return 0, err
	}
	m.mu.Lock()
	_, ok := m.byID[s.ID]
	m.mu.Unlock()
	if !ok {
		return 0, disk.Errorf(disk.ErrPermission, "auth: session ended")
	}
	if err := m.store.SetPassword(s.User, password); err != nil {
		return 0, err
	}
	return m.endUser(s.User, s.ID), nil
}

// ResetPassword sets user's password (an admin action; the host checks
// the caller's privilege) and ends all of user's sessions with their
// tickets. It returns how many sessions ended. Errors are those of
// [Store.SetPassword].
func (m *Manager) ResetPassword(user, password string) (int, error) {
	if err := m.store.SetPassword(user, password); err != nil {
		return 0, err
	}
	return m.endUser(user, ""), nil
}

// SetRole changes user's role (an admin action) and ends all of user's
// sessions, so that the new role applies at once. Errors are those of
// [Store.SetRole].
func (m *Manager) SetRole(user string, role Role) (int, error) {
	if err := m.store.SetRole(user, role); err != nil {
		return 0, err
	}
	return m.endUser(user, ""), nil
}

// RemoveUser removes user (an admin action) and ends all of user's
// sessions. Errors are those of [Store.Remove].
func (m *Manager) RemoveUser(user string) (int, error) {
	if err := m.store.Remove(user); err != nil {
		return 0, err
	}
	return m.endUser(user, ""), nil
}

// Sessions lists the live sessions.
func (m *Manager) Sessions() []Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Session, 0, len(m.sessions))
	for _, st := range m.sessions {
		out = append(out, st.Session)
	}
	return out
}

// Cleanup ends expired sessions (revoking their tickets and calling OnEnd),
// drops expired tickets and forgets failed logins past their window. The host calls it periodically; correctness
// does not depend on it, since expiry is checked on every use. It returns
// the sessions it ended.
func (m *Manager) Cleanup() []Session {
	now := m.opts.Now()
	m.mu.Lock()
	ended := m.expireLocked(now)
	for h, t := range m.tickets {
		if !now.Before(t.Expires) && t.conns == 0 {
			m.dropTicketLocked(h, t)
		}
	}
	m.mu.Unlock()
	m.throttle.prune(now)
	m.notify(ended)
	return ended
}
