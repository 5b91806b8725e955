package auth

import (
	"container/list"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
)

// Defaults for [ThrottleOptions].
const (
	DefaultUserFailures = 5
	DefaultAddrFailures = 20
	DefaultFailWindow   = 15 * time.Minute
	DefaultBaseDelay    = time.Second
	DefaultMaxDelay     = 5 * time.Minute
	DefaultMaxTracked   = 10000
	DefaultTrustFor     = 30 * 24 * time.Hour
)

// ThrottleOptions configures how [Manager.Login] slows failed logins. Zero
// fields take the defaults above.
//
// Failures are counted per user name (whether or not the user exists) and
// per client address (an IPv4 address, or the /64 an IPv6 address is in).
// The first UserFailures (AddrFailures) failures of a key within
// FailWindow cost nothing more; after them each attempt must wait
// BaseDelay, doubled with each further failure up to MaxDelay, so that a
// lockout always ends. Attempts refused for waiting are not checked and do
// not count, so they neither cost a password hash nor prolong the wait.
// Attempts in flight count as failures until they end, so many at once get
// no more through than one after the other.
type ThrottleOptions struct {
	// UserFailures is the failures of one user name let through before
	// attempts must wait; negative means no per-user limit.
	UserFailures int
	// AddrFailures is the same for one client address; negative means no
	// per-address limit.
	AddrFailures int
	// FailWindow is how long after its last failure (and the end of its
	// wait) a key's failures are forgotten.
	FailWindow time.Duration
	// BaseDelay is the first wait; each further failure doubles it.
	BaseDelay time.Duration
	// MaxDelay caps the wait.
	MaxDelay time.Duration
	// MaxTracked caps the user names and the addresses tracked (each),
	// and the trusted pairs below. When full, the least recently failed
	// entry is forgotten; filling the table costs an attacker one full
	// password hash per entry, far slower than entries age.
	MaxTracked int
	// TrustFor is how long a successful login of a user from an address
	// exempts that address from the user's wait, so that failures from
	// elsewhere (an attacker guessing the admin's password) do not lock
	// the user out where they usually log in from. The address's own
	// limit still applies. Negative disables it.
	TrustFor time.Duration
}

// ThrottledError is the refusal of a login attempt that came too soon
// after failed ones. It matches [disk.ErrBusy]. Its message is the same
// whether or not the user exists.
type ThrottledError struct {
	// RetryAfter is how long to wait before the next attempt.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("auth: too many failed logins; retry in %s", e.RetryAfter.Round(time.Second))
}

// Unwrap returns disk.ErrBusy.
func (e *ThrottledError) Unwrap() error { return disk.ErrBusy }

// Seconds is RetryAfter in whole seconds, rounded up, at least 1 (for an
// HTTP Retry-After header).
func (e *ThrottledError) Seconds() int {
	return max(1, int((e.RetryAfter+time.Second-1)/time.Second))
}

// throttle tracks failed logins; see ThrottleOptions.
type throttle struct {
	o   ThrottleOptions
	now func() time.Time

	mu      sync.Mutex
	users   table
	addrs   table
	trusted table // user+"\x00"+addr; last is the last success
}

// table is a bounded map with least-recently-touched eviction.
type table struct {
	free int // failures let through; <0 means the table is off
	max  int
	m    map[string]*list.Element // of *failEntry
	lru  list.List                // front is the most recent
}

type failEntry struct {
	key      string
	failures int
	inflight int
	last     time.Time // of the last failure (trusted: success)
	until    time.Time // attempts wait until then
}

func newThrottle(o ThrottleOptions, now func() time.Time) *throttle {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if o.UserFailures == 0 {
		o.UserFailures = DefaultUserFailures
	}
	if o.AddrFailures == 0 {
		o.AddrFailures = DefaultAddrFailures
	}
	def(&o.FailWindow, DefaultFailWindow)
	def(&o.BaseDelay, DefaultBaseDelay)
	def(&o.MaxDelay, DefaultMaxDelay)
	def(&o.TrustFor, DefaultTrustFor)
	if o.MaxTracked <= 0 {
		o.MaxTracked = DefaultMaxTracked
	}
	o.BaseDelay = max(o.BaseDelay, time.Millisecond)
	o.MaxDelay = max(o.MaxDelay, o.BaseDelay)
	t := &throttle{o: o, now: now}
	t.users = table{free: o.UserFailures, max: o.MaxTracked, m: map[string]*list.Element{}}
	t.addrs = table{free: o.AddrFailures, max: o.MaxTracked, m: map[string]*list.Element{}}
	t.trusted = table{max: o.MaxTracked, m: map[string]*list.Element{}}
	return t
}

