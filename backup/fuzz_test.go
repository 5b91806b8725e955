package backup

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func seedMap() []byte {
	m := &chunkMap{size: 5*testChunk + 7, chunkSize: testChunk, ids: []chunkID{holeID, zeroID, {9: 9}, pendingID, {1: 1, 2: 2}, holeID}}
	return encodeMap(m)
}

func FuzzMap(f *testing.F) {
	f.Add(seedMap())
	f.Add(encodeMap(&chunkMap{chunkSize: MinChunkSize}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, pending := range []bool{false, true} {
			m, rest, err := decodeMap("fuzz", b, pending)
			if err != nil {
				continue
			}
			if int64(len(m.ids)) != chunksOf(m.size, m.chunkSize) {
				t.Fatalf("%d ids for %d bytes", len(m.ids), m.size)
			}
			enc := encodeMap(m)
			if !bytes.Equal(enc, b[:len(b)-len(rest)]) {
				t.Fatalf("map does not re-encode to its input")
			}
		}
	})
}

func FuzzPackIndex(f *testing.F) {
	es := []packEntry{{id: chunkID{3: 3}, blobRef: blobRef{0, 100, 200}}, {id: chunkID{4: 4}, blobRef: blobRef{100, 50, 65536}}}
	f.Add(encodeTrailer(es), int64(150))
	f.Add(encodeIndex(map[packName][]packEntry{{1: 1}: es, {2: 2}: es[:1]}), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, dataLen int64) {
		if es, err := decodeTrailer("fuzz", b, dataLen); err == nil {
			for _, e := range es {
				if int64(e.off)+int64(e.length) > dataLen {
					t.Fatalf("entry %+v outside %d bytes", e, dataLen)
				}
			}
			if !bytes.Equal(encodeTrailer(es), b) {
				t.Fatal("trailer does not re-encode to its input")
			}
		}
		n := 0
		_ = decodeIndex("fuzz", b, func(_ packName, es []packEntry) { n += len(es) })
		if n > maxIndexEntries {
			t.Fatalf("%d entries", n)
		}
	})
}

func FuzzManifest(f *testing.F) {
	id := "0123456789abcdef0123456789abcdef"
	p := manifest{Version: 1, Point: Point{ID: id, Time: time.Unix(1e9, 0).UTC(), Source: "vm", Tags: []string{"t"},
		Disks: []PointDisk{{Name: "d", Size: 1 << 30, ChunkSize: DefaultChunkSize, Map: mapsPrefix + id + ".0"}}}}
	b, _ := json.Marshal(p)
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, err := decodeManifest("", b)
		if err != nil {
			return
		}
		for _, d := range pt.Disks {
			if chunksOf(d.Size, d.ChunkSize) > maxChunks || d.Size < 0 {
				t.Fatalf("accepted disk %+v", d)
			}
		}
	})
}

func FuzzCheckpoint(f *testing.F) {
	h, _ := json.Marshal(checkpointHeader{Version: 1, Source: "s", Disks: []struct {
		Name     string `json:"name"`
		Size     int64  `json:"size"`
		ChangeID string `json:"change_id,omitempty"`
	}{{Name: "d", Size: 5*testChunk + 7}}})
	pl := append([]byte{byte(len(h)), byte(len(h) >> 8), 0, 0}, h...)
	f.Add(append(pl, seedMap()...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = decodeCheckpoint("fuzz", b)
	})
}
