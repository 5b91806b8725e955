package backup

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/scrypt"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// Chunk and pack size limits.
const (
	// DefaultChunkSize is the chunk size of a repository made with a zero
	// InitOptions.ChunkSize: 4 MiB.
	DefaultChunkSize = 4 << 20
	// MinChunkSize and MaxChunkSize bound InitOptions.ChunkSize, which must
	// be a power of two.
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
	// DefaultPackSize is the target size of a pack object: 16 MiB.
	DefaultPackSize = 16 << 20
	// MinPackSize and MaxPackSize bound InitOptions.PackSize.
	MinPackSize = 1 << 20
	MaxPackSize = 256 << 20

	maxChunkSize = MaxChunkSize
	// DefaultScryptN is the scrypt cost of new keys (r=8, p=1): about 32 MiB
	// of memory and a tenth of a second.
	DefaultScryptN = 1 << 15
	// formatVersion is the version of manifests, maps, checkpoints and
	// the other objects, unchanged since the first format.
	formatVersion = 1
	// configVersion is the repository format Init creates. Version 2
	// names chunks by a hash of their 64 KiB blocks' hashes (zero blocks
	// cost no hashing); version 1, still read and written, hashes the
	// whole chunk. See seal.go and docs/backup.md.
	configVersion = 2

	maxConfigSize = 64 << 10
	maxKeySize    = 64 << 10
	maxKeys       = 64
)

// Object name prefixes.
const (
	configName      = "config"
	keysPrefix      = "keys/"
	dataPrefix      = "data/"
	indexPrefix     = "index/"
	mapsPrefix      = "maps/"
	pointsPrefix    = "points/"
	checkPrefix     = "checkpoints/"
	condemnedPrefix = "condemned/"
)

// InitOptions configure a new repository.
type InitOptions struct {
	// ChunkSize is the fixed chunk size in bytes: a power of two from
	// MinChunkSize to MaxChunkSize. Zero means DefaultChunkSize.
	ChunkSize int
	// PackSize is the size pack objects are filled to, in bytes, from
	// MinPackSize to MaxPackSize. Zero means DefaultPackSize.
	PackSize int
	// Password wraps the repository's master key. It is required unless
	// Unencrypted is set.
	Password []byte
	// Unencrypted makes a repository whose chunks and metadata are
	// compressed and checksummed but not encrypted, and whose chunk IDs are
	// plain SHA-256.
	Unencrypted bool
	// ScryptN is the scrypt cost parameter (a power of two ≥ 1024) of the
	// key. Zero means DefaultScryptN. Tests use small values.
	ScryptN int

	// version is the format version to create; zero means configVersion.
	// Tests set 1 to make a repository of the earlier format.
	version int
}

// config is the plain JSON object "config".
type config struct {
	Version     int    `json:"version"`
	ID          string `json:"id"`
	ChunkSize   int    `json:"chunk_size"`
	PackSize    int    `json:"pack_size"`
	Encryption  string `json:"encryption"` // "aes-256-gcm" or "none"
	Compression string `json:"compression"`
}

// keyFile is the plain JSON object "keys/<name>".
type keyFile struct {
	KDF      string    `json:"kdf"`
	N        int       `json:"n"`
	R        int       `json:"r"`
	P        int       `json:"p"`
	Salt     []byte    `json:"salt"`
	Data     []byte    `json:"data"`
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
}

// masterKey is the plaintext wrapped in a key file.
type masterKey struct {
	Repository string `json:"repository"`
	EncKey     []byte `json:"enc_key"`
	IDKey      []byte `json:"id_key"`
}

const keyAAD = "vdisk-backup-key"

// Repository is an open backup repository. Its methods are safe for
// concurrent use; several Repository values, in one process or many, may use
// the same storage at once (see the package documentation).
type Repository struct {
	st  storage.Storage
	cfg config
	c   *crypter

	idx *index // chunk ID → location; grows with Backup and refresh

	keyMu sync.Mutex
	key   string // the key object that opened the repository; "" if unencrypted; guarded by keyMu
	keyN  int    // its scrypt cost, which new keys get too

	running sync.Map // IDs of the points of backups running in this process
}

