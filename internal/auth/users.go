package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vdisk-project/vdisk/disk"
)

// maxUserFile bounds the user file read by [OpenStore].
const maxUserFile = 16 << 20

const maxUsers = 10000

// maxName bounds a user name in bytes.
const maxName = 64

// User is a user as listed by [Store.List]; it never carries the password hash.
type User struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

type userRecord struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	Hash string `json:"hash"`
}

type userFile struct {
	Version int          `json:"version"`
	Users   []userRecord `json:"users"`
}

// StoreOptions configures a [Store]. The zero value is the defaults.
type StoreOptions struct {
	// Iterations is the PBKDF2 iteration count for new hashes;
	// 0 means [DefaultIterations]. Tests lower it.
	Iterations int
}

// Store is the user database, persisted as a JSON file written atomically
// (temporary file, fsync, rename, fsync of the directory). It is safe for
// concurrent use. Only one Store should own a file at a time.
type Store struct {
	path  string
	iter  int
	dummy passwordHash // verified against for unknown users

	mu    sync.Mutex
	users map[string]userRecord

	hashes atomic.Int64 // key derivations done, for tests
}

// OpenStore opens the user file at path, or an empty store when the file does
// not exist (it is created by the first change). A file that does not parse is
// disk.ErrCorrupt and is left untouched.
func OpenStore(path string, opts *StoreOptions) (*Store, error) {
	s := &Store{path: path, iter: DefaultIterations, users: map[string]userRecord{}}
	if opts != nil && opts.Iterations > 0 {
		s.iter = opts.Iterations
	}
	d, err := hashPassword("vdisk-unknown-user-dummy", s.iter)
	if err != nil {
		return nil, err
	}
	s.dummy, _ = parseHash(d)
	// A symbolic link in place of the user file is refused: whoever could
	// plant it would choose the users.
	data, err := disk.ReadFileNoFollow(path, maxUserFile)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, disk.Wrap(err, "auth: open", path, -1)
	}
	users, err := parseUsers(data)
	if err != nil {
		return nil, disk.Wrap(err, "auth: load", path, -1)
	}
	s.users = users
	return s, nil
}

// parseUsers decodes and validates a user file. Every failure is
// disk.ErrCorrupt.
func parseUsers(data []byte) (map[string]userRecord, error) {
	if len(data) > maxUserFile {
		return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file larger than %d bytes", maxUserFile)
	}
	var uf userFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&uf); err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file: %w", err)
	}
	if dec.More() {
		return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file: trailing data")
	}
	if uf.Version != 1 {
		return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file version %d not supported", uf.Version)
	}
	if len(uf.Users) > maxUsers {
		return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file: more than %d users", maxUsers)
	}
	users := make(map[string]userRecord, len(uf.Users))
	for _, u := range uf.Users {
		if err := checkName(u.Name); err != nil {
			return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file: %w", err)
		}
		if !u.Role.Valid() {
			return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file: user %q: unknown role %q", u.Name, u.Role)
		}
		if _, err := parseHash(u.Hash); err != nil {
			return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file: user %q: %w", u.Name, err)
		}
		if _, dup := users[u.Name]; dup {
			return nil, disk.Errorf(disk.ErrCorrupt, "auth: user file: duplicate user %q", u.Name)
		}
		users[u.Name] = u
	}
	return users, nil
}

