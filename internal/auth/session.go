package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	// MaxSessions caps live sessions; Login beyond it is disk.ErrBusy.
	MaxSessions int
	// MaxTickets caps live tickets per session; Issue beyond it is disk.ErrBusy.
	MaxTickets int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnEnd, if set, is called (without locks held) for each session that
	// ends by Logout, expiry (Cleanup) or EndUser, so the host can close its
	// connections and release its resources.
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
	store *Store
	opts  Options

	mu       sync.Mutex
	sessions map[[32]byte]*sessionState // by token hash
	byID     map[string][32]byte
	tickets  map[[32]byte]*ticketState // by ticket hash
}

// NewManager returns a Manager authenticating users of store.
func NewManager(store *Store, opts *Options) *Manager {
	m := &Manager{store: store, sessions: map[[32]byte]*sessionState{}, byID: map[string][32]byte{}, tickets: map[[32]byte]*ticketState{}}
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
	if o.MaxTickets <= 0 {
		o.MaxTickets = DefaultMaxTickets
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return m
}

// newToken returns a random 43-character base64url token and its SHA-256.
func newToken() (string, [32]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [32]byte{}, disk.Errorf(disk.ErrAccess, "auth: random token: %w", err)
	}
	t := base64.RawURLEncoding.EncodeToString(b[:])
	return t, sha256.Sum256([]byte(t)), nil
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

func (s *sessionState) expires(o *Options) time.Time {
	idle := s.lastUsed.Add(o.IdleTimeout)
	abs := s.Created.Add(o.Lifetime)
	if abs.Before(idle) {
		return abs
	}
	return idle
}

// Login verifies the password (deliberately slow) and starts a session. It
// returns the bearer token, shown to the client once. A bad user name or
// password is disk.ErrPermission; too many sessions is disk.ErrBusy.
func (m *Manager) Login(user, password string) (string, Session, error) {
	u, err := m.store.Verify(user, password)
	if err != nil {
		return "", Session{}, err
	}
	tok, h, err := newToken()
	if err != nil {
		return "", Session{}, err
	}
	id, _, err := newToken()
	if err != nil {
		return "", Session{}, err
	}
	id = id[:16]
	now := m.opts.Now()
	st := &sessionState{Session: Session{ID: id, User: u.Name, Role: u.Role, Privileges: u.Role.Privileges(), Created: now}, lastUsed: now, tickets: map[[32]byte]*ticketState{}}
	st.Expires = st.expires(&m.opts)
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sessions) >= m.opts.MaxSessions {
		return "", Session{}, disk.Errorf(disk.ErrBusy, "auth: session limit of %d reached", m.opts.MaxSessions)
	}
	m.sessions[h] = st
	m.byID[id] = h
	return tok, st.Session, nil
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
	if !now.Before(st.expires(&m.opts)) {
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

// EndUser ends every session of user (after Remove, SetRole or
// SetPassword) and returns how many ended.
func (m *Manager) EndUser(user string) int {
	m.mu.Lock()
	var ended []Session
	for h, st := range m.sessions {
		if st.User == user {
			ended = append(ended, m.endLocked(h)...)
		}
	}
	m.mu.Unlock()
	m.notify(ended)
	return len(ended)
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

// Cleanup ends expired sessions (revoking their tickets and calling OnEnd)
// and drops expired tickets. The host calls it periodically; correctness
// does not depend on it, since expiry is checked on every use. It returns
// the sessions it ended.
func (m *Manager) Cleanup() []Session {
	now := m.opts.Now()
	m.mu.Lock()
	var ended []Session
	for h, st := range m.sessions {
		if !now.Before(st.expires(&m.opts)) {
			ended = append(ended, m.endLocked(h)...)
		}
	}
	for h, t := range m.tickets {
		if !now.Before(t.Expires) && t.conns == 0 {
			m.dropTicketLocked(h, t)
		}
	}
	m.mu.Unlock()
	m.notify(ended)
	return ended
}
