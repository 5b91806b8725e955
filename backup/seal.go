package backup

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/vdisk-project/vdisk/disk"
)

// chunkID names a chunk's content. In a repository of format 2 it is
// HMAC-SHA256(idKey, T) when the repository is encrypted and SHA-256(T)
// when not, where T is "VDID" ‖ u64 len(data) ‖ one 32-byte leaf per 64
// KiB block of data (the last one may be shorter): SHA-256 of the block,
// or 32 zero bytes for a block of zeros. Zero blocks thus cost a memory
// scan, not a hash. In format 1 it is HMAC-SHA256(idKey, data) or
// SHA-256(data).
type chunkID [32]byte

// idLeaf is the block size of format 2 chunk IDs.
const idLeaf = 64 << 10

// Reserved map entries. A real ID equals one of them with probability 2^-255.
var (
	holeID = chunkID{}
	zeroID = chunkID{0: 1}
)

func (id chunkID) String() string { return fmt.Sprintf("%x", id[:]) }

// Sizes of the sealing overhead.
const (
	nonceSize  = 12
	tagSize    = 16
	plainSum   = 16 // truncated SHA-256 of plain metadata objects
	flagRaw    = 0  // sealed chunk body is the raw chunk
	flagZstd   = 1  // sealed chunk body is a zstd frame
	maxMetaRaw = 1 << 30
)

// crypter seals and opens objects for one repository. It is safe for
// concurrent use.
type crypter struct {
	aead   cipher.AEAD // nil when unencrypted
	encKey []byte      // nil when unencrypted
	idKey  []byte      // nil when unencrypted
	hmacs  sync.Pool   // of hash.Hash keyed with idKey
	tree   bool        // format 2 IDs

	enc     *zstd.Encoder
	meta    *zstd.Decoder // bounded by maxMetaRaw
	chunks  *zstd.Decoder // bounded by the destination's capacity
	chunkSz int
}

func newCrypter(encKey, idKey []byte, chunkSize int, tree bool) (*crypter, error) {
	c := &crypter{chunkSz: chunkSize, tree: tree}
	if encKey != nil {
		b, err := aes.NewCipher(encKey)
		if err != nil {
			return nil, disk.Errorf(disk.ErrCorrupt, "backup: master key: %w", err)
		}
		c.aead, err = cipher.NewGCM(b)
		if err != nil {
			return nil, disk.Errorf(disk.ErrCorrupt, "backup: master key: %w", err)
		}
		c.encKey = append([]byte(nil), encKey...)
		c.idKey = append([]byte(nil), idKey...)
		c.hmacs.New = func() any { return hmac.New(sha256.New, c.idKey) }
	}
	var err error
	c.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		// The AEAD or the chunk ID already checks what a frame decodes to.
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("backup: zstd: %w", err)
	}
	c.meta, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxMetaRaw), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, fmt.Errorf("backup: zstd: %w", err)
	}
	c.chunks, err = zstd.NewReader(nil, zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderMaxMemory(maxChunkSize), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, fmt.Errorf("backup: zstd: %w", err)
	}
	return c, nil
}

func (c *crypter) close() {
	c.enc.Close()
	c.meta.Close()
	c.chunks.Close()
}

func (c *crypter) encrypted() bool { return c.aead != nil }

// id returns the chunk ID of data.
func (c *crypter) id(data []byte) chunkID { return c.idKnown(data, nil) }