// addrKey is the key of a client address: the IP without port or zone,
// and for IPv6 its /64, since one client commonly holds a whole /64.
// Anything else is kept as it is, cut to 64 bytes.
func addrKey(client string) string {
	a, err := netip.ParseAddr(client)
	if err != nil {
		ap, err := netip.ParseAddrPort(client)
		if err != nil {
			return client[:min(len(client), 64)]
		}
		a = ap.Addr()
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

func (tb *table) get(key string) *failEntry {
	if el, ok := tb.m[key]; ok {
		return el.Value.(*failEntry)
	}
	return nil
}

// add returns the entry for key, creating it (and evicting the least
// recently touched idle entry when full). It returns nil when the table is
// full of entries in flight.
func (tb *table) add(key string) *failEntry {
	if e := tb.get(key); e != nil {
		return e
	}
	if len(tb.m) >= tb.max {
		el := tb.lru.Back()
		for el != nil && el.Value.(*failEntry).inflight > 0 {
			el = el.Prev()
		}
		if el == nil {
			return nil
		}
		tb.remove(el.Value.(*failEntry))
	}
	e := &failEntry{key: key}
	tb.m[key] = tb.lru.PushFront(e)
	return e
}

func (tb *table) touch(e *failEntry) { tb.lru.MoveToFront(tb.m[e.key]) }

func (tb *table) remove(e *failEntry) {
	tb.lru.Remove(tb.m[e.key])
	delete(tb.m, e.key)
}

// forget resets an entry whose failures are older than the window.
func (t *throttle) forget(e *failEntry, now time.Time) {
	if e != nil && e.inflight == 0 && !now.Before(e.until) && now.Sub(e.last) >= t.o.FailWindow {
		e.failures, e.until = 0, time.Time{}
	}
}

// wait reports how long an attempt on e must wait (0: it may go now).
func (t *throttle) wait(tb *table, e *failEntry, now time.Time) time.Duration {
	if e == nil {
		return 0
	}
	if now.Before(e.until) {
		return e.until.Sub(now)
	}
	if e.failures+e.inflight < tb.free || e.inflight == 0 {
		return 0
	}
	// The free failures are used up and an attempt is in flight: one at
	// a time from here.
	return t.o.BaseDelay
}

// begin admits a login attempt of user from client (which may be empty)
// or refuses it with a *ThrottledError. An admitted attempt must call done
// once with whether the password was right.
func (t *throttle) begin(user, client string) (done func(ok bool), err error) {
	now := t.now()
	addr := ""
	if client != "" {
		addr = addrKey(client)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	useUser := t.users.free >= 0
	if addr != "" && t.o.TrustFor > 0 {
		if e := t.trusted.get(user + "\x00" + addr); e != nil {
			if now.Sub(e.last) < t.o.TrustFor {
				useUser = false
			} else {
				t.trusted.remove(e)
			}
		}
	}
	useAddr := addr != "" && t.addrs.free >= 0
	var ue, ae *failEntry
	if useUser {
		ue = t.users.get(user)
		t.forget(ue, now)
	}
	if useAddr {
		ae = t.addrs.get(addr)
		t.forget(ae, now)
	}
	if w := max(t.wait(&t.users, ue, now), t.wait(&t.addrs, ae, now)); w > 0 {
		return nil, &ThrottledError{RetryAfter: w}
	}
	if useUser {
		if ue = t.users.add(user); ue == nil {
			return nil, &ThrottledError{RetryAfter: t.o.BaseDelay}
		}
		ue.inflight++
	}
	if useAddr {
		if ae = t.addrs.add(addr); ae == nil {
			if ue != nil {
				t.cancel(&t.users, ue)
			}
			return nil, &ThrottledError{RetryAfter: t.o.BaseDelay}
		}
		ae.inflight++
	}
	var once sync.Once
	return func(ok bool) {
		once.Do(func() {
			now := t.now()
			t.mu.Lock()
			defer t.mu.Unlock()
			if ue != nil {
				t.end(&t.users, ue, ok, now)
			}
			if ae != nil {
				// A success does not clear the address's failures: an
				// attacker with one account could otherwise guess
				// others' passwords unslowed between its own logins.
				if ok {
					t.cancel(&t.addrs, ae)
				} else {
					t.end(&t.addrs, ae, false, now)
				}
			}
			if ok && addr != "" && t.o.TrustFor > 0 {
				if e := t.trusted.add(user + "\x00" + addr); e != nil {
					e.last = now
					t.trusted.touch(e)
				}
			}
		})
	}, nil
}

// cancel ends an attempt on e that neither failed nor clears failures.
func (t *throttle) cancel(tb *table, e *failEntry) {
	e.inflight--
	if e.failures == 0 && e.inflight == 0 {
		tb.remove(e)
	}
}

// end finishes an attempt on e: a success clears its failures, a failure
// counts and, past the free ones, sets the wait.
func (t *throttle) end(tb *table, e *failEntry, ok bool, now time.Time) {
	e.inflight--
	if ok {
		e.failures, e.until = 0, time.Time{}
		if e.inflight == 0 {
			tb.remove(e)
		}
		return
	}
	e.failures++
	e.last = now
	if n := e.failures - tb.free; n >= 0 {
		d := t.o.BaseDelay
		for ; n > 0 && d < t.o.MaxDelay; n-- {
			d *= 2
		}
		e.until = now.Add(min(d, t.o.MaxDelay))
	}
	tb.touch(e)
}

// prune forgets entries whose failures (or trust) have lapsed.
func (t *throttle) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tb := range []*table{&t.users, &t.addrs} {
		for _, el := range tb.m {
			e := el.Value.(*failEntry)
			t.forget(e, now)
			if e.failures == 0 && e.inflight == 0 {
				tb.remove(e)
			}
		}
	}
	for _, el := range t.trusted.m {
		if e := el.Value.(*failEntry); now.Sub(e.last) >= t.o.TrustFor {
			t.trusted.remove(e)
		}
	}
}

// tracked reports the entries held, for tests.
func (t *throttle) tracked() (users, addrs, trusted int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.users.m), len(t.addrs.m), len(t.trusted.m)
}
