package backup

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
	"golang.org/x/crypto/scrypt"
)

// KeyInfo describes one key object of an encrypted repository: one
// password's wrapping of the master key.
type KeyInfo struct {
	// ID is the key's name: 32 hex digits.
	ID string `json:"id"`
	// Created and Hostname are what the key object says about where it
	// was made (not authenticated: anyone who can write the store can
	// change them, but not the wrapped key).
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	// Current marks the key that opened this Repository.
	Current bool `json:"current"`
	// Damaged marks a key object that does not parse; it opens nothing
	// and may be removed.
	Damaged bool `json:"damaged,omitempty"`
}

// currentKey returns the name of the key object that opened r.
func (r *Repository) currentKey() string {
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	return r.key
}

// keyNames lists the repository's key objects, at most maxKeys of them
// (Open refuses more, so that a hostile store cannot make it run scrypt
// without end).
func keyNames(ctx context.Context, st storage.Storage) ([]string, error) {
	var names []string
	err := st.List(ctx, keysPrefix, func(in storage.Info) error {
		if len(names) >= maxKeys {
			return corrupt(keysPrefix, "more than %d keys", maxKeys)
		}
		names = append(names, in.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return names, nil
}

// errOtherPassword: a key object that another password wraps.
var errOtherPassword = errors.New("the password does not open this key")

// unwrapKey derives the key-encryption key from password and opens kf's
// wrapped master key, or fails with errOtherPassword.
func unwrapKey(kf keyFile, password []byte) ([]byte, error) {
	kek, err := scrypt.Key(password, kf.Salt, kf.N, kf.R, kf.P, 32)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, kf.Data[:nonceSize], kf.Data[nonceSize:], []byte(keyAAD))
	if err != nil {
		return nil, errOtherPassword
	}
	return pt, nil
}

// parseMasterKey decodes an unwrapped master key.
func parseMasterKey(pt []byte) (masterKey, bool) {
	var mk masterKey
	if err := json.Unmarshal(pt, &mk); err != nil || len(mk.EncKey) != 32 || len(mk.IDKey) != 32 {
		return masterKey{}, false
	}
	return mk, true
}

// parseKeyFile decodes a key object and checks its parameters, so that a
// hostile object cannot ask scrypt for unbounded memory or time.
func parseKeyFile(b []byte) (keyFile, bool) {
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil || kf.KDF != "scrypt" || kf.R != 8 || kf.P != 1 ||
		kf.N < 1024 || kf.N > 1<<22 || kf.N&(kf.N-1) != 0 || len(kf.Data) < nonceSize+tagSize {
		return keyFile{}, false
	}
	return kf, true
}

// Keys lists the repository's key objects, oldest first. An unencrypted
// repository has none.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	if !r.c.encrypted() {
		return nil, nil
	}
	names, err := keyNames(ctx, r.st)
	if err != nil {
		return nil, fmt.Errorf("backup: keys: %w", err)
	}
	current := r.currentKey()
	keys := make([]KeyInfo, 0, len(names))
	for _, name := range names {
		b, err := r.st.Get(ctx, name, maxKeySize)
		if errors.Is(err, disk.ErrNotFound) {
			continue // removed while we listed
		}
		if err != nil && !errors.Is(err, disk.ErrOutOfMemory) {
			return nil, fmt.Errorf("backup: keys: %w", err)
		}
		k := KeyInfo{ID: strings.TrimPrefix(name, keysPrefix), Current: name == current}
		if kf, ok := parseKeyFile(b); err == nil && ok {
			k.Created, k.Hostname = kf.Created, kf.Hostname
		} else {
			k.Damaged = true
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if !keys[i].Created.Equal(keys[j].Created) {
			return keys[i].Created.Before(keys[j].Created)
		}
		return keys[i].ID < keys[j].ID
	})
	return keys, nil
}