// idKnown returns the chunk ID of data. When known is not nil, the caller
// guarantees that data is zero outside those sorted spans, so that (in
// format 2) blocks outside them are not even scanned.
func (c *crypter) idKnown(data []byte, known []span) chunkID {
	if !c.tree {
		return c.sum(data)
	}
	n := (len(data) + idLeaf - 1) / idLeaf
	var stack [4 + 8 + 64*32]byte // enough for 4 MiB chunks
	t := stack[:0]
	if need := 12 + n*32; need > len(stack) {
		t = make([]byte, 0, need)
	}
	t = append(t, "VDID"...)
	t = binary.LittleEndian.AppendUint64(t, uint64(len(data)))
	for k := range n {
		lo, hi := k*idLeaf, min((k+1)*idLeaf, len(data))
		blk := data[lo:hi]
		if known != nil {
			for len(known) > 0 && known[0].end <= int64(lo) {
				known = known[1:]
			}
			if len(known) == 0 || known[0].off >= int64(hi) {
				t = append(t, make([]byte, 32)...)
				continue
			}
		}
		if disk.IsZero(blk) {
			t = append(t, make([]byte, 32)...)
			continue
		}
		leaf := sha256.Sum256(blk)
		t = append(t, leaf[:]...)
	}
	return c.sum(t)
}

// sum is the keyed (encrypted repository) or plain hash of b.
func (c *crypter) sum(b []byte) chunkID {
	var id chunkID
	if c.aead == nil {
		return sha256.Sum256(b)
	}
	h := c.hmacs.Get().(hash.Hash)
	h.Reset()
	h.Write(b)
	h.Sum(id[:0])
	c.hmacs.Put(h)
	return id
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("backup: crypto/rand failed: " + err.Error()) // never happens: crypto/rand does not fail
	}
	return b
}

// sealMeta compresses and seals a metadata payload of the given kind.
func (c *crypter) sealMeta(kind string, payload []byte) []byte {
	z := c.enc.EncodeAll(payload, nil)
	if c.aead == nil {
		sum := sha256.Sum256(append([]byte(kind), z...))
		return append(z, sum[:plainSum]...)
	}
	out := make([]byte, nonceSize, nonceSize+len(z)+tagSize)
	copy(out, randomBytes(nonceSize))
	return c.aead.Seal(out, out[:nonceSize], z, []byte(kind))
}

// openMeta opens a sealed metadata object named name.
func (c *crypter) openMeta(name, kind string, data []byte) ([]byte, error) {
	var z []byte
	if c.aead == nil {
		if len(data) < plainSum {
			return nil, corrupt(name, "object of %d bytes is too short", len(data))
		}
		z = data[:len(data)-plainSum]
		sum := sha256.Sum256(append([]byte(kind), z...))
		if !bytes.Equal(sum[:plainSum], data[len(data)-plainSum:]) {
			return nil, corrupt(name, "checksum mismatch")
		}
	} else {
		if len(data) < nonceSize+tagSize {
			return nil, corrupt(name, "object of %d bytes is too short", len(data))
		}
		var err error
		z, err = c.aead.Open(nil, data[:nonceSize], data[nonceSize:], []byte(kind))
		if err != nil {
			return nil, corrupt(name, "authentication failed (damaged or not a %s object)", kind)
		}
	}
	p, err := c.meta.DecodeAll(z, nil)
	if err != nil {
		return nil, corrupt(name, "decompress: %v", err)
	}
	return p, nil
}

// sealChunk compresses (when that shrinks it) and seals a chunk, appending
// to dst. It returns the sealed bytes and whether they are compressed.
//
// A chunk whose samples all look like random bytes (see looksRandom) is
// stored raw without trying the compressor; any other is compressed and
// still stored raw if that does not shrink it.
func (c *crypter) sealChunk(dst []byte, id chunkID, data []byte, zbuf []byte) ([]byte, []byte, bool) {
	body, flag := data, byte(flagRaw)
	zbuf = zbuf[:0]
	if !looksRandom(data) {
		zbuf = c.enc.EncodeAll(data, zbuf)
		if len(zbuf) < len(data) {
			body, flag = zbuf, flagZstd
		}
	}
	if c.aead == nil {
		dst = append(dst, flag)
		return append(dst, body...), zbuf, flag == flagZstd
	}
	start := len(dst)
	dst = append(dst, randomBytes(nonceSize)...)
	nonce := dst[start:]
	// Seal flag‖body: build the plaintext after the nonce, then seal in place.
	pt := append(dst, flag)
	pt = append(pt, body...)
	out := c.aead.Seal(dst[:start+nonceSize], nonce[:nonceSize], pt[start+nonceSize:], id[:])
	return out, zbuf, flag == flagZstd
}

