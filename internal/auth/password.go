package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// DefaultIterations is the PBKDF2-HMAC-SHA256 iteration count for new
// password hashes (the OWASP 2023 recommendation).
const DefaultIterations = 600_000

const (
	hashScheme    = "pbkdf2-sha256"
	saltLen       = 16
	keyLen        = 32
	minIterations = 1_000     // below this a stored hash is rejected as corrupt
	maxIterations = 100000000 // bound on work a user file can ask for
	maxPassword   = 1024      // bytes; longer passwords are refused
)

// hashPassword returns "pbkdf2-sha256$<iter>$<salt>$<key>" with base64url
// (unpadded) salt and key.
func hashPassword(password string, iter int) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", disk.Errorf(disk.ErrAccess, "auth: random salt: %w", err)
	}
	key, err := pbkdf2.Key(sha256.New, password, salt, iter, keyLen)
	if err != nil {
		return "", disk.Errorf(disk.ErrInvalid, "auth: hash password: %w", err)
	}
	enc := base64.RawURLEncoding
	return fmt.Sprintf("%s$%d$%s$%s", hashScheme, iter, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

type passwordHash struct {
	iter      int
	salt, key []byte
}

// parseHash parses a stored hash; any malformation is disk.ErrCorrupt.
func parseHash(s string) (passwordHash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 4 || parts[0] != hashScheme {
		return passwordHash{}, disk.Errorf(disk.ErrCorrupt, "auth: unknown password hash scheme")
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < minIterations || iter > maxIterations {
		return passwordHash{}, disk.Errorf(disk.ErrCorrupt, "auth: bad password hash iteration count")
	}
	enc := base64.RawURLEncoding
	salt, err1 := enc.DecodeString(parts[2])
	key, err2 := enc.DecodeString(parts[3])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(salt) > 64 || len(key) != keyLen {
		return passwordHash{}, disk.Errorf(disk.ErrCorrupt, "auth: bad password hash encoding")
	}
	return passwordHash{iter: iter, salt: salt, key: key}, nil
}

// verify derives the key for password and compares it in constant time.
func (h passwordHash) verify(password string) bool {
	key, err := pbkdf2.Key(sha256.New, password, h.salt, h.iter, keyLen)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

// checkPassword enforces the password policy for new passwords.
func checkPassword(p string) error {
	if len(p) < 12 {
		return disk.Errorf(disk.ErrInvalid, "auth: password shorter than 12 bytes")
	}
	if len(p) > maxPassword {
		return disk.Errorf(disk.ErrInvalid, "auth: password longer than %d bytes", maxPassword)
	}
	return nil
}

// GeneratePassword returns a random password of 24 base64url characters
// (144 bits).
func GeneratePassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", disk.Errorf(disk.ErrAccess, "auth: random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