// Init creates a repository in st and returns it open. A store that already
// holds a repository (a config object) is refused with an error matching
// disk.ErrInvalid.
func Init(ctx context.Context, st storage.Storage, opts InitOptions) (*Repository, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.ChunkSize < MinChunkSize || opts.ChunkSize > MaxChunkSize || opts.ChunkSize&(opts.ChunkSize-1) != 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: init: chunk size %d is not a power of two from %d to %d", opts.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if opts.PackSize == 0 {
		opts.PackSize = DefaultPackSize
	}
	if opts.PackSize < MinPackSize || opts.PackSize > MaxPackSize {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: init: pack size %d is outside %d…%d", opts.PackSize, MinPackSize, MaxPackSize)
	}
	if opts.ScryptN == 0 {
		opts.ScryptN = DefaultScryptN
	}
	if opts.ScryptN < 1024 || opts.ScryptN&(opts.ScryptN-1) != 0 || opts.ScryptN > 1<<22 {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: init: scrypt cost %d is not a power of two from 1024 to 2^22", opts.ScryptN)
	}
	if !opts.Unencrypted && len(opts.Password) == 0 {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: init: a password is required (or Unencrypted)")
	}
	if _, err := st.Stat(ctx, configName); err == nil {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: init: the store already holds a repository")
	} else if !errors.Is(err, disk.ErrNotFound) {
		return nil, fmt.Errorf("backup: init: %w", err)
	}
	if opts.version == 0 {
		opts.version = configVersion
	}
	cfg := config{
		Version: opts.version, ID: hex.EncodeToString(randomBytes(16)),
		ChunkSize: opts.ChunkSize, PackSize: opts.PackSize,
		Encryption: "aes-256-gcm", Compression: "zstd",
	}
	var encKey, idKey []byte
	var keyName string
	if opts.Unencrypted {
		cfg.Encryption = "none"
	} else {
		encKey, idKey = randomBytes(32), randomBytes(32)
		kf, err := wrapKey(masterKey{Repository: cfg.ID, EncKey: encKey, IDKey: idKey}, opts.Password, opts.ScryptN)
		if err != nil {
			return nil, err
		}
		// The key goes first: a config without a key is an unusable
		// repository, which a retried Init can replace; a key without a
		// config is not a repository at all.
		keyName = keysPrefix + hex.EncodeToString(randomBytes(16))
		if err := st.Put(ctx, keyName, kf); err != nil {
			return nil, fmt.Errorf("backup: init: write key: %w", err)
		}
	}
	b, _ := json.Marshal(cfg)
	if err := st.Put(ctx, configName, b); err != nil {
		return nil, fmt.Errorf("backup: init: write config: %w", err)
	}
	c, err := newCrypter(encKey, idKey, cfg.ChunkSize, cfg.Version >= 2)
	if err != nil {
		return nil, err
	}
	return &Repository{st: st, cfg: cfg, c: c, idx: newIndex(), key: keyName, keyN: opts.ScryptN}, nil
}

func wrapKey(mk masterKey, password []byte, n int) ([]byte, error) {
	salt := randomBytes(32)
	kek, err := scrypt.Key(password, salt, n, 8, 1, 32)
	if err != nil {
		return nil, disk.Errorf(disk.ErrInvalid, "backup: key derivation: %w", err)
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	pt, _ := json.Marshal(mk)
	nonce := randomBytes(nonceSize)
	host, _ := os.Hostname()
	kf := keyFile{KDF: "scrypt", N: n, R: 8, P: 1, Salt: salt,
		Data: aead.Seal(nonce, nonce, pt, []byte(keyAAD)), Created: time.Now().UTC(), Hostname: host}
	return json.Marshal(kf)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, disk.Errorf(disk.ErrCorrupt, "backup: key: %w", err)
	}
	return cipher.NewGCM(b)
}