// AddKey adds a key object that opens the repository with password, next to
// the existing ones, and returns it. The new key gets the scrypt cost of
// the key that opened r. It fails with disk.ErrNotSupported on
// an unencrypted repository and with disk.ErrNoSpace when the repository
// already has the most keys Open accepts.
func (r *Repository) AddKey(ctx context.Context, password []byte) (KeyInfo, error) {
	if !r.c.encrypted() {
		return KeyInfo{}, disk.Errorf(disk.ErrNotSupported, "backup: add key: the repository is not encrypted")
	}
	if len(password) == 0 {
		return KeyInfo{}, disk.Errorf(disk.ErrInvalid, "backup: add key: empty password")
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	if len(keys) >= maxKeys {
		return KeyInfo{}, disk.Errorf(disk.ErrNoSpace, "backup: add key: the repository has %d keys, the most it may have; remove one first", len(keys))
	}
	return r.addKey(ctx, password)
}

func (r *Repository) addKey(ctx context.Context, password []byte) (KeyInfo, error) {
	kf, err := wrapKey(masterKey{Repository: r.cfg.ID, EncKey: r.c.encKey, IDKey: r.c.idKey}, password, max(r.keyN, 1024))
	if err != nil {
		return KeyInfo{}, err
	}
	id := hex.EncodeToString(randomBytes(16))
	if err := r.st.Put(ctx, keysPrefix+id, kf); err != nil {
		return KeyInfo{}, fmt.Errorf("backup: add key: %w", err)
	}
	// Read it back and open it, so that a key is never reported as added
	// (or, by ChangePassword, the old one removed) unless the store holds
	// one that this password opens.
	if err := r.checkKey(ctx, keysPrefix+id, password); err != nil {
		_ = r.st.Delete(ctx, keysPrefix+id)
		return KeyInfo{}, err
	}
	var k keyFile
	_ = json.Unmarshal(kf, &k)
	return KeyInfo{ID: id, Created: k.Created, Hostname: k.Hostname}, nil
}

// checkKey reports whether the key object name opens with password and
// wraps this repository's master key.
func (r *Repository) checkKey(ctx context.Context, name string, password []byte) error {
	b, err := r.st.Get(ctx, name, maxKeySize)
	if err != nil {
		return fmt.Errorf("backup: read back key: %w", err)
	}
	kf, ok := parseKeyFile(b)
	if !ok {
		return corrupt(name, "the key just written reads back damaged")
	}
	pt, err := unwrapKey(kf, password)
	if err != nil {
		return corrupt(name, "the key just written does not open with its password: %v", err)
	}
	mk, ok := parseMasterKey(pt)
	if !ok || mk.Repository != r.cfg.ID || string(mk.EncKey) != string(r.c.encKey) || string(mk.IDKey) != string(r.c.idKey) {
		return corrupt(name, "the key just written wraps another master key")
	}
	return nil
}

// resolveKey finds the key whose ID is id or starts with it.
func (r *Repository) resolveKey(ctx context.Context, id string) (KeyInfo, error) {
	if id == "" {
		return KeyInfo{}, disk.Errorf(disk.ErrInvalid, "backup: no key ID given")
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	var found []KeyInfo
	for _, k := range keys {
		if k.ID == id {
			return k, nil
		}
		if strings.HasPrefix(k.ID, id) {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return KeyInfo{}, &disk.Error{Op: "backup: key", Path: id, Off: -1, Code: disk.ErrNotFound, Err: errors.New("no such key")}
	case 1:
		return found[0], nil
	}
	return KeyInfo{}, disk.Errorf(disk.ErrInvalid, "backup: key ID %q is ambiguous: %d keys start with it", id, len(found))
}

// RemoveKey deletes the key object whose ID is id (or the only one whose ID
// starts with id), so that its password no longer opens the repository. It
// refuses, with disk.ErrInvalid, to remove the key that opened r: the
// repository always keeps a key its user has just proven to hold, and so
// never loses its last one. Use ChangePassword to replace that key.
//
// The master key does not change: whoever copied the key object and knows
// its password before it was removed can still decrypt the repository.
func (r *Repository) RemoveKey(ctx context.Context, id string) (KeyInfo, error) {
	if !r.c.encrypted() {
		return KeyInfo{}, disk.Errorf(disk.ErrNotSupported, "backup: remove key: the repository is not encrypted")
	}
	k, err := r.resolveKey(ctx, id)
	if err != nil {
		return KeyInfo{}, err
	}
	if k.Current {
		return KeyInfo{}, disk.Errorf(disk.ErrInvalid, "backup: remove key %s: it is the key this password opens; open the repository with another key's password to remove it, or change this password instead", k.ID)
	}
	if err := r.st.Delete(ctx, keysPrefix+k.ID); err != nil {
		return KeyInfo{}, fmt.Errorf("backup: remove key %s: %w", k.ID, err)
	}
	return k, nil
}

// ChangePassword replaces the key that opened r by one that opens with
// newPassword. The new key is written and read back before the old one is
// deleted, so a crash in between leaves both (either password opens the
// repository) and never neither. It returns the new key.
func (r *Repository) ChangePassword(ctx context.Context, newPassword []byte) (KeyInfo, error) {
	if !r.c.encrypted() {
		return KeyInfo{}, disk.Errorf(disk.ErrNotSupported, "backup: change password: the repository is not encrypted")
	}
	if len(newPassword) == 0 {
		return KeyInfo{}, disk.Errorf(disk.ErrInvalid, "backup: change password: empty password")
	}
	r.keyMu.Lock() // one change at a time: each replaces the key the previous one made
	defer r.keyMu.Unlock()
	k, err := r.addKey(ctx, newPassword)
	if err != nil {
		return KeyInfo{}, err
	}
	old := r.key
	if err := r.st.Delete(ctx, old); err != nil {
		return k, fmt.Errorf("backup: change password: the new key %s is in place, but the old key %s could not be removed: %w", k.ID, strings.TrimPrefix(old, keysPrefix), err)
	}
	r.key = keysPrefix + k.ID
	k.Current = true
	return k, nil
}