// Random-data probe: probeSamples windows of probeWindow bytes, spread
// over the chunk. A window looks random when it holds at least
// probeDistinct distinct byte values and none more than probeMax times
// (uniform bytes: about 255.9 distinct values and a largest count near
// 17 in 2 KiB; text, code, tables and zeros are far from that).
const (
	probeSamples  = 16
	probeWindow   = 2048
	probeDistinct = 248
	probeMax      = 28
)

// looksRandom reports whether every probe window of data looks like
// random bytes (compressed or encrypted content), which zstd cannot
// shrink. Chunks under 64 KiB are never judged so.
func looksRandom(data []byte) bool {
	if len(data) < 64<<10 {
		return false
	}
	step := (len(data) - probeWindow) / (probeSamples - 1)
	var h [256]uint16
	for k := range probeSamples {
		clear(h[:])
		distinct, most := 0, uint16(0)
		for _, b := range data[k*step : k*step+probeWindow] {
			h[b]++
			if h[b] == 1 {
				distinct++
			}
			most = max(most, h[b])
		}
		if distinct < probeDistinct || most > probeMax {
			return false
		}
	}
	return true
}

// openChunk opens a sealed chunk into dst (whose capacity must be at least
// rawLen) and checks its length and ID. where names the chunk for errors.
//
// With fast set, an encrypted chunk's ID is not recomputed: its
// authentication already binds the content to the ID (the ID is the
// AEAD's additional data, and only a holder of the key seals), so what
// opens is what the writer sealed under that ID. Reads for restores and
// for points served as disks use it; verify --read-data and prune do not,
// so a writer that ever sealed a chunk under a wrong ID is still found.
func (c *crypter) openChunk(dst []byte, id chunkID, sealed []byte, rawLen int, where string, fast bool) ([]byte, error) {
	var pt []byte
	if c.aead == nil {
		pt = sealed
	} else {
		if len(sealed) < nonceSize+tagSize+1 {
			return nil, corrupt(where, "chunk %s: sealed length %d too short", id, len(sealed))
		}
		var err error
		pt, err = c.aead.Open(sealed[nonceSize:nonceSize], sealed[:nonceSize], sealed[nonceSize:], id[:])
		if err != nil {
			return nil, corrupt(where, "chunk %s: authentication failed", id)
		}
	}
	if len(pt) < 1 {
		return nil, corrupt(where, "chunk %s: empty", id)
	}
	if cap(dst) < rawLen {
		dst = make([]byte, 0, rawLen)
	}
	var out []byte
	switch pt[0] {
	case flagRaw:
		if len(pt)-1 != rawLen {
			return nil, corrupt(where, "chunk %s: length %d, want %d", id, len(pt)-1, rawLen)
		}
		out = append(dst[:0], pt[1:]...)
	case flagZstd:
		var err error
		out, err = c.chunks.DecodeAll(pt[1:], dst[:0:rawLen])
		if err != nil {
			return nil, corrupt(where, "chunk %s: decompress: %v", id, err)
		}
		if len(out) != rawLen {
			return nil, corrupt(where, "chunk %s: length %d, want %d", id, len(out), rawLen)
		}
	default:
		return nil, corrupt(where, "chunk %s: unknown flag %d", id, pt[0])
	}
	if (!fast || c.aead == nil) && c.id(out) != id {
		return nil, corrupt(where, "chunk %s: content does not match its ID", id)
	}
	return out, nil
}

// corrupt returns an ErrCorrupt error naming the object.
func corrupt(name, format string, args ...any) error {
	return &disk.Error{Op: "backup: read", Path: name, Off: -1, Code: disk.ErrCorrupt, Err: fmt.Errorf(format, args...)}
}