// Open opens the repository in st. password unlocks an encrypted repository
// and is ignored by an unencrypted one. A password that opens none of the
// repository's keys gives an error matching disk.ErrPermission; a store
// without a repository gives disk.ErrNotFound; a damaged config or key
// gives disk.ErrCorrupt. Open loads the whole index (48 bytes of memory per
// stored chunk).
func Open(ctx context.Context, st storage.Storage, password []byte) (*Repository, error) {
	b, err := st.Get(ctx, configName, maxConfigSize)
	if err != nil {
		if errors.Is(err, disk.ErrNotFound) {
			return nil, &disk.Error{Op: "backup: open", Off: -1, Code: disk.ErrNotFound, Err: errors.New("no repository here (config missing)")}
		}
		return nil, fmt.Errorf("backup: open: %w", err)
	}
	var cfg config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, corrupt(configName, "%v", err)
	}
	if cfg.Version < 1 || cfg.Version > configVersion {
		return nil, &disk.Error{Op: "backup: open", Path: configName, Off: -1, Code: disk.ErrNotSupported, Err: fmt.Errorf("repository format version %d (this program reads 1 to %d)", cfg.Version, configVersion)}
	}
	if cfg.ChunkSize < MinChunkSize || cfg.ChunkSize > MaxChunkSize || cfg.ChunkSize&(cfg.ChunkSize-1) != 0 ||
		cfg.PackSize < MinPackSize || cfg.PackSize > MaxPackSize || cfg.Compression != "zstd" {
		return nil, corrupt(configName, "bad parameters (chunk size %d, pack size %d, compression %q)", cfg.ChunkSize, cfg.PackSize, cfg.Compression)
	}
	var encKey, idKey []byte
	var keyName string
	var keyN int
	switch cfg.Encryption {
	case "none":
	case "aes-256-gcm":
		mk, name, n, err := unlock(ctx, st, password)
		if err != nil {
			return nil, err
		}
		if mk.Repository != cfg.ID {
			return nil, corrupt(configName, "repository ID %s does not match the key's %s", cfg.ID, mk.Repository)
		}
		encKey, idKey, keyName, keyN = mk.EncKey, mk.IDKey, name, n
	default:
		return nil, &disk.Error{Op: "backup: open", Path: configName, Off: -1, Code: disk.ErrNotSupported, Err: fmt.Errorf("encryption %q", cfg.Encryption)}
	}
	c, err := newCrypter(encKey, idKey, cfg.ChunkSize, cfg.Version >= 2)
	if err != nil {
		return nil, err
	}
	r := &Repository{st: st, cfg: cfg, c: c, idx: newIndex(), key: keyName, keyN: keyN}
	if _, err := r.refresh(ctx); err != nil {
		c.close()
		return nil, err
	}
	return r, nil
}

// unlock finds the key object that password opens and returns the master
// key it wraps and the object's name.
func unlock(ctx context.Context, st storage.Storage, password []byte) (masterKey, string, int, error) {
	names, err := keyNames(ctx, st)
	if err != nil {
		return masterKey{}, "", 0, fmt.Errorf("backup: open: %w", err)
	}
	if len(names) == 0 {
		return masterKey{}, "", 0, corrupt(keysPrefix, "encrypted repository without keys")
	}
	var damaged error
	for _, name := range names {
		b, err := st.Get(ctx, name, maxKeySize)
		if err != nil {
			return masterKey{}, "", 0, fmt.Errorf("backup: open: %w", err)
		}
		kf, ok := parseKeyFile(b)
		if !ok {
			damaged = corrupt(name, "bad key object")
			continue
		}
		pt, err := unwrapKey(kf, password)
		if errors.Is(err, errOtherPassword) {
			continue
		}
		if err != nil {
			damaged = corrupt(name, "key derivation: %v", err)
			continue
		}
		mk, ok := parseMasterKey(pt)
		if !ok {
			return masterKey{}, "", 0, corrupt(name, "bad master key")
		}
		return mk, name, kf.N, nil
	}
	if damaged != nil && len(names) == 1 {
		return masterKey{}, "", 0, damaged
	}
	return masterKey{}, "", 0, &disk.Error{Op: "backup: open", Off: -1, Code: disk.ErrPermission, Err: errors.New("wrong password: no key of the repository opens with it")}
}

// ID returns the repository's ID (32 hex digits).
func (r *Repository) ID() string { return r.cfg.ID }

// ChunkSize returns the repository's chunk size in bytes.
func (r *Repository) ChunkSize() int { return r.cfg.ChunkSize }

// PackSize returns the size packs are filled to, in bytes.
func (r *Repository) PackSize() int { return r.cfg.PackSize }

// Encrypted reports whether the repository is encrypted.
func (r *Repository) Encrypted() bool { return r.c.encrypted() }

// Storage returns the store the repository lives in.
func (r *Repository) Storage() storage.Storage { return r.st }

// Close releases the repository's memory. It does not close the Storage.
// No other method may be called afterwards.
func (r *Repository) Close() error {
	r.c.close()
	return nil
}
