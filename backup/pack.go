package backup

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

const (
	packMagic      = "VDPK"
	trailerMagic   = "VDPI"
	packFooterSize = 8
	maxTrailer     = 64 << 20
	maxPackObject  = 1 << 30
)

// encodeTrailer encodes a pack's trailer payload.
func encodeTrailer(es []packEntry) []byte {
	b := make([]byte, 0, 9+len(es)*packEntrySize)
	b = append(b, trailerMagic...)
	b = append(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(es)))
	for _, e := range es {
		b = putPackEntry(b, e)
	}
	return b
}

// decodeTrailer decodes a trailer payload of a pack whose blobs occupy the
// first dataLen bytes.
func decodeTrailer(name string, b []byte, dataLen int64) ([]packEntry, error) {
	if len(b) < 9 || string(b[:4]) != trailerMagic {
		return nil, corrupt(name, "bad pack trailer magic")
	}
	if b[4] != 1 {
		return nil, corrupt(name, "pack trailer version %d", b[4])
	}
	n := binary.LittleEndian.Uint32(b[5:])
	b = b[9:]
	if uint64(n)*packEntrySize != uint64(len(b)) {
		return nil, corrupt(name, "pack trailer of %d bytes cannot hold %d entries", len(b), n)
	}
	es := make([]packEntry, n)
	for i := range es {
		e := getPackEntry(b[i*packEntrySize:])
		if int64(e.off)+int64(e.length) > dataLen || e.rawLen > maxChunkSize {
			return nil, corrupt(name, "pack entry %d (%d+%d, raw %d) outside the pack's %d data bytes", i, e.off, e.length, e.rawLen, dataLen)
		}
		es[i] = e
	}
	return es, nil
}

// finishPack appends the trailer and footer to a pack's blobs.
func (c *crypter) finishPack(buf []byte, es []packEntry) []byte {
	t := c.sealMeta("pack", encodeTrailer(es))
	buf = append(buf, t...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(t)))
	return append(buf, packMagic...)
}

// readTrailer reads the trailer of the pack object name of size bytes.
func (r *Repository) readTrailer(ctx context.Context, name string, size int64) ([]packEntry, error) {
	if size < packFooterSize {
		return nil, corrupt(name, "pack of %d bytes is too short", size)
	}
	var foot [packFooterSize]byte
	if _, err := r.st.ReadAt(ctx, name, foot[:], size-packFooterSize); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, corrupt(name, "pack truncated")
		}
		return nil, fmt.Errorf("backup: read %s: %w", name, err)
	}
	if string(foot[4:]) != packMagic {
		return nil, corrupt(name, "bad pack magic (truncated pack?)")
	}
	tl := int64(binary.LittleEndian.Uint32(foot[:]))
	if tl > maxTrailer || tl > size-packFooterSize {
		return nil, corrupt(name, "pack trailer length %d in a pack of %d bytes", tl, size)
	}
	t := make([]byte, tl)
	if _, err := r.st.ReadAt(ctx, name, t, size-packFooterSize-tl); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, corrupt(name, "pack truncated")
		}
		return nil, fmt.Errorf("backup: read %s: %w", name, err)
	}
	p, err := r.c.openMeta(name, "pack", t)
	if err != nil {
		return nil, err
	}
	return decodeTrailer(name, p, size-packFooterSize-tl)
}

// readBlob reads and opens one chunk into dst (see openChunk), using
// scratch for the sealed bytes when it is large enough.
func (r *Repository) readBlob(ctx context.Context, p packName, ref blobRef, id chunkID, dst, scratch []byte) ([]byte, error) {
	name := p.object()
	if int(ref.rawLen) > r.cfg.ChunkSize || int(ref.length) > r.cfg.ChunkSize+64<<10 {
		return nil, corrupt(name, "index entry for chunk %s has length %d, raw %d", id, ref.length, ref.rawLen)
	}
	if cap(scratch) < int(ref.length) {
		scratch = make([]byte, ref.length)
	}
	sealed := scratch[:ref.length]
	if _, err := r.st.ReadAt(ctx, name, sealed, int64(ref.off)); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, corrupt(name, "pack truncated: chunk %s at %d+%d", id, ref.off, ref.length)
		}
		return nil, fmt.Errorf("backup: read %s: %w", name, err)
	}
	return r.c.openChunk(dst, id, sealed, int(ref.rawLen), name, true)
}

// condemnedList is the JSON payload of a condemned/ object.
type condemnedList struct {
	Time  time.Time `json:"time"`
	Packs []string  `json:"packs"`
}

// condemnedSet is every condemned list.
type condemnedSet struct {
	lists   map[string]condemnedList // object name → list
	packs   map[packName]time.Time   // pack → earliest condemnation
	damaged []string                 // lists that could not be read
}

func (r *Repository) decodeCondemned(name string, b []byte) (condemnedList, error) {
	var l condemnedList
	p, err := r.c.openMeta(name, "condemned", b)
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(p, &l); err != nil {
		return l, corrupt(name, "%v", err)
	}
	for _, s := range l.Packs {
		if _, ok := parsePackObject(dataPrefix + s[:min(2, len(s))] + "/" + s); !ok {
			return l, corrupt(name, "bad pack name %q", s)
		}
	}
	return l, nil
}

const maxCondemned = 64 << 20

func (r *Repository) loadCondemned(ctx context.Context) (condemnedSet, error) {
	cs := condemnedSet{lists: map[string]condemnedList{}, packs: map[packName]time.Time{}}
	var names []string
	if err := r.st.List(ctx, condemnedPrefix, func(in storage.Info) error {
		names = append(names, in.Name)
		return nil
	}); err != nil {
		return cs, fmt.Errorf("backup: list condemned packs: %w", err)
	}
	for _, name := range names {
		b, err := r.st.Get(ctx, name, maxCondemned)
		if errors.Is(err, disk.ErrNotFound) {
			continue
		}
		if err != nil {
			return cs, fmt.Errorf("backup: read %s: %w", name, err)
		}
		l, err := r.decodeCondemned(name, b)
		if err != nil {
			// Its packs are in no index; the next prune condemns them
			// afresh and deletes this list.
			cs.damaged = append(cs.damaged, name)
			continue
		}
		cs.lists[name] = l
		for _, s := range l.Packs {
			pn, _ := parsePackObject(dataPrefix + s[:2] + "/" + s)
			if t, ok := cs.packs[pn]; !ok || l.Time.Before(t) {
				cs.packs[pn] = l.Time
			}
		}
	}
	return cs, nil
}
