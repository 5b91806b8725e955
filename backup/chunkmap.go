package backup

import (
	"encoding/binary"
	"math/bits"
)

const (
	mapMagic  = "VDMP"
	mapHeader = 24
	// maxChunks bounds the chunks of one disk: 64 TiB at 4 MiB chunks.
	maxChunks = 1 << 24
	maxMapRaw = mapHeader + maxChunks*33

	kindHole    = 0
	kindZero    = 1
	kindData    = 2
	kindPending = 3 // checkpoints only: not done yet
)

// pendingID marks a map entry not yet known (checkpoints only).
var pendingID = chunkID{0: 2}

// chunkMap is one disk's map: an entry per chunk.
type chunkMap struct {
	size      int64
	chunkSize int64
	ids       []chunkID // holeID, zeroID, pendingID or a data ID
}

func chunksOf(size, chunkSize int64) int64 { return (size + chunkSize - 1) / chunkSize }

// chunkLen returns the length of chunk i.
func (m *chunkMap) chunkLen(i int64) int64 {
	return min(m.chunkSize, m.size-i*m.chunkSize)
}

func encodeMap(m *chunkMap) []byte {
	n := 0
	for _, id := range m.ids {
		n++
		if id != holeID && id != zeroID && id != pendingID {
			n += 32
		}
	}
	b := make([]byte, 0, mapHeader+n)
	b = append(b, mapMagic...)
	b = append(b, 1, byte(bits.TrailingZeros64(uint64(m.chunkSize))), 0, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(m.ids)))
	for _, id := range m.ids {
		switch id {
		case holeID:
			b = append(b, kindHole)
		case zeroID:
			b = append(b, kindZero)
		case pendingID:
			b = append(b, kindPending)
		default:
			b = append(b, kindData)
			b = append(b, id[:]...)
		}
	}
	return b
}

// decodeMap decodes a map at the start of b and returns the bytes after
// it. pending allows "not done" entries (checkpoints).
func decodeMap(name string, b []byte, pending bool) (*chunkMap, []byte, error) {
	if len(b) < mapHeader || string(b[:4]) != mapMagic {
		return nil, nil, corrupt(name, "bad chunk map magic")
	}
	if b[4] != 1 {
		return nil, nil, corrupt(name, "chunk map version %d", b[4])
	}
	shift := b[5]
	if shift < 16 || shift > 26 || b[6] != 0 || b[7] != 0 {
		return nil, nil, corrupt(name, "chunk size 2^%d", shift)
	}
	m := &chunkMap{chunkSize: 1 << shift}
	size := binary.LittleEndian.Uint64(b[8:])
	n := binary.LittleEndian.Uint64(b[16:])
	if size > 1<<62 || n != uint64(chunksOf(int64(size), m.chunkSize)) || n > maxChunks {
		return nil, nil, corrupt(name, "chunk map of %d chunks for a disk of %d bytes", n, size)
	}
	m.size = int64(size)
	b = b[mapHeader:]
	if uint64(len(b)) < n {
		return nil, nil, corrupt(name, "chunk map truncated")
	}
	m.ids = make([]chunkID, n)
	for i := range m.ids {
		if len(b) == 0 {
			return nil, nil, corrupt(name, "chunk map truncated at chunk %d", i)
		}
		k := b[0]
		b = b[1:]
		switch {
		case k == kindHole:
			m.ids[i] = holeID
		case k == kindZero:
			m.ids[i] = zeroID
		case k == kindPending && pending:
			m.ids[i] = pendingID
		case k == kindData:
			if len(b) < 32 {
				return nil, nil, corrupt(name, "chunk map truncated at chunk %d", i)
			}
			copy(m.ids[i][:], b)
			b = b[32:]
			if id := m.ids[i]; id == holeID || id == zeroID || id == pendingID {
				return nil, nil, corrupt(name, "chunk %d has a reserved ID", i)
			}
		default:
			return nil, nil, corrupt(name, "chunk %d has kind %d", i, k)
		}
	}
	return m, b, nil
}
