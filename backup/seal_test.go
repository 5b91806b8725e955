package backup

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRandomProbe: chunks of random bytes are stored raw without trying
// the compressor; text, zeros, mixed chunks and random chunks with one
// compressible stretch go through it, and what shrinks is compressed.
func TestRandomProbe(t *testing.T) {
	c, err := newCrypter(bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 32), 4<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	rng := rand.New(rand.NewPCG(31, 32))
	random := make([]byte, 4<<20)
	fill(rng, random)
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog, 0123456789. "), (4<<20)/57+1)[:4<<20]
	mixed := bytes.Clone(random)
	copy(mixed[2200000:], text[:64<<10]) // one 64 KiB stretch of text, over a probe window
	// Random base64-like text: 6 bits of entropy per byte, no repeats.
	b64 := bytes.Clone(random)
	for i := range b64 {
		b64[i] = 'A' + b64[i]&63
	}
	for _, tc := range []struct {
		name       string
		data       []byte
		random     bool
		compressed bool
	}{
		{"random", random, true, false},
		{"random, short", random[:32<<10], false, false},
		{"text", text, false, true},
		{"zeros", make([]byte, 4<<20), false, true},
		{"random with text", mixed, false, true},
		// (zstd's fastest level finds no matches here and stores it raw.)
		{"base64", b64, false, false},
	} {
		if got := looksRandom(tc.data); got != tc.random {
			t.Errorf("%s: looksRandom %v", tc.name, got)
		}
		id := c.id(tc.data)
		sealed, _, compressed := c.sealChunk(nil, id, tc.data, nil)
		if compressed != tc.compressed {
			t.Errorf("%s: compressed %v", tc.name, compressed)
		}
		if compressed && len(sealed) >= len(tc.data) {
			t.Errorf("%s: compressed to %d bytes", tc.name, len(sealed))
		}
		got, err := c.openChunk(nil, id, sealed, len(tc.data), "test", false)
		if err != nil || !bytes.Equal(got, tc.data) {
			t.Errorf("%s: open: %v", tc.name, err)
		}
	}
}
