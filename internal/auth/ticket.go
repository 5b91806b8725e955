package auth

import (
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vdisk-project/vdisk/disk"
)

// Mode is the access a ticket grants.
type Mode uint8

// The ticket modes.
const (
	ReadOnly Mode = iota + 1
	ReadWrite
)

// String returns "ro" or "rw".
func (m Mode) String() string {
	switch m {
	case ReadOnly:
		return "ro"
	case ReadWrite:
		return "rw"
	}
	return "invalid"
}

// maxTarget bounds a target name in bytes.
const maxTarget = 1024

// TicketOptions configures one ticket. A nil *TicketOptions means defaults.
type TicketOptions struct {
	// MaxConns is how many connections may hold the ticket at once (NBD
	// multi-conn opens several with the same export name); 0 means 1.
	MaxConns int
	// MaxUses is how many times in total the ticket may be redeemed; 0 means
	// no limit before expiry, 1 makes it single-use.
	MaxUses int
}

// maxTicketConns bounds TicketOptions.MaxConns.
const maxTicketConns = 64

// Grant is what a redeemed ticket allows.
type Grant struct {
	// ID identifies the ticket for logs and revocation ([Manager.Revoke]); it
	// is not a credential.
	ID        string
	SessionID string
	User      string
	Target    string
	Mode      Mode
	Expires   time.Time
}

type ticketState struct {
	Grant
	hash     [32]byte
	session  [32]byte
	maxConns int
	maxUses  int
	uses     int
	conns    int
	revoked  bool
}

func checkTarget(t string) error {
	if t == "" || len(t) > maxTarget || !utf8.ValidString(t) {
		return disk.Errorf(disk.ErrInvalid, "auth: invalid ticket target")
	}
	for _, r := range t {
		if r < 0x20 || r == 0x7f {
			return disk.Errorf(disk.ErrInvalid, "auth: invalid ticket target")
		}
	}
	return nil
}

// Issue creates an access ticket for target (an opaque name the host
// defines, such as "vm/web01/scsi0:0", "disk/db" or "disk/db@snapshot-3")
// in the given mode, valid for ttl (0 means [DefaultTicketTTL], capped at
// Options.MaxTicketTTL and at the session's absolute lifetime). ReadOnly needs
// the Read privilege, ReadWrite needs Write; missing privileges, or a session
// that has ended, are disk.ErrPermission. Too many tickets on the session is
// disk.ErrBusy. The returned ticket is a 43-character base64url string, usable
// as an NBD export name; it is shown once and stored only hashed.
func (m *Manager) Issue(s Session, target string, mode Mode, ttl time.Duration, opts *TicketOptions) (string, Grant, error) {
	if err := checkTarget(target); err != nil {
		return "", Grant{}, err
	}
	var need Privilege
	switch mode {
	case ReadOnly:
		need = Read
	case ReadWrite:
		need = Write
	default:
		return "", Grant{}, disk.Errorf(disk.ErrInvalid, "auth: invalid ticket mode %d", mode)
	}
	var o TicketOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1
	}
	if o.MaxConns > maxTicketConns || o.MaxUses < 0 {
		return "", Grant{}, disk.Errorf(disk.ErrInvalid, "auth: ticket connection limit must be 1..%d", maxTicketConns)
	}
	if ttl <= 0 {
		ttl = DefaultTicketTTL
	}
	ttl = min(ttl, m.opts.MaxTicketTTL)
	tok, h, err := newToken()
	if err != nil {
		return "", Grant{}, err
	}
	id, err := newID()
	if err != nil {
		return "", Grant{}, err
	}
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	sh, ok := m.byID[s.ID]
	st := m.sessions[sh]
	if !ok || st == nil || st.endedAt(&m.opts, now) {
		return "", Grant{}, disk.Errorf(disk.ErrPermission, "auth: session ended")
	}
	if !st.Privileges.Has(need) {
		return "", Grant{}, disk.Errorf(disk.ErrPermission, "auth: user %q (role %s) may not open %s tickets", st.User, st.Role, mode)
	}
	if len(st.tickets) >= m.opts.MaxTickets {
		return "", Grant{}, disk.Errorf(disk.ErrBusy, "auth: session ticket limit of %d reached", m.opts.MaxTickets)
	}
	exp := now.Add(ttl)
	if abs := st.Created.Add(m.opts.Lifetime); abs.Before(exp) {
		exp = abs
	}
	st.lastUsed = now
	st.Expires = st.expires(&m.opts)
	t := &ticketState{
		Grant:    Grant{ID: id, SessionID: st.ID, User: st.User, Target: target, Mode: mode, Expires: exp},
		hash:     h,
		session:  sh,
		maxConns: o.MaxConns,
		maxUses:  o.MaxUses,
	}
	st.tickets[h] = t
	m.tickets[h] = t
	return tok, t.Grant, nil
}