// checkName accepts 1..maxName bytes of [A-Za-z0-9._@-], not starting with '.' or '-'.
func checkName(name string) error {
	if len(name) > maxName {
		return disk.Errorf(disk.ErrInvalid, "auth: user name longer than %d bytes", maxName)
	}
	if len(name) == 0 || name[0] == '.' || name[0] == '-' {
		return disk.Errorf(disk.ErrInvalid, "auth: invalid user name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@'
		if !ok {
			return disk.Errorf(disk.ErrInvalid, "auth: invalid user name %q", name)
		}
	}
	return nil
}

// hash hashes a new password; the caller has checked it.
func (s *Store) hash(password string) (string, error) {
	s.hashes.Add(1)
	return hashPassword(password, s.iter)
}

// save writes the store atomically; s.mu must be held.
func (s *Store) save(users map[string]userRecord) error {
	uf := userFile{Version: 1}
	for _, u := range users {
		uf.Users = append(uf.Users, u)
	}
	slices.SortFunc(uf.Users, func(a, b userRecord) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	data, err := json.MarshalIndent(uf, "", "  ")
	if err != nil {
		return disk.Errorf(disk.ErrInvalid, "auth: encode users: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(s.path)+".tmp*")
	if err != nil {
		return disk.Wrap(err, "auth: save", s.path, -1)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return disk.Wrap(err, "auth: save", name, -1)
	}
	if _, err := tmp.Write(data); err != nil {
		return disk.Wrap(err, "auth: save", name, -1)
	}
	if err := tmp.Sync(); err != nil {
		return disk.Wrap(err, "auth: save", name, -1)
	}
	if err := tmp.Close(); err != nil {
		return disk.Wrap(err, "auth: save", name, -1)
	}
	if err := os.Rename(name, s.path); err != nil {
		return disk.Wrap(err, "auth: save", s.path, -1)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return disk.Wrap(err, "auth: sync dir", dir, -1)
		}
	}
	return nil
}

// update applies fn to a copy of the users and persists it; the in-memory
// state changes only if the write succeeds.
func (s *Store) update(fn func(users map[string]userRecord) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]userRecord, len(s.users)+1)
	for k, v := range s.users {
		next[k] = v
	}
	if err := fn(next); err != nil {
		return err
	}
	if err := s.save(next); err != nil {
		return err
	}
	s.users = next
	return nil
}

// Bootstrap creates the admin user name when the store has no users. With an
// empty password it generates a strong one and returns it (the caller shows it
// once; it is not stored anywhere in clear). It returns disk.ErrBusy when the
// store already has users.
func (s *Store) Bootstrap(name, password string) (string, error) {
	if password == "" {
		p, err := GeneratePassword()
		if err != nil {
			return "", err
		}
		password = p
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	if err := checkPassword(password); err != nil {
		return "", err
	}
	h, err := s.hash(password)
	if err != nil {
		return "", err
	}
	err = s.update(func(users map[string]userRecord) error {
		if len(users) > 0 {
			return disk.Errorf(disk.ErrBusy, "auth: bootstrap: users already exist")
		}
		users[name] = userRecord{Name: name, Role: RoleAdmin, Hash: h}
		return nil
	})
	if err != nil {
		return "", err
	}
	return password, nil
}

// Add creates a user. An existing name is disk.ErrBusy; a bad name, role or
// password (shorter than 12 bytes) is disk.ErrInvalid.
func (s *Store) Add(name string, role Role, password string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if !role.Valid() {
		return disk.Errorf(disk.ErrInvalid, "auth: unknown role %q", role)
	}
	if err := checkPassword(password); err != nil {
		return err
	}
	h, err := s.hash(password)
	if err != nil {
		return err
	}
	return s.update(func(users map[string]userRecord) error {
		if _, ok := users[name]; ok {
			return disk.Errorf(disk.ErrInvalid, "auth: user %q already exists", name)
		}
		users[name] = userRecord{Name: name, Role: role, Hash: h}
		return nil
	})
}

// Remove deletes a user; unknown is disk.ErrNotFound. Removing the last admin
// is disk.ErrInvalid. It does not touch sessions: [Manager.RemoveUser]
// removes the user and ends their sessions.
func (s *Store) Remove(name string) error {
	return s.update(func(users map[string]userRecord) error {
		u, ok := users[name]
		if !ok {
			return disk.Errorf(disk.ErrNotFound, "auth: user %q not found", name)
		}
		delete(users, name)
		if u.Role == RoleAdmin && !hasAdmin(users) {
			return disk.Errorf(disk.ErrInvalid, "auth: cannot remove the last admin")
		}
		return nil
	})
}

func hasAdmin(users map[string]userRecord) bool {
	for _, u := range users {
		if u.Role == RoleAdmin {
			return true
		}
	}
	return false
}

// SetRole changes a user's role; unknown user is disk.ErrNotFound, demoting
// the last admin disk.ErrInvalid. It does not touch sessions, which keep
// their privileges until they end: [Manager.SetRole] changes the role and
// ends them.
func (s *Store) SetRole(name string, role Role) error {
	if !role.Valid() {
		return disk.Errorf(disk.ErrInvalid, "auth: unknown role %q", role)
	}
	return s.update(func(users map[string]userRecord) error {
		u, ok := users[name]
		if !ok {
			return disk.Errorf(disk.ErrNotFound, "auth: user %q not found", name)
		}
		u.Role = role
		users[name] = u
		if !hasAdmin(users) {
			return disk.Errorf(disk.ErrInvalid, "auth: cannot demote the last admin")
		}
		return nil
	})
}

// SetPassword replaces a user's password; unknown user is disk.ErrNotFound,
// a password outside the policy disk.ErrInvalid. It does not touch
// sessions: [Manager.ChangePassword] and [Manager.ResetPassword] also end
// the user's other sessions.
func (s *Store) SetPassword(name, password string) error {
	if err := checkPassword(password); err != nil {
		return err
	}
	h, err := s.hash(password)
	if err != nil {
		return err
	}
	return s.update(func(users map[string]userRecord) error {
		u, ok := users[name]
		if !ok {
			return disk.Errorf(disk.ErrNotFound, "auth: user %q not found", name)
		}
		u.Hash = h
		users[name] = u
		return nil
	})
}

// List returns the users sorted by name.
func (s *Store) List() []User {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]User, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, User{Name: u.Name, Role: u.Role})
	}
	slices.SortFunc(out, func(a, b User) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Verify checks a user's password. A wrong password and an unknown user give
// the same disk.ErrPermission error after the same amount of work (the
// unknown user is verified against a dummy hash), so timing does not reveal
// which names exist.
func (s *Store) Verify(name, password string) (User, error) {
	s.mu.Lock()
	u, ok := s.users[name]
	s.mu.Unlock()
	h := s.dummy
	if ok {
		var err error
		if h, err = parseHash(u.Hash); err != nil {
			h, ok = s.dummy, false
		}
	}
	good := false
	if len(password) <= maxPassword {
		s.hashes.Add(1)
		good = h.verify(password)
	}
	if !ok || !good {
		return User{}, disk.Errorf(disk.ErrPermission, "auth: invalid user name or password")
	}
	return User{Name: u.Name, Role: u.Role}, nil
}