// Redeem validates a ticket presented as an NBD export name. If wantTarget is
// not empty the ticket must name exactly that target. On success it returns
// the grant and a release func the caller must call once when the connection
// ends (it is safe to call more than once). An unknown, malformed, revoked or
// used-up ticket, an expired one ("ticket expired") or one for another target
// is disk.ErrPermission; a ticket already held by MaxConns connections is
// disk.ErrBusy. Redeem does no password hashing and is cheap.
func (m *Manager) Redeem(ticket, wantTarget string) (Grant, func(), error) {
	h, ok := hashToken(ticket)
	if !ok {
		return Grant{}, nil, disk.Errorf(disk.ErrPermission, "auth: invalid ticket")
	}
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tickets[h]
	if !ok || t.revoked {
		return Grant{}, nil, disk.Errorf(disk.ErrPermission, "auth: invalid ticket")
	}
	if !now.Before(t.Expires) {
		// Kept until Cleanup, so that every option of a handshake says
		// why (a client asks several times).
		return Grant{}, nil, disk.Errorf(disk.ErrPermission, "auth: ticket expired")
	}
	if wantTarget != "" && wantTarget != t.Target {
		return Grant{}, nil, disk.Errorf(disk.ErrPermission, "auth: ticket not valid for %q", wantTarget)
	}
	if t.maxUses > 0 && t.uses >= t.maxUses {
		return Grant{}, nil, disk.Errorf(disk.ErrPermission, "auth: ticket already used")
	}
	if t.conns >= t.maxConns {
		return Grant{}, nil, disk.Errorf(disk.ErrBusy, "auth: ticket connection limit of %d reached", t.maxConns)
	}
	t.uses++
	t.conns++
	if st := m.sessions[t.session]; st != nil && now.After(st.lastUsed) {
		st.lastUsed = now // a connection is a use of the session
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			m.mu.Lock()
			t.conns--
			if st := m.sessions[t.session]; st != nil {
				// Idle time starts when the connection ends.
				if now := m.opts.Now(); now.After(st.lastUsed) {
					st.lastUsed = now
				}
			}
			m.mu.Unlock()
		})
	}
	return t.Grant, release, nil
}

func (m *Manager) dropTicketLocked(h [32]byte, t *ticketState) {
	delete(m.tickets, h)
	if st := m.sessions[t.session]; st != nil {
		delete(st.tickets, h)
	}
}

// Revoke revokes the ticket with the given grant ID so it can no longer be
// redeemed. Connections already open stay open; the host closes them (it
// knows them by Grant.ID). Unknown is disk.ErrNotFound.
func (m *Manager) Revoke(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, t := range m.tickets {
		if t.ID == id {
			t.revoked = true
			m.dropTicketLocked(h, t)
			return nil
		}
	}
	return disk.Errorf(disk.ErrNotFound, "auth: ticket %q not found", id)
}

// RevokeSession revokes every ticket of the session with the given ID and
// returns their grant IDs, keeping the session itself. Unknown session is
// disk.ErrNotFound.
func (m *Manager) RevokeSession(sessionID string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sh, ok := m.byID[sessionID]
	if !ok {
		return nil, disk.Errorf(disk.ErrNotFound, "auth: session %q not found", sessionID)
	}
	var ids []string
	for h, t := range m.sessions[sh].tickets {
		t.revoked = true
		ids = append(ids, t.ID)
		m.dropTicketLocked(h, t)
	}
	return ids, nil
}

// Tickets lists the live grants of the session with the given ID.
func (m *Manager) Tickets(sessionID string) []Grant {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.sessions[m.byID[sessionID]]
	if st == nil {
		return nil
	}
	out := make([]Grant, 0, len(st.tickets))
	for _, t := range st.tickets {
		out = append(out, t.Grant)
	}
	return out
}
